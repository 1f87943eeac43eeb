# SPDX-License-Identifier: BSD-3-Clause
# Copyright(c) 2019 Intel Corporation
#

"""
DPDK Test suite.

This suite capture regression issue:
cover 2 queues + reconnect + multi qemu version + multi-paths with virtio1.0 and virtio0.95
In this suite, the qemu will start as server mode, and qemu supports server mode starting with version 2.7

Can config the qemu version in config file like:
qemu =
    path=qemu-2.7/bin/qemu-system-x86_64;
    path=qemu-2.8/bin/qemu-system-x86_64;
"""
import re
import time

import pytest_dtsvirt.compat.utils as utils
from pytest_dtsvirt.compat import VM, TestCase
from pytest_dtsvirt.compat.pktgen import HostTester, PacketGeneratorHelper, TestpmdPktgen
from scapy.all import IP, Ether, wrpcap

HEADER_SIZE = {"eth": 18, "ip": 20}  # legacy framework.settings values


class TestVirtioPVPRegression(TestCase):
    def set_up_all(self):
        # Get and verify the ports
        self.dut_ports = self.dut.get_ports()
        # PORT(hw): no NIC on the host
        self.pf = 0
        self.number_of_ports = 1
        # Get the port's socket
        # PORT(hw): the NIC is a net_pcap port the tester's pktgen attaches to the vhost
        # testpmd (compat.pktgen); no PCI address, socket 0; the tester is this host
        self.pci_info = None
        self.socket = 0
        self.tester = HostTester(self.dut)
        # PORT(hw): this host has 2 CPUs: 2 lcores (1 forwarding) instead of 3
        self.cores = self.dut.get_core_list("1S/2C/1T", socket=self.socket)

        # PORT(hw): no NIC port to count (legacy verified len(self.dut_ports) >= 1)
        self.verify(
            len(self.cores) >= 2, "There has not enought cores to test this suite"
        )
        self.port_number = 2
        self.queues_number = 2
        # PORT(hw): no NIC MAC: testpmd's pcap port takes any (promiscuous, mac fwd)
        self.dst_mac = "52:54:00:00:00:02"
        self.vm_dut = None
        self.packet_params_set()

        self.logger.info(
            "You can config all the path of qemu version you want to"
            + " tested in the conf file %s.cfg" % self.suite_name
        )
        self.logger.info(
            "You can config packet_size in file %s.cfg," % self.suite_name
            + " in region 'suite' like packet_sizes=[64, 128, 256]"
        )
        # check the qemu version config in cfg file
        res = self.verify_qemu_version_config()
        self.verify(res is True, "The path of qemu version in config file not right")

        if len(set([int(core["socket"]) for core in self.dut.cores])) == 1:
            self.socket_mem = "1024"
        else:
            self.socket_mem = "1024,1024"

        # the path of pcap file
        # PORT(hw): the tester is this host: its files go to the DUT's private base_dir
        # (removed with it), not to a fixed path in the shared /tmp
        self.out_path = "%s/%s" % (self.dut.base_dir, self.suite_name)
        out = self.tester.send_expect("ls -d %s" % self.out_path, "# ")
        if "No such file or directory" in out:
            self.tester.send_expect("mkdir -p %s" % self.out_path, "# ")
        # create an instance to set stream field setting
        self.pktgen_helper = PacketGeneratorHelper()
        self.base_dir = self.dut.base_dir.replace("~", "/root")
        self.app_testpmd_path = self.dut.apps_name["test-pmd"]
        self.testpmd_name = self.app_testpmd_path.split("/")[-1]

    def set_up(self):
        """
        Run before each test case.
        """
        self.vhost = self.dut.new_session(suite="vhost-user")
        # PORT(hw): the tester's port is a net_pcap port of the vhost testpmd in this session
        self.tester.pktgen = TestpmdPktgen(self.vhost, queues=self.queues_number)
        self.dut.send_expect("rm -rf %s/vhost-net*" % self.base_dir, "#")

    def packet_params_set(self):
        self.frame_sizes = [64, 1518]
        # get the frame_sizes from cfg file
        if "packet_sizes" in self.get_suite_cfg():
            self.frame_sizes = self.get_suite_cfg()["packet_sizes"]

        self.virtio1_mac = "52:54:00:00:00:01"
        self.src1 = "192.168.4.1"
        self.header_row = [
            "case_info",
            "QemuVersion",
            "FrameSize(B)",
            "Throughput(Mpps)",
            "LineRate(%)",
            "Queue Number",
            "Cycle",
        ]

    def get_qemu_list_from_config(self):
        """
        get the config of qemu path in vm params
        """
        config_qemu = False
        params_num = len(self.vm.params)
        for qemu_index in range(params_num):
            if list(self.vm.params[qemu_index].keys())[0] == "qemu":
                qemu_num = len(self.vm.params[qemu_index]["qemu"])
                config_qemu = True
                break
        self.verify(
            config_qemu is True,
            "Please config qemu path which you want to test in conf file",
        )
        self.qemu_pos = qemu_index
        self.qemu_list = self.vm.params[qemu_index]["qemu"]

    def verify_qemu_version_config(self):
        """
        verify the config has config right qemu version
        """
        self.vm = VM(self.dut, "vm0", self.suite_name)
        self.vm.load_config()
        # get qemu version list from config file
        self.get_qemu_list_from_config()
        qemu_num = len(self.qemu_list)
        for i in range(qemu_num):
            qemu_path = self.qemu_list[i]["path"]

            out = self.dut.send_expect("ls %s" % qemu_path, "#")
            if "No such file or directory" in out:
                self.logger.error(
                    "No emulator [ %s ] on the DUT [ %s ]"
                    % (qemu_path, self.dut.get_ip_address())
                )
                return False
            out = self.dut.send_expect("[ -x %s ];echo $?" % qemu_path, "# ")
            if out != "0":
                self.logger.error(
                    "Emulator [ %s ] not executable on the DUT [ %s ]"
                    % (qemu_path, self.dut.get_ip_address())
                )
                return False

            out = self.dut.send_expect("%s --version" % qemu_path, "#")
            result = re.search("QEMU\s*emulator\s*version\s*(\d*.\d*)", out)
            version = result.group(1)

            # verify the qemu version is greater or equal to 2.7
            index = version.find(".")
            self.verify(
                int(version[:index]) > 2
                or (int(version[:index]) == 2 and int(version[index + 1 :]) >= 7),
                "This qemu version should greater than 2.7 "
                + "in this suite, please config it in %s.cfg file" % self.suite_name,
            )
            # update the version info to self.qemu_list
            self.qemu_list[i].update({"version": "qemu-%s" % version})

        # print all the qemu version you config
        config_qemu_version = ""
        for i in range(len(self.qemu_list)):
            config_qemu_version += self.qemu_list[i]["version"] + " "
        self.logger.info(
            "The suite will test the qemu version of: %s" % config_qemu_version
        )

        return True

    def rm_vm_qemu_path_config(self):
        """
        According it has config all qemu path, so pop the qemu path info in params
        when start the vm set the qemu path info
        """
        params_num = len(self.vm.params)
        for qemu_index in range(params_num):
            if list(self.vm.params[qemu_index].keys())[0] == "qemu":
                qemu_num = len(self.vm.params[qemu_index]["qemu"])
                break
        self.verify(qemu_index < params_num, "Please config qemu path in conf gile")
        self.vm.params.pop(qemu_index)

    def rm_cpupin_info_from_config(self):
        """
        remove the cpupin param from vm_params
        when the cores in cpupin is the isolcpus, it will reduce the
        performance of pvp
        And if we not use the cpupin params(taskset -c xxx), it will use
        the cpu which not set in isolcpus, and it number equal to the vcpus
        """
        params_number = len(self.vm.params)
        for i in range(params_number):
            if list(self.vm.params[i].keys())[0] == "cpu":
                if "cpupin" in list(self.vm.params[i]["cpu"][0].keys()):
                    self.vm.params[i]["cpu"][0].pop("cpupin")

    def start_vm(self, qemu_path, qemu_version, modem, virtio_path, packed=False):
        """
        start vm
        """
        self.vm = VM(self.dut, "vm0", self.suite_name)
        vm_params = {}
        vm_params["driver"] = "vhost-user"
        vm_params["opt_path"] = "%s/vhost-net" % self.base_dir
        vm_params["opt_mac"] = self.virtio1_mac
        vm_params["opt_server"] = "server"
        vm_params["opt_queue"] = self.queues_number

        # if the qemu version greater or equal to 2.10, the args should add
        # 'rx_queue_size=1024,tx_queue_size=1024'
        opt_args = "mq=on,vectors=15"
        version = qemu_version[qemu_version.find("-") + 1 :]
        index = version.find(".")
        if int(version[:index]) > 2 or int(version[index + 1 :]) >= 10:
            opt_args = "rx_queue_size=1024,tx_queue_size=1024," + opt_args

        if virtio_path == "mergeable":
            opt_args = "mrg_rxbuf=on," + opt_args
        else:
            opt_args = "mrg_rxbuf=off," + opt_args

        if modem == 1:
            opt_args = "disable-modern=false," + opt_args
        elif modem == 0:
            opt_args = "disable-modern=true," + opt_args
        if packed:
            opt_args = opt_args + ",packed=on"
        vm_params["opt_settings"] = opt_args
        self.vm.set_vm_device(**vm_params)
        self.vm.load_config()
        self.rm_vm_qemu_path_config()
        self.rm_cpupin_info_from_config()
        # set qemu version info
        self.vm.set_qemu_emulator(qemu_path)
        # Due to we have change the params info before,
        # so need to start vm with load_config=False
        try:
            self.vm_dut = self.vm.start(load_config=False)
            if self.vm_dut is None:
                raise Exception("Set up VM ENV failed")
        except Exception as e:
            self.logger.error("ERROR: Failure for %s" % str(e))

    def start_testpmd_as_vhost(self):
        """
        Launch the vhost testpmd
        """
        testcmd = self.app_testpmd_path + " "
        vdev = [
            r"'eth_vhost0,iface=%s/vhost-net,queues=%d,client=1'"
            % (self.base_dir, self.queues_number)
        ]
        eal_params = self.dut.create_eal_parameters(
            # PORT(hw): no NIC to allow (the tester's pktgen attaches a pcap port later), no
            # hugepages on this host, vhost's INFO lines kept out of the unread session
            cores=self.cores, prefix="vhost", no_pci=True, vdevs=vdev,
            other_eal_param="--no-huge -m 1024 --log-level=lib.vhost.config:notice",
        )
        para = " -- -i --nb-cores=%d --rxq=%d --txq=%d  --txd=1024 --rxd=1024" % (
            len(self.cores) - 1,  # PORT(hw): one forwarding lcore on 2 CPUs (legacy: queues)
            self.queues_number,
            self.queues_number,
        )
        command_line_client = testcmd + eal_params + para
        self.vhost.send_expect(command_line_client, "testpmd> ", 30)
        self.vhost.send_expect("set fwd mac", "testpmd> ", 30)
        try:
            self.vhost.send_expect("start", "testpmd> ", 30)
        except Exception as e:
            self.logger.warning(e)
            self.logger.info(
                "dpdk prompt testpmd> may not be printed correctly, add retry"
            )
            time.sleep(2)
            self.vhost.send_expect("", "testpmd> ", timeout=1)

    def start_testpmd_in_vm(self, virtio_path):
        """
        Start testpmd in vm
        """
        self.verify(
            len(self.vm_dut.cores) >= 3,
            "The vm does not have enough core to start testpmd, "
            "please config it in %s.cfg" % self.suite_name,
        )
        if self.vm_dut is not None:
            opt_args = ""
            if virtio_path in ["mergeable", "normal"]:
                opt_args = "--enable-hw-vlan-strip"
                vm_testpmd = (
                    self.app_testpmd_path + " -c 0x7 -n 4 "
                    "-- -i %s --nb-cores=%s "
                    "--rxq=%s --txq=%s --txd=1024 --rxd=1024"
                )
                vm_testpmd = vm_testpmd % (
                    opt_args,
                    self.queues_number,
                    self.queues_number,
                    self.queues_number,
                )
            else:
                vm_testpmd = (
                    self.app_testpmd_path + " -c 0x7 -n 4 -a %s,vectorized=1 "
                    "-- -i %s --nb-cores=%s "
                    "--rxq=%s --txq=%s --txd=1024 --rxd=1024"
                )
                vm_testpmd = vm_testpmd % (
                    self.vm_dut.get_port_pci(0),
                    opt_args,
                    self.queues_number,
                    self.queues_number,
                    self.queues_number,
                )
            self.vm_dut.send_expect(vm_testpmd, "testpmd> ", 20)
            self.vm_dut.send_expect("set fwd mac", "testpmd> ", 20)
            self.vm_dut.send_expect("start", "testpmd> ")

    def check_packets_of_each_queue(self, frame_size):
        """
        check each queue has receive packets
        """
        out = self.vhost.send_expect("stop", "testpmd> ", 60)
        print(out)
        for port_index in range(0, self.port_number):
            for queue_index in range(0, self.queues_number):
                queue_info = re.findall(
                    "RX\s*Port=\s*%d/Queue=\s*%d" % (port_index, queue_index), out
                )
                queue = queue_info[0]
                index = out.find(queue)
                rx = re.search("RX-packets:\s*(\d*)", out[index:])
                tx = re.search("TX-packets:\s*(\d*)", out[index:])
                rx_packets = int(rx.group(1))
                tx_packets = int(tx.group(1))
                self.verify(
                    rx_packets > 0 and tx_packets > 0,
                    "The queue %d rx-packets or tx-packets is 0 about " % queue_index
                    + "frame_size:%d, rx-packets:%d, tx-packets:%d"
                    % (frame_size, rx_packets, tx_packets),
                )

        self.vhost.send_expect("start", "testpmd> ", 60)

    @property
    def check_value(self):
        check_dict = dict.fromkeys(self.frame_sizes)
        linerate = {
            64: 0.08,
            128: 0.10,
            256: 0.17,
            512: 0.18,
            1024: 0.40,
            1280: 0.45,
            1518: 0.50,
        }
        for size in self.frame_sizes:
            # PORT(hw): no NIC line rate and TCG guests: any traffic back passes (rate > 0)
            check_dict[size] = 0
        return check_dict

    def send_verify(self, case_info, qemu_version, tag):
        for frame_size in self.frame_sizes:
            info = "Running test %s, and %d frame size." % (
                self.running_case,
                frame_size,
            )
            self.logger.info(info)
            payload = frame_size - HEADER_SIZE["eth"] - HEADER_SIZE["ip"]
            # PORT(hw): scapy on the host, called directly (legacy sent this flow as text
            # to the tester's scapy shell)
            flow = [Ether(dst=self.dst_mac) / IP(src=self.src1) / ("X" * payload)]
            wrpcap("%s/pvp_diff_qemu_version.pcap" % self.out_path, flow)

            tgenInput = []
            port = self.tester.get_local_port(self.pf)
            tgenInput.append(
                (port, port, "%s/pvp_diff_qemu_version.pcap" % self.out_path)
            )

            self.tester.pktgen.clear_streams()
            fields_config = {
                "ip": {
                    "dst": {"range": 127, "step": 1, "action": "random"},
                },
            }
            streams = self.pktgen_helper.prepare_stream_from_tginput(
                tgenInput, 100, fields_config, self.tester.pktgen
            )
            # set traffic option
            # PORT(hw): TCG guests, a short CI: 2 s + 5 s (legacy 5 s + 30 s)
            traffic_opt = {"delay": 2, "duration": 5}
            _, pps = self.tester.pktgen.measure_throughput(
                stream_ids=streams, options=traffic_opt
            )
            Mpps = pps / 1000000.0
            pct = "n/a"  # PORT(hw): no NIC line rate to compare with
            self.verify(
                Mpps > self.check_value[frame_size],
                "%s of frame size %d speed verify failed, expect %s, result %s"
                % (self.running_case, frame_size, self.check_value[frame_size], Mpps),
            )
            # check each queue has data
            self.check_packets_of_each_queue(frame_size)
            # update print table info
            data_row = [
                case_info,
                qemu_version,
                frame_size,
                str(Mpps),
                str(pct),
                self.queues_number,
                tag,
            ]
            self.result_table_add(data_row)

    def close_testpmd_and_qemu(self):
        """
        stop testpmd in vhost and qemu
        close the qemu
        """
        self.vm_dut.send_expect("quit", "#", 20)
        self.vhost.send_expect("quit", "#", 20)
        self.vm.stop()
        # PORT: killall by name would end other users' processes: kill_all ends ours
        self.dut.kill_all()
        self.dut.send_expect("rm -rf %s/vhost-net*" % self.base_dir, "#")

    def pvp_regression_run(self, case_info, modem, virtio_path, packed=False):
        """
        run different qemu verssion on different virtio path of pvp regression
        modem = 0, start vm as virtio 0.95
        modem = 1, start vm as virtio 1.0
        virtio_path = mergeable/normal/vector_rx
        """
        for i in range(len(self.qemu_list)):
            self.result_table_create(self.header_row)
            path = self.qemu_list[i]["path"]
            version = self.qemu_list[i]["version"]
            version_number = float(version.split("-")[-1])
            if "virtio11" in self.running_case and version_number < 4.2:
                self.logger.info(
                    "%s not support %s, skip" % (version, self.running_case)
                )
                continue
            self.start_testpmd_as_vhost()
            # use different modem and different path to start vm
            self.start_vm(path, version, modem, virtio_path, packed=packed)
            self.start_testpmd_in_vm(virtio_path)
            self.logger.info("now testing the qemu path of %s" % path)
            time.sleep(5)
            self.send_verify(case_info, version, "before reconnect")

            self.logger.info("now reconnect from vhost")
            self.dut.kill_all()  # PORT: as above, not killall
            self.start_testpmd_as_vhost()
            self.send_verify(case_info, version, "reconnect from vhost")

            self.logger.info("now reconnect from vm")
            self.vm.stop()  # PORT: stop this suite's VM, not every qemu by name (killall)
            self.start_vm(path, version, modem, virtio_path, packed=packed)
            self.start_testpmd_in_vm(virtio_path)
            self.send_verify(case_info, version, "reconnect from vm")

            self.result_table_print()
            self.close_testpmd_and_qemu()

    def test_perf_pvp_regression_with_mergeable_path(self):
        """
        Test Case 1: pvp test with virtio 0.95 mergeable path
        """
        case_info = "virtio-0.95 mergeable"
        modem = 0
        virtio_path = "mergeable"
        self.pvp_regression_run(case_info, modem, virtio_path)

    def test_perf_pvp_regression_modern_mergeable_path(self):
        """
        Test Case 4: pvp test with virtio 1.0 mergeable path
        """
        case_info = "virtio-1.0 mergeable"
        modem = 1
        virtio_path = "mergeable"
        self.pvp_regression_run(case_info, modem, virtio_path)

    def test_perf_pvp_regression_non_mergeable_path(self):
        """
        Test Case 2: pvp test with virtio 0.95 non-mergeable path
        """
        case_info = "virtio-0.95 normal"
        modem = 0
        virtio_path = "normal"
        self.pvp_regression_run(case_info, modem, virtio_path)

    def test_perf_pvp_regression_modern_non_mergeable_path(self):
        """
        Test Case 5: pvp test with virtio 1.0 non-mergeable path
        """
        case_info = "virtio-1.0 normal"
        modem = 1
        virtio_path = "normal"
        self.pvp_regression_run(case_info, modem, virtio_path)

    def test_perf_pvp_regression_vector_rx_path(self):
        """
        Test Case 3: pvp test with virtio 0.95 vrctor_rx path
        """
        case_info = "virtio-0.95 vector_rx"
        modem = 0
        virtio_path = "vector_rx"
        self.pvp_regression_run(case_info, modem, virtio_path)

    def test_perf_pvp_regression_modern_vector_rx_path(self):
        """
        Test Case 6: pvp test with virtio 1.0 vrctor_rx path
        """
        case_info = "virtio-1.0 normal"
        modem = 1
        virtio_path = "vector_rx"
        self.pvp_regression_run(case_info, modem, virtio_path)

    def test_perf_pvp_with_virtio11_mergeable_path(self):
        """
        Test Case 7: pvp test with virtio 1.1 mergeable path
        """
        case_info = "virtio-1.1 mergeable"
        modem = 1
        virtio_path = "mergeable"
        self.pvp_regression_run(case_info, modem, virtio_path, packed=True)

    def test_perf_pvp_with_virtio11_non_mergeable_path(self):
        """
        Test Case 8: pvp test with virtio 1.1 non-mergeable path
        """
        case_info = "virtio-1.1 normal"
        modem = 1
        virtio_path = "normal"
        self.pvp_regression_run(case_info, modem, virtio_path, packed=True)

    def tear_down(self):
        """
        Run after each test case.
        Clear qemu and testpmd to avoid blocking the following TCs
        """
        self.dut.close_session(self.vhost)
        self.dut.kill_all()  # PORT: as above, not killall
        time.sleep(2)

    def tear_down_all(self):
        """
        Run after each test suite.
        """
        pass
