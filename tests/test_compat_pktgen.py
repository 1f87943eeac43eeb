"""compat.pktgen, the tester's packet generator played by a net_pcap port attached to a
running testpmd: the legacy field ranges (pure), testpmd's output parsers (pure), and a
real measurement on the local DUT's dpdk-testpmd (no guest); the legacy VM calls the pvp port
needs (`opt_server="server"`, `set_qemu_emulator`)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap
from support.compat import script_conf

from pytest_dtsvirt.compat import VM
from pytest_dtsvirt.compat.pktgen import (
    PORT_NAME,
    HostTester,
    PacketGeneratorHelper,
    TestpmdPktgen,
    attached_port,
    expand_fields,
    port_of,
)
from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.dut import Dut


def test_expand_fields_steps_the_legacy_ranges() -> None:
    pkt = Ether(dst="52:54:00:00:00:02") / IP(src="192.168.4.1", dst="10.0.0.250") / ("X" * 26)
    out = expand_fields([pkt], {"ip": {"dst": {"range": 127, "step": 1, "action": "random"}}})
    assert len(out) == 127
    assert [p[IP].dst for p in out[:2]] + [out[-1][IP].dst] == [
        "10.0.0.250", "10.0.0.251", "10.0.1.120"]  # carries into the next octet
    assert {p[IP].src for p in out} == {"192.168.4.1"} and len(out[0]) == len(pkt)
    macs = expand_fields([pkt], {"mac": {"dst": {"range": 2, "step": 2}}})
    assert [p[Ether].dst for p in macs] == ["52:54:00:00:00:02", "52:54:00:00:00:04"]
    assert len(expand_fields([pkt], {})) == 1
    assert len(expand_fields([Ether()], {"ip": {"dst": {"range": 5}}})) == 1  # no IP layer


SUMMARY = """Number of available ports: 2
Port MAC Address       Name         Driver         Status   Link
0    56:48:4F:53:54:00 net_vhost0   net_vhost      down     10 Gbps
1    1E:34:1A:7B:2C:01 net_pcap_dtstester net_pcap       up       10 Gbps
"""


@pytest.mark.parametrize(("text", "name", "port"), [
    (SUMMARY, PORT_NAME, 1), (SUMMARY, "net_vhost0", 0), (SUMMARY, "net_pcap0", None),
    ("", PORT_NAME, None)])
def test_port_of(text: str, name: str, port: int | None) -> None:
    assert port_of(text, name) == port


def test_attached_port() -> None:
    assert attached_port("Attaching a new port...\nPort 3 is attached. Now total ports "
                         "is 4\nDone") == 3
    with pytest.raises(SessionError, match=r"(?s)did not attach.*no such vdev"):
        attached_port("no such vdev")


def test_stream_helper_and_host_tester() -> None:
    pktgen = TestpmdPktgen(session=None, queues=2)
    ids = PacketGeneratorHelper().prepare_stream_from_tginput(
        [(0, 0, "/a.pcap"), (1, 1, "/b.pcap")], 100, {"ip": {}}, pktgen)
    assert ids == [0, 1]
    pktgen.clear_streams()
    with pytest.raises(SessionError, match="no stream"):
        pktgen.measure_throughput([], {})
    assert HostTester(dut=None).get_local_port(1) == 1


@pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                    reason="dpdk-testpmd missing (Debian package dpdk-dev)")
def test_measure_throughput_on_a_real_testpmd(dut: Dut) -> None:
    """testpmd with one 2-queue port; the tester port loops its own traffic back
    (``--port-topology=loop``): the rate is what it sends, of the stream's frame size, and a
    second measurement replaces the first port with the new stream's."""
    out_dir = Path(dut.base_dir)
    session = dut.new_session("pktgen")
    eal = dut.create_eal_parameters(cores=["0", "1"], prefix="dtsvirt-pktgen", no_pci=True,
                                    vdevs=["net_null0"], other_eal_param="--no-huge -m 512")
    run_dir = Path("/var/run/dpdk") / re.findall(r"--file-prefix=(\S+)", eal)[0]
    session.send_expect(f"dpdk-testpmd {eal} -- -i --nb-cores=1 --rxq=2 --txq=2 "
                        "--port-topology=loop --total-num-mbufs=4096", "testpmd> ", 60)
    session.send_expect("set fwd io", "testpmd> ")
    tester = HostTester(dut, TestpmdPktgen(session, queues=2))
    assert tester.pktgen is not None
    results = []
    for size in (64, 128):
        pcap = str(out_dir / "s.pcap")
        wrpcap(pcap, [Ether() / IP(src="192.168.4.1") / ("X" * (size - 38))])
        tester.pktgen.clear_streams()
        ids = PacketGeneratorHelper().prepare_stream_from_tginput(
            [(0, 0, pcap)], 100, {"ip": {"dst": {"range": 4, "step": 1}}}, tester.pktgen)
        bps, pps = tester.pktgen.measure_throughput(ids, {"delay": 0.5, "duration": 1})
        assert pps > 0 and tester.pktgen.port == 1
        results.append(bps / pps / 8 - 24)  # bytes a frame without CRC, preamble and gap
        summary = session.send_expect("show port summary all", "testpmd> ")
        assert summary.count(PORT_NAME) == 1  # the earlier tester port is gone
    assert results[0] == pytest.approx(60, abs=0.5) and results[1] == pytest.approx(124, abs=0.5)
    session.send_expect("quit", "# ", 30)
    assert run_dir.exists()  # DPDK leaves it; the DUT removes its prefixes' dirs at close
    dut.close()
    assert not run_dir.exists()


# -- the legacy VM calls of the pvp port ---------------------------------------------------

CFG = """[vm0]
cpu =
    model=host,number=2;
qemu =
    path=/usr/bin/qemu-system-x86_64;
"""


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return script_conf(tmp_path, monkeypatch, {"s.cfg": CFG})


@pytest.mark.parametrize(("legacy", "server"), [
    ("server", True), ("server,nowait", True), ("yes", True), ("", False), ("no", False)])
def test_set_vm_device_reads_the_legacy_opt_server(conf: Path, dut: Dut, legacy: str,
                                                   server: bool) -> None:
    # legacy qemu_kvm appended opt_server's text to the chardev ("server"); empty: client
    vm = VM(dut, "vm0", "s")
    vm.set_vm_device(driver="vhost-user", opt_path="/tmp/v0", opt_server=legacy)
    vm.load_config()
    vm._apply_params()
    spec, _ = vm.hypervisor.params.build()  # type: ignore[attr-defined]
    assert [d.server for d in spec.devices] == [server]


def test_set_qemu_emulator(conf: Path, dut: Dut, tmp_path: Path,
                           caplog: pytest.LogCaptureFixture) -> None:
    vm = VM(dut, "vm0", "s")
    vm.load_config()
    vm.params.pop(vm.find_option_index("qemu") or 0)  # as the pvp suite does
    qemu = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    vm.set_qemu_emulator(qemu)
    assert vm.qemu_emulator == qemu and {"qemu": [{"path": qemu}]} in vm.params
    (tmp_path / "notexec").write_text("")
    for bad in (str(tmp_path / "nothere"), str(tmp_path / "notexec")):
        vm.set_qemu_emulator(bad)  # legacy: logged, nothing changes
        assert vm.qemu_emulator == qemu and f"no executable emulator {bad}" in caplog.text
