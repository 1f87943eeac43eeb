"""The DTS vxlan sample suite, ported to pytest-dtsvirt.

Each test gets a fresh ``dpdk-testpmd`` vhost-user backend with two sockets and a fresh
``vm0`` (``conf/vxlan_sample.cfg``) with one virtio-net port on each socket (fixtures in
``conftest.py``).

``test_vxlan_through_guest_testpmd`` is the reference's flow: the guest is the DPDK test
guest, testpmd runs in it on both virtio ports, and VXLAN frames crafted with scapy cross
host testpmd -> guest testpmd -> host testpmd and are checked byte for byte.

The other two tests check the kernel path: in the guest every port goes into its own network
namespace with a VXLAN tunnel endpoint on it, so traffic between the two overlay addresses
leaves the guest VXLAN-encapsulated on one port, crosses testpmd, and comes back on the
other. They check both ends: the guest's pings are answered, and testpmd counted and saw the
packets.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from pytest_dtsvirt import TestpmdBackend, VmDut

if TYPE_CHECKING:
    from conftest import PcapBackend, VxlanGuest


pytestmark = pytest.mark.slow

PINGS = 20
#: an overlay ping frame (ICMP echo, 56 data bytes) is 98 bytes; VXLAN adds 8 + UDP 8 +
#: IPv4 20 + Ethernet 14
INNER_FRAME = 98
OUTER_FRAME = INNER_FRAME + 50


def test_vxlan_io_forwarding(vhost_backend: TestpmdBackend, vxlan_guest: VxlanGuest) -> None:
    """Overlay pings cross testpmd ``io`` forwarding as VXLAN/UDP frames."""
    pmd = vhost_backend
    vxlan_guest.setup()
    pmd.set_verbose(1)
    pmd.set_fwd("io")
    pmd.start()  # the forwarding core busy-polls: forward only while traffic is expected

    sent, received = vxlan_guest.ping(PINGS)

    assert (sent, received) == (PINGS, PINGS)
    stats = [pmd.port_stats(0), pmd.port_stats(1)]
    for counters in stats:
        assert counters.rx_packets >= PINGS and counters.tx_packets >= PINGS, counters
        assert counters.rx_errors == 0 and counters.tx_errors == 0, counters
    # io forwarding sends on one port what the other received (minus what arrived while the
    # peer's virtio queue had no buffers yet: guest interfaces come up one after the other)
    assert stats[1].tx_packets <= stats[0].rx_packets
    assert stats[0].tx_packets <= stats[1].rx_packets
    log = pmd.packet_log()
    for port, src in ((0, vxlan_guest.macs[0]), (1, vxlan_guest.macs[1])):
        tunnelled = [r for r in log if r.port == port and r.direction == "rx"
                     and r.src == src and "L4_UDP" in r.sw_ptype and r.length == OUTER_FRAME]
        assert len(tunnelled) >= PINGS, f"port {port}: {len(tunnelled)} VXLAN frames"
    pmd.stop_fwd()


def test_vxlan_tunnel_seen_by_testpmd(vhost_backend: TestpmdBackend,
                                      vxlan_guest: VxlanGuest) -> None:
    """testpmd's ``csum`` engine with tunnel parsing recognises the frames as VXLAN (UDP
    port 4789) and still delivers them (``--eth-peer`` = the guest MACs)."""
    pmd = vhost_backend
    pmd.set_fwd("csum")
    pmd.csum_parse_tunnel(0)
    pmd.csum_parse_tunnel(1)
    pmd.set_verbose(2)  # dump sent packets with their TX offload flags
    vxlan_guest.setup()
    pmd.start()

    sent, received = vxlan_guest.ping(PINGS)

    assert (sent, received) == (PINGS, PINGS)
    log = pmd.packet_log()
    for port, dst in ((0, vxlan_guest.macs[0]), (1, vxlan_guest.macs[1])):
        vxlan = [r for r in log if r.port == port and r.direction == "tx" and r.is_vxlan]
        # the pings (and the overlay's ARP, 42 + 50 bytes) went through the tunnel
        pings = [r for r in vxlan if r.length == OUTER_FRAME]
        assert len(pings) >= PINGS, f"port {port}: {len(pings)} VXLAN ping frames sent"
        assert {r.dst for r in vxlan} == {dst}
    pmd.stop_fwd()


@pytest.mark.vm(guest={"dpdk": True}, cpu={"number": 2}, mem={"size": 1024})
def test_vxlan_through_guest_testpmd(pcap_backend: PcapBackend, dpdk_vm_dut: VmDut,
                                     tmp_path: Path) -> None:
    """The reference's flow: testpmd in the guest on both virtio ports (``set fwd io``,
    ``start tx_first``), the host's testpmd forwarding between a pcap port and the vhost-user
    ports. VXLAN frames crafted with scapy go pcap -> vhost-user -> guest port 0 -> guest
    testpmd -> guest port 1 -> vhost-user -> pcap, and come back byte for byte."""
    from packets import INNER_IPS, VM_MACS, VNI, read_vxlan

    host, vm_dut = pcap_backend.pmd, dpdk_vm_dut
    sent = pcap_backend.frames
    assert [p["mac"] for p in vm_dut.ports_info] == [m.lower() for m in VM_MACS]
    vm_dut.bind_interfaces_linux("uio_pci_generic")
    guest = vm_dut.testpmd()
    guest.set_fwd("io")
    guest.start_tx_first()
    host.set_fwd("io")
    host.start()  # the pcap port replays its frames now, into the running guest testpmd

    deadline = time.monotonic() + 60
    while True:
        back = read_vxlan(pcap_backend.fetch_out(str(tmp_path)))
        if len(back) >= len(sent) or time.monotonic() > deadline:
            break
        time.sleep(1)

    assert [bytes(p) for p in back] == [bytes(p) for p in sent]
    for i, frame in enumerate(back):
        assert frame[VXLAN].vni == VNI and frame[VXLAN].flags & 0x08, frame.summary()
        inner = frame[VXLAN].payload
        assert (inner[IP].src, inner[IP].dst) == INNER_IPS, inner.summary()
        assert inner[UDP].sport == 10000 + i and bytes(inner[Raw].load).endswith(b"%04d" % i)
    pcap = host.port_stats(2)
    assert pcap.rx_packets == len(sent) and pcap.tx_packets >= len(sent), pcap
    to_guest, from_guest = host.port_stats(0), host.port_stats(1)
    assert to_guest.tx_packets >= len(sent) and from_guest.rx_packets >= len(sent)
    guest_rx, guest_tx = guest.port_stats(0), guest.port_stats(1)
    assert guest_rx.rx_packets >= len(sent) and guest_tx.tx_packets >= len(sent)
    assert guest_rx.rx_errors == 0 and guest_tx.tx_errors == 0
    host.stop()

    # teardown as in the reference: the guest's DPDK application ends with kill_all, then
    # the VM stops (the fixture)
    assert guest.pid in vm_dut.kill_all()
    assert not guest.running
