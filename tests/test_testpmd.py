"""Tests of the dpdk-testpmd vhost-user backend: parsers on captured real output, and real
testpmd with vhost-user ports (plus, when the test guest is available, a real VXLAN datapath
through a real qemu guest)."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.runtime import DPDK_VM, assert_nothing_left, gone_or_zombie, make_vm, write_cfg

from pytest_dtsvirt.dpdk import (
    GuestTestpmd,
    PortStats,
    TestpmdBackend,
    build_testpmd_argv,
    parse_packet_log,
    parse_port_stats,
    parse_port_summary,
)
from pytest_dtsvirt.dpdk.testpmd import PROMPT_RE, _Reader
from pytest_dtsvirt.errors import CommandTimeout, SessionError
from pytest_dtsvirt.session.base import Shell
from pytest_dtsvirt.session.dut import Dut, VmDut
from pytest_dtsvirt.session.local import LocalSession

# Captured from dpdk-testpmd 22.11.11 (Debian 12): two pcap ports replaying one VXLAN packet
# (UDP dst 4789, VNI 1000, inner ICMP) and one plain UDP packet; "set verbose 3",
# "set fwd csum", "csum parse-tunnel on 0|1", "start", "show port stats 0".
CSUM_CAPTURE = """\
testpmd> start
csum packet forwarding - ports=2 - cores=1 - streams=2 - NUMA support enabled, MP allocation mode: native
Logical Core 1 (socket 0) forwards packets on 2 streams:
  RX P=0/Q=0 (socket 0) -> TX P=1/Q=0 (socket 0) peer=02:00:00:00:00:01
  RX P=1/Q=0 (socket 0) -> TX P=0/Q=0 (socket 0) peer=02:00:00:00:00:00

  csum packet forwarding packets/burst=32
  nb forwarding cores=1 - nb forwarding ports=2
  port 0: RX queue number: 1 Tx queue number: 1
    Rx offloads=0x0 Tx offloads=0x0
  port 1: RX queue number: 1 Tx queue number: 1
    Rx offloads=0x0 Tx offloads=0x0
testpmd> port 0/queue 0: received 2 packets
  src=00:00:20:00:00:20 - dst=00:00:20:00:00:21 - pool=mb_pool_0 - type=0x0800 - length=124 - nb_segs=1 - timestamp 0  - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Receive queue=0x0
  ol_flags: RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
  src=00:00:20:00:00:20 - dst=00:00:20:00:00:21 - pool=mb_pool_0 - type=0x0800 - length=47 - nb_segs=1 - timestamp 0  - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Receive queue=0x0
  ol_flags: RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
-----------------
port=0, mbuf=0x11bb3e040, pkt_len=124, nb_segs=1:
rx: l2_len=30 ethertype=800 l3_len=20 l4_proto=1 l4_len=0 flags=RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
rx: outer_l2_len=14 outer_ethertype=800 outer_l3_len=20
tx: flags=RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4 RTE_MBUF_F_TX_OUTER_IPV4 RTE_MBUF_F_TX_TUNNEL_VXLAN
-----------------
port=0, mbuf=0x11bb3d040, pkt_len=47, nb_segs=1:
rx: l2_len=14 ethertype=800 l3_len=20 l4_proto=17 l4_len=8 flags=RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
tx: flags=RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4
port 1/queue 0: sent 2 packets
  src=02:70:63:61:70:01 - dst=02:00:00:00:00:01 - pool=mb_pool_0 - type=0x0800 - length=124 - nb_segs=1 - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Send queue=0x0
  ol_flags: RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4 RTE_MBUF_F_TX_OUTER_IPV4 RTE_MBUF_F_TX_TUNNEL_VXLAN
  src=02:70:63:61:70:01 - dst=02:00:00:00:00:01 - pool=mb_pool_0 - type=0x0800 - length=47 - nb_segs=1 - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Send queue=0x0
  ol_flags: RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4
port 1/queue 0: received 2 packets
  src=00:00:20:00:00:20 - dst=00:00:20:00:00:21 - pool=mb_pool_0 - type=0x0800 - length=124 - nb_segs=1 - timestamp 0  - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Receive queue=0x0
  ol_flags: RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
  src=00:00:20:00:00:20 - dst=00:00:20:00:00:21 - pool=mb_pool_0 - type=0x0800 - length=47 - nb_segs=1 - timestamp 0  - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Receive queue=0x0
  ol_flags: RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
-----------------
port=1, mbuf=0x11bb3d040, pkt_len=124, nb_segs=1:
rx: l2_len=30 ethertype=800 l3_len=20 l4_proto=1 l4_len=0 flags=RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
rx: outer_l2_len=14 outer_ethertype=800 outer_l3_len=20
tx: flags=RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4 RTE_MBUF_F_TX_OUTER_IPV4 RTE_MBUF_F_TX_TUNNEL_VXLAN
-----------------
port=1, mbuf=0x11bb3e040, pkt_len=47, nb_segs=1:
rx: l2_len=14 ethertype=800 l3_len=20 l4_proto=17 l4_len=8 flags=RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN RTE_MBUF_F_RX_IP_CKSUM_UNKNOWN RTE_MBUF_F_RX_OUTER_L4_CKSUM_UNKNOWN
tx: flags=RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4
port 0/queue 0: sent 2 packets
  src=02:70:63:61:70:00 - dst=02:00:00:00:00:00 - pool=mb_pool_0 - type=0x0800 - length=124 - nb_segs=1 - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Send queue=0x0
  ol_flags: RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4 RTE_MBUF_F_TX_OUTER_IPV4 RTE_MBUF_F_TX_TUNNEL_VXLAN
  src=02:70:63:61:70:00 - dst=02:00:00:00:00:00 - pool=mb_pool_0 - type=0x0800 - length=47 - nb_segs=1 - sw ptype: L2_ETHER L3_IPV4 L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - Send queue=0x0
  ol_flags: RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV4
show port stats 0

  ######################## NIC statistics for port 0  ########################
  RX-packets: 2          RX-missed: 0          RX-bytes:  171
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 2          TX-errors: 0          TX-bytes:  171

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
"""  # noqa: E501  (captured output, verbatim)

# The guest side of the datapath (two vhost-user ports, VXLAN through testpmd) runs through
# the framework in examples/vxlan_sample and tests/test_runtime.py; here: the backend itself.


@pytest.fixture
def needs_testpmd() -> None:
    if shutil.which("dpdk-testpmd") is None:  # scripts/run installs it: this is a setup bug
        pytest.fail("dpdk-testpmd is not installed (Debian package dpdk-dev)")


def test_parse_port_stats_from_capture() -> None:
    stats = parse_port_stats(CSUM_CAPTURE)
    assert stats == {0: PortStats(port=0, rx_packets=2, rx_missed=0, rx_bytes=171, rx_errors=0,
                                  rx_nombuf=0, tx_packets=2, tx_errors=0, tx_bytes=171)}


def test_parse_port_stats_all_ports_with_crlf_and_trailing_blanks() -> None:
    block = (
        "  ######################## NIC statistics for port {p}  ########################\n"
        "  RX-packets: {rx}          RX-missed: 0          RX-bytes:  {rxb}\n"
        "  RX-errors: 0\n  RX-nombuf:  0         \n"
        "  TX-packets: {tx}          TX-errors: 1          TX-bytes:  {txb}\n\n"
        "  Throughput (since last show)\n  Rx-pps:            0          Rx-bps:            0\n"
        "  ############################################################################\n"
    )
    text = (block.format(p=0, rx=10, rxb=1480, tx=12, txb=1776)
            + block.format(p=1, rx=12, rxb=1776, tx=10, txb=1480)).replace("\n", "\r\n")
    stats = parse_port_stats(text)
    assert sorted(stats) == [0, 1]
    assert (stats[0].rx_packets, stats[0].tx_packets, stats[0].tx_errors) == (10, 12, 1)
    assert (stats[1].rx_bytes, stats[1].tx_bytes) == (1776, 1480)


def test_parse_port_stats_rejects_truncated_block() -> None:
    text = ("  #### NIC statistics for port 3  ####\n  RX-packets: 1\n"
            "  ############################################################################\n")
    with pytest.raises(ValueError, match="port 3"):
        parse_port_stats(text)


def test_parse_packet_log_from_capture() -> None:
    records = parse_packet_log(CSUM_CAPTURE)
    assert [(r.port, r.direction) for r in records] == [
        (0, "rx"), (0, "rx"), (1, "tx"), (1, "tx"), (1, "rx"), (1, "rx"), (0, "tx"), (0, "tx")]
    first = records[0]
    assert first.src == "00:00:20:00:00:20" and first.dst == "00:00:20:00:00:21"
    assert first.ether_type == 0x0800 and first.length == 124
    assert first.sw_ptype == ("L2_ETHER", "L3_IPV4", "L4_UDP")
    assert first.hw_ptype == ()
    assert first.ol_flags[0] == "RTE_MBUF_F_RX_L4_CKSUM_UNKNOWN"
    # Only csum forwarding's TX flag tells VXLAN apart on the vhost PMD.
    assert [r.is_vxlan for r in records] == [False, False, True, False,
                                            False, False, True, False]
    assert records[2].length == 124 and records[3].length == 47


def test_parse_packet_log_with_crlf_and_trailing_blanks() -> None:
    text = "\r\n".join(line + " " for line in CSUM_CAPTURE.split("\n"))
    assert parse_packet_log(text) == parse_packet_log(CSUM_CAPTURE)


def test_parse_packet_log_hardware_vxlan_ptype() -> None:
    # The shape testpmd prints when a PMD reports a tunnel packet type (util.c, DPDK 22.11).
    text = (
        "port 0/queue 0: received 1 packets\n"
        "  src=00:00:20:00:00:20 - dst=00:00:20:00:00:21 - pool=mb_pool_0 - type=0x0800 - "
        "length=148 - nb_segs=1 - hw ptype: L2_ETHER L3_IPV4_EXT_UNKNOWN L4_UDP TUNNEL_VXLAN "
        "INNER_L2_ETHER INNER_L3_IPV4_EXT_UNKNOWN INNER_L4_ICMP  - sw ptype: L2_ETHER L3_IPV4 "
        "L4_UDP  - l2_len=14 - l3_len=20 - l4_len=8 - VXLAN packet: packet type =123, "
        "Destination UDP port =4789, VNI = 1000, last_rsvd = 0 - Receive queue=0x0\n"
        "  ol_flags: RTE_MBUF_F_RX_L4_CKSUM_GOOD \n")
    (record,) = parse_packet_log(text)
    assert record.is_vxlan and record.vxlan_udp_port == 4789
    assert "TUNNEL_VXLAN" in record.hw_ptype and record.length == 148


def test_parse_packet_log_ignores_lines_without_header_and_empty_input() -> None:
    assert parse_packet_log("") == []
    stray = ("  src=00:00:20:00:00:20 - dst=00:00:20:00:00:21 - pool=mb_pool_0 - type=0x0800 - "
             "length=60 - nb_segs=1 - sw ptype: L2_ETHER  - l2_len=14 - Receive queue=0x0\n")
    assert parse_packet_log(stray) == []


def test_build_testpmd_argv() -> None:
    argv = build_testpmd_argv("dpdk-testpmd", ["/run/d/s0", "/run/d/s1"], file_prefix="p1",
                        eth_peers={1: "00:00:20:00:00:21", 0: "00:00:20:00:00:20"})
    assert argv == [
        "dpdk-testpmd", "--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--file-prefix=p1",
        "--vdev", "net_vhost0,iface=/run/d/s0,queues=1",
        "--vdev", "net_vhost1,iface=/run/d/s1,queues=1",
        "--", "-i", "--total-num-mbufs=16384",
        "--eth-peer=0,00:00:20:00:00:20", "--eth-peer=1,00:00:20:00:00:21"]
    with pytest.raises(ValueError, match="','"):
        build_testpmd_argv("dpdk-testpmd", ["/tmp/a,b"], file_prefix="p")


@pytest.mark.usefixtures("needs_testpmd")
def test_real_testpmd_two_vhost_ports() -> None:
    host = LocalSession()
    try:
        pmd = TestpmdBackend(host, ports=2)
        with pmd:
            pid, run_dir = pmd.pid, pmd.run_dir
            assert pid is not None and run_dir is not None
            assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
            assert len(pmd.socket_paths) == 2
            assert all(os.path.exists(p) for p in pmd.socket_paths)
            pmd.set_verbose(1)
            pmd.set_fwd("io")
            pmd.start()
            stats = [pmd.port_stats(0), pmd.port_stats(1)]
            assert [s.port for s in stats] == [0, 1]
            assert all(s.rx_packets == 0 and s.tx_packets == 0 for s in stats)
            assert pmd.packet_log() == []
            assert "Forward statistics for port 0" in pmd.stop_fwd()
            with pytest.raises(SessionError):
                pmd.set_fwd("no-such-mode")
        assert pmd.pid is None
        assert gone_or_zombie(pid)
        assert not os.path.exists(run_dir)
        assert not os.path.exists(f"/var/run/dpdk/{pmd.file_prefix}")
    finally:
        host.close()


@pytest.mark.usefixtures("needs_testpmd")
def test_real_testpmd_quit_and_failed_launch_leave_nothing() -> None:
    host = LocalSession()
    try:
        pmd = TestpmdBackend(host, ports=1).launch()
        pid, run_dir = pmd.pid, pmd.run_dir
        assert run_dir is not None
        pmd.quit()
        assert pid is not None and gone_or_zombie(pid)
        assert not os.path.exists(run_dir)
        bad = TestpmdBackend(host, ports=1, eal_args=["--no-such-eal-option"], ready_timeout=20)
        with pytest.raises(SessionError):
            bad.launch()
        assert bad.pid is None and bad.run_dir is None
    finally:
        host.close()


def test_parse_packet_log_window_keeps_header_before_start() -> None:
    text = CSUM_CAPTURE
    # a window starting between "port 1/queue 0: sent 2 packets" and its first packet line
    header = text.index("port 1/queue 0: sent 2 packets")
    start = text.index("\n", header) + 1
    records = parse_packet_log(text, start)
    assert [(r.port, r.direction) for r in records][:2] == [(1, "tx"), (1, "tx")]
    assert records[0].offset == start
    assert len(records) == 6
    assert parse_packet_log(text, len(text)) == []


# ------------------------------------------- the prompt split by the forwarding core's dumps

_DUMP = ("port 0/queue 0: sent 1 packets\r\n"
         "  src=56:48:4F:53:54:00 - dst=00:00:20:00:00:20 - pool=mb_pool_0 - type=0x86dd - "
         "length=70 - nb_segs=1 - sw ptype: L2_ETHER L3_IPV6  - l2_len=14 - l3_len=40 - "
         "Send queue=0x0\r\n"
         "  ol_flags: RTE_MBUF_F_TX_L4_NO_CKSUM RTE_MBUF_F_TX_IPV6 \r\n")


def test_prompt_re_matches_a_prompt_split_by_dump_lines() -> None:
    # cmdline writes the prompt char by char; whole dump lines can land in between (seen
    # on the real binary after "start" with verbose 2 and traffic flowing)
    text = "Done.\r\ntestp" + _DUMP + "md" + _DUMP + _DUMP + "> "
    found = re.search(PROMPT_RE, text)
    assert found is not None and found.start() == text.index("testp")
    assert found.end() == len(text)
    assert re.search(PROMPT_RE, "testpmd: create a new mbuf pool\r\n") is None
    assert re.search(PROMPT_RE, "Set csum packet forwarding mode\r\n" + _DUMP) is None
    records = parse_packet_log(text)
    assert len(records) == 3 and {r.length for r in records} == {70}
    assert all(r.ol_flags == ("RTE_MBUF_F_TX_L4_NO_CKSUM", "RTE_MBUF_F_TX_IPV6")
               for r in records)


class _ScriptedShell(Shell):
    """Hands out scripted chunks of output, one per flush()."""

    def __init__(self, chunks: list[str]) -> None:
        self.chunks = chunks

    def send(self, text: str) -> None:
        pass

    def expect(self, pattern: str, timeout: float) -> str:
        raise NotImplementedError

    def flush(self) -> str:
        return self.chunks.pop(0) if self.chunks else ""

    def close(self) -> None:
        pass


def test_reader_waits_across_chunks_for_a_split_prompt() -> None:
    shell = _ScriptedShell(["Telling cores to stop...\r\nDone.\r\ntest", "p", _DUMP,
                            "md>", _DUMP, " ", _DUMP])
    reader = _Reader(shell)
    try:
        before = reader.wait_for(PROMPT_RE, time.monotonic() + 10, "stop")
        assert before.endswith("Done.\r\n")
        time.sleep(0.2)
        assert reader.text.endswith(_DUMP) and reader.pos < len(reader.text)
        with pytest.raises(CommandTimeout):
            reader.wait_for(PROMPT_RE, time.monotonic() + 0.3, "nothing")
    finally:
        reader.stop()


# ------------------------------------------------------------------ DPDK in a real guest

# Captured from dpdk-testpmd 22.11.11 (Debian 12), "show port summary all": two net_null
# ports (host) and two virtio ports of a guest, the second one's link down.
SUMMARY_CAPTURE = """\
show port summary all\r
Number of available ports: 2\r
Port MAC Address       Name         Driver         Status   Link\r
0    FA:81:1C:9F:E7:B5 net_null0    net_null       up       10 Gbps\r
1    36:23:63:CD:6B:17 net_null1    net_null       up       10 Gbps\r
"""
SUMMARY_GUEST_CAPTURE = """\
Number of available ports: 2
Port MAC Address       Name         Driver         Status   Link
0    00:00:20:00:00:20 0000:00:04.0 net_virtio     up       Unknown
1    00:00:20:00:00:21 0000:00:05.0 net_virtio     down     None
"""


def test_parse_port_summary_host_and_guest_captures() -> None:
    rows = parse_port_summary(SUMMARY_CAPTURE)
    assert [(r.port, r.mac, r.name, r.driver, r.link_up) for r in rows] == [
        (0, "FA:81:1C:9F:E7:B5", "net_null0", "net_null", True),
        (1, "36:23:63:CD:6B:17", "net_null1", "net_null", True)]
    assert rows[0].speed == "10 Gbps"
    rows = parse_port_summary(SUMMARY_GUEST_CAPTURE)
    assert [(r.name, r.link_up) for r in rows] == [("0000:00:04.0", True),
                                                  ("0000:00:05.0", False)]


def test_parse_port_summary_rejects_missing_or_short_table() -> None:
    with pytest.raises(ValueError, match="no port summary"):
        parse_port_summary("testpmd> ")
    with pytest.raises(ValueError, match="announces 2 ports, lists 1"):
        parse_port_summary(SUMMARY_CAPTURE.rsplit("1    36", 1)[0])


GUEST_MACS = ("00:00:20:00:00:20", "00:00:20:00:00:21")


@pytest.fixture
def guest_on_backend(dut: Dut, tmp_path: Path) -> Iterator[tuple[TestpmdBackend, VmDut]]:
    """The host's vhost-user testpmd and a started DPDK guest (``guest = dpdk=yes``) with
    one virtio port on each of its two sockets (MACs GUEST_MACS)."""
    with TestpmdBackend(dut.session, ports=2) as backend:
        vm = make_vm(dut, write_cfg(tmp_path, DPDK_VM), boot_timeout=180.0)
        for path, mac in zip(backend.socket_paths, GUEST_MACS, strict=True):
            vm.set_vm_device(driver="vhost-user", opt_path=path, opt_mac=mac)
        try:
            yield backend, vm.start()
        finally:
            vm.stop()
    assert_nothing_left(vm)


@pytest.mark.slow
def test_guest_ports_bind_and_testpmd_forwards_with_host(
        guest_on_backend: tuple[TestpmdBackend, VmDut]) -> None:
    """ports_info lists the virtio ports with the configured MACs; they bind to
    uio_pci_generic and back; testpmd in the guest refuses unbound ports, then forwards with
    the host's vhost-user testpmd (counters grow on both sides); kill_all ends it."""
    host, vm_dut = guest_on_backend
    info = vm_dut.ports_info
    assert [p["mac"] for p in info] == list(GUEST_MACS), info
    assert all(p["driver"] == "virtio-pci" and p["intf"] for p in info), info
    assert vm_dut.get_ports() == [0, 1]
    assert "host_connect" not in {p["intf"] for p in info}

    with pytest.raises(SessionError, match=r"vm0: testpmd needs ports bound to a DPDK driver"
                       r".*virtio-pci.*bind_interfaces_linux\('uio_pci_generic'\)"):
        vm_dut.testpmd()

    vm_dut.bind_interfaces_linux("uio_pci_generic")
    assert [(p["driver"], p["intf"], p["mac"]) for p in vm_dut.ports_info] == [
        ("uio_pci_generic", "", mac) for mac in GUEST_MACS]
    vm_dut.bind_interfaces_linux("virtio-pci")
    assert [(p["driver"], p["mac"]) for p in vm_dut.ports_info] == [
        ("virtio-pci", mac) for mac in GUEST_MACS]
    assert all(p["intf"] for p in vm_dut.ports_info)
    # no vIOMMU in this guest: vfio-pci cannot take the port, and says so
    with pytest.raises(SessionError, match=r"vm0: bind_interfaces_linux\('vfio-pci'\): "
                       r"0000:00:0.\.0 is on no driver \(vfio-pci needs an IOMMU"):
        vm_dut.bind_interfaces_linux("vfio-pci", [1])
    with pytest.raises(SessionError, match=r"'bogus'\): not a driver.*valid: uio_pci_generic"):
        vm_dut.bind_interfaces_linux("bogus")
    vm_dut.bind_interfaces_linux("uio_pci_generic")

    host.set_fwd("io")
    host.start()
    pmd = vm_dut.testpmd()
    assert [(s.mac, s.driver, s.link_up) for s in pmd.summary] == [
        (mac.upper(), "net_virtio", True) for mac in GUEST_MACS]
    pmd.set_fwd("io")
    pmd.start_tx_first()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        guest = [pmd.port_stats(0), pmd.port_stats(1)]
        if all(s.rx_packets > 100 for s in guest):
            break
        time.sleep(1)
    assert all(s.rx_packets > 100 and s.tx_packets > 100 for s in guest), guest
    pmd.stop()
    hosts = [host.port_stats(0), host.port_stats(1)]
    assert all(s.rx_packets > 100 and s.tx_packets > 100 for s in hosts), hosts
    pid = pmd.pid
    assert pid is not None and pmd.running
    assert pid in vm_dut.kill_all()
    assert not pmd.running
    pmd.close()


# Recorded in the DPDK test guest (busybox sh): ports.SCAN_SCRIPT with two vhost-user virtio
# ports and the control NIC, and ports.BIND_SCRIPT binding one port to uio_pci_generic and
# one to vfio-pci (no vIOMMU: the probe fails, the port is left on no driver).
SCAN_CAPTURE = """\
port 0000:00:02.0 0x1af4:0x1000 virtio-pci eth0 00:00:20:00:00:20\r
port 0000:00:03.0 0x1af4:0x1000 uio_pci_generic - -\r
port 0000:00:1f.0 0x8086:0x100e e1000 host_connect 52:54:00:12:34:56\r
"""
BIND_CAPTURE = "bound 0000:00:04.0 uio_pci_generic\nbound 0000:00:03.0 -\n"


def test_parse_scan_leaves_out_control_nic_and_keeps_pci_order() -> None:
    from pytest_dtsvirt.dpdk.ports import parse_scan

    assert parse_scan(SCAN_CAPTURE) == [
        {"pci": "0000:00:02.0", "type": "1af4:1000", "driver": "virtio-pci", "intf": "eth0",
         "mac": "00:00:20:00:00:20"},
        {"pci": "0000:00:03.0", "type": "1af4:1000", "driver": "uio_pci_generic", "intf": "",
         "mac": ""}]
    reordered = "\n".join(reversed(SCAN_CAPTURE.splitlines()))
    assert [p["pci"] for p in parse_scan(reordered)] == ["0000:00:02.0", "0000:00:03.0"]
    assert parse_scan("") == [] and parse_scan("garbage line\n") == []


def test_parse_bind() -> None:
    from pytest_dtsvirt.dpdk.ports import parse_bind

    assert parse_bind(BIND_CAPTURE + "modprobe-failed vfio-pci\n") == (
        {"0000:00:04.0": "uio_pci_generic", "0000:00:03.0": ""}, ["vfio-pci"])


@pytest.mark.slow
def test_guest_testpmd_on_a_plain_virtio_port_then_back_to_the_kernel(
        dut: Dut, tmp_path: Path) -> None:
    """The README's example: a virtio-net-pci port (user backend) in a DPDK guest; testpmd
    sees its link up; kill_all ends testpmd; the port goes back to its kernel driver and
    interface."""
    vm = make_vm(dut, write_cfg(tmp_path, DPDK_VM), boot_timeout=180.0)
    vm.set_vm_device(driver="virtio-net-pci", opt_mac=GUEST_MACS[0])
    try:
        vm_dut = vm.start()
        assert [(p["mac"], p["driver"]) for p in vm_dut.ports_info] == [
            (GUEST_MACS[0], "virtio-pci")]
        vm_dut.bind_interfaces_linux("uio_pci_generic")
        pmd = vm_dut.testpmd()
        assert [(s.mac, s.link_up) for s in pmd.summary] == [(GUEST_MACS[0].upper(), True)]
        assert pmd.pid in vm_dut.kill_all()
        pmd.close()
        vm_dut.bind_interfaces_linux("kernel")
        (port,) = vm_dut.ports_info
        assert port["driver"] == "virtio-pci" and port["intf"] and port["mac"] == GUEST_MACS[0]
    finally:
        vm.stop()
    assert_nothing_left(vm)


@pytest.mark.slow
def test_guest_testpmd_misuse_on_the_base_guest(dut: Dut, tmp_path: Path) -> None:
    """Without guest dpdk=yes: testpmd is not there and uio_pci_generic cannot load; both
    errors name the VM and the fix."""
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.set_vm_device(driver="virtio-net-pci", opt_mac=GUEST_MACS[0])
    try:
        vm_dut = vm.start()
        with pytest.raises(SessionError, match=r"vm0: bind_interfaces_linux\('uio_pci_generic'"
                           r"\): 0000:00:0.\.0 is on .*guest parameter dpdk=yes"):
            vm_dut.bind_interfaces_linux("uio_pci_generic")
        with pytest.raises(SessionError, match=r"vm0: the guest has no dpdk-testpmd; give the "
                           r"VM the DPDK guest: guest = dpdk=yes"):
            vm_dut.testpmd()
    finally:
        vm.stop()
    assert_nothing_left(vm)


def _guest_pmd_answering(summary: str, link_timeout: float = 0.0) -> GuestTestpmd:
    pmd = GuestTestpmd(LocalSession(), "vm7", ["0000:00:02.0", "0000:00:03.0"],
                       link_timeout=link_timeout)
    pmd.command = lambda cmd, timeout=30.0: summary  # type: ignore[method-assign]
    return pmd


def test_guest_testpmd_probing_no_port_is_an_error_naming_vm_and_fix() -> None:
    # what testpmd 22.11 prints in the guest when no port is bound (it then exits 0)
    startup = ("EAL: Selected IOVA mode 'PA'\nEAL: VFIO support could not be initialized\n"
               "testpmd: No probed ethernet devices\nInteractive-mode selected\n")
    with pytest.raises(SessionError, match=r"testpmd in vm7: DPDK probed no port \(asked for "
                       r"0000:00:02.0 0000:00:03.0\).*bind_interfaces_linux\('uio_pci_generic'"):
        _guest_pmd_answering(SUMMARY_GUEST_CAPTURE)._check_ready(startup)


def test_guest_testpmd_link_down_is_an_error_naming_the_port() -> None:
    with pytest.raises(SessionError, match=r"testpmd in vm7: link down on port 1 "
                       r"\(0000:00:05.0\) after 0 s: is the host side of the port up"):
        _guest_pmd_answering(SUMMARY_GUEST_CAPTURE)._check_ready("")
    short = SUMMARY_GUEST_CAPTURE.replace("ports: 2", "ports: 1").rsplit("1    00", 1)[0]
    with pytest.raises(SessionError, match=r"1 ports probed, expected 2"):
        _guest_pmd_answering(short)._check_ready("")
    ready = _guest_pmd_answering(SUMMARY_GUEST_CAPTURE.replace("down     None", "up       Unknown"))
    ready._check_ready("")
    assert [s.link_up for s in ready.summary] == [True, True]
