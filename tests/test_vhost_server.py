"""vhost-user server mode (``opt_server=yes``: qemu listens, testpmd connects with
``client=1``), multi-queue and per-port devargs of the testpmd backend; a real guest keeps
its vhost-user link across a backend restart."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from support.runtime import assert_nothing_left, make_vm, write_cfg

from pytest_dtsvirt.dpdk.vhost import TestpmdBackend, build_testpmd_argv
from pytest_dtsvirt.session.dut import Dut, VmDut

MAC = "00:00:20:00:00:30"


def test_backend_argv_with_per_port_devargs_and_queues() -> None:
    argv = build_testpmd_argv("dpdk-testpmd", ["/r/s0", "/r/s1"], file_prefix="p", queues=2,
                              devargs=[{"client": True, "tso": 1},
                                       {"dmas": "[txq0@0000:00:04.0]", "queues": 1}])
    assert argv[argv.index("--vdev") + 1] == "net_vhost0,iface=/r/s0,queues=2,client=1,tso=1"
    assert "net_vhost1,iface=/r/s1,queues=1,dmas=[txq0@0000:00:04.0]" in argv
    assert argv[-2:] == ["--rxq=2", "--txq=2"]
    one = build_testpmd_argv("t", ["/a", "/b"], file_prefix="p", devargs={"client": 1})
    assert [a for a in one if a.startswith("net_vhost")] == [
        "net_vhost0,iface=/a,queues=1,client=1", "net_vhost1,iface=/b,queues=1,client=1"]
    with pytest.raises(ValueError, match="devargs lists 1 ports for 2"):
        build_testpmd_argv("t", ["/a", "/b"], file_prefix="p", devargs=[{"tso": 1}])
    with pytest.raises(ValueError, match="must not contain ','"):
        build_testpmd_argv("t", ["/a"], file_prefix="p", devargs={"dmas": "a,b"})


def _traffic(vm_dut: VmDut, pmd: TestpmdBackend, before: int) -> int:
    """ARP requests from the guest's vhost-user NIC until ``pmd`` counts more than
    ``before`` received packets (bounded); the count."""
    nic = vm_dut.send_expect(
        f"for n in /sys/class/net/*; do [ $(cat $n/address) = {MAC} ] && basename $n; done",
        "# ").split()[-1]
    vm_dut.send_expect(f"ip link set {nic} up; ip addr add 10.77.0.1/24 dev {nic} 2>/dev/null;"
                       " true", "# ")
    deadline = time.monotonic() + 30
    while True:
        vm_dut.send_expect("ping -c 2 -W 1 10.77.0.2 >/dev/null 2>&1; true", "# ", timeout=20)
        rx = pmd.port_stats(0).rx_packets
        if rx > before or time.monotonic() > deadline:
            return rx
        time.sleep(0.5)


def test_opt_server_guest_keeps_its_link_across_a_backend_restart(dut: Dut,
                                                                   tmp_path: Path) -> None:
    if shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed (Debian package dpdk-dev)")
    sock_dir = tmp_path / "v"
    sock_dir.mkdir(mode=0o700)
    path = str(sock_dir / "s0")
    # the backend first: in client mode it keeps connecting until qemu listens
    first = TestpmdBackend(dut.session, ports=1, devargs={"client": 1}, socket_paths=[path])
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.set_vm_device(driver="vhost-user", opt_path=path, opt_mac=MAC, opt_server="yes")
    try:
        with first:
            first.set_fwd("rxonly")
            first.start()
            vm_dut = vm.start()
            assert any("server=on,wait=off" in a for a in vm.argv)
            assert _traffic(vm_dut, first, 0) > 0
        # the backend is gone; qemu keeps listening and a new one connects
        with TestpmdBackend(dut.session, ports=1, devargs={"client": 1},
                            socket_paths=[path]) as second:
            second.set_fwd("rxonly")
            second.start()
            assert _traffic(vm_dut, second, 0) > 0, "no packet reached the restarted backend"
        assert vm_dut.send_expect("echo alive", "# ").strip().endswith("alive")
    finally:
        vm.stop()
    assert_nothing_left(vm)


def test_legacy_multiqueue_settings_boot_under_tcg(dut: Dut, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """The issue's crash: a legacy ``opt_settings=mrg_rxbuf=on,mq=on,vectors=6`` with
    ``opt_queue=2`` used to reach qemu after the plugin's ``vectors=0`` (qemu 7.2 under TCG:
    exit 139). Merged now: one ``vectors=0``, warnings say why, the guest gets 2 queues."""
    import logging

    if shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed (Debian package dpdk-dev)")
    with TestpmdBackend(dut.session, ports=1, queues=2) as pmd:
        vm = make_vm(dut, write_cfg(tmp_path))
        vm.set_vm_param("cpu", number="2")  # Linux uses min(queue pairs, CPUs) of them
        vm.set_vm_device(driver="vhost-user", opt_path=pmd.socket_paths[0], opt_mac=MAC,
                         opt_queue=2, opt_settings="mrg_rxbuf=on,mq=on,vectors=6")
        try:
            with caplog.at_level(logging.WARNING, logger="pytest_dtsvirt"):
                vm_dut = vm.start()
            (device,) = [a for a in vm.argv if a.startswith("virtio-net-pci,netdev=netdev")]
            assert device.count("vectors=") == 1 and "vectors=0" in device, device
            assert "mq=on" in device and "mrg_rxbuf=on" in device
            assert "opt_settings vectors=6 read as opt_vectors=6" in caplog.text
            assert "vectors=0 instead of 6 (opt_vectors=6) under TCG" in caplog.text
            queues = vm_dut.send_expect(
                f"for n in /sys/class/net/*; do [ $(cat $n/address) = {MAC} ] && "
                "ls $n/queues; done", "# ")
            assert "rx-0" in queues and "rx-1" in queues, queues
        finally:
            vm.stop()
    assert_nothing_left(vm)


def test_client_mode_reconnects_to_a_restarted_backend(dut: Dut, tmp_path: Path) -> None:
    """qemu as the client with ``opt_reconnect=1``: the backend (server) restarts on the
    same socket and qemu connects to it again; the guest's traffic reaches the new one."""
    if shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed (Debian package dpdk-dev)")
    sock_dir = tmp_path / "v"
    sock_dir.mkdir(mode=0o700)
    path = str(sock_dir / "s0")
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.set_vm_device(driver="vhost-user", opt_path=path, opt_mac=MAC, opt_reconnect=1)
    try:
        with TestpmdBackend(dut.session, ports=1, socket_paths=[path]) as first:
            first.set_fwd("rxonly")
            first.start()
            vm_dut = vm.start()
            assert any(a.endswith(f"path={path},reconnect=1") for a in vm.argv)
            assert _traffic(vm_dut, first, 0) > 0
        with TestpmdBackend(dut.session, ports=1, socket_paths=[path]) as second:
            second.set_fwd("rxonly")
            second.start()
            assert _traffic(vm_dut, second, 0) > 0, "qemu did not reconnect to the backend"
    finally:
        vm.stop()
    assert_nothing_left(vm)
