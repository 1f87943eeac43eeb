"""The VXLAN frames of the guest-testpmd test, crafted and read back with scapy (pure).

The legacy suite's tester sent VXLAN frames to the DUT's physical port with scapy; here the
frames go through a pcap file that the host's testpmd replays on a ``net_pcap`` port, and
the frames testpmd sends back on that port land in another pcap file, read here.
"""

from __future__ import annotations

import os

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Packet, Raw
from scapy.utils import rdpcap, wrpcap

#: the MACs of the guest's two vhost-user ports, as in the reference suite
VM_MACS = ("00:00:20:00:00:20", "00:00:20:00:00:21")
#: the VXLAN network identifier of the suite's tunnel
VNI = 1000
#: outer (VTEP) and inner (overlay) endpoints of the crafted frames
OUTER_MACS = ("00:00:20:00:00:01", "00:00:20:00:00:20")
OUTER_IPS = ("172.31.0.1", "172.31.0.2")
INNER_MACS = ("00:00:30:00:00:01", "00:00:30:00:00:02")
INNER_IPS = ("192.168.100.1", "192.168.100.2")
VXLAN_PORT = 4789
PCAP_HEADER = 24  # bytes of a pcap file's global header


def vxlan_frames(count: int, vni: int) -> list[Packet]:
    """``count`` VXLAN frames (VNI ``vni``), each inner UDP datagram numbered in its payload
    and its source port, so a frame that comes back can be matched to the one sent."""
    frames = []
    for i in range(count):
        inner = (Ether(src=INNER_MACS[0], dst=INNER_MACS[1])
                 / IP(src=INNER_IPS[0], dst=INNER_IPS[1])
                 / UDP(sport=10000 + i, dport=20000) / Raw(f"dtsvirt vxlan {i:04d}".encode()))
        frames.append(Ether(src=OUTER_MACS[0], dst=OUTER_MACS[1])
                      / IP(src=OUTER_IPS[0], dst=OUTER_IPS[1])
                      / UDP(sport=49152 + i, dport=VXLAN_PORT) / VXLAN(vni=vni) / inner)
    return frames


def write_pcap(path: str, frames: list[Packet]) -> None:
    """``frames`` into a pcap file (Ethernet link type)."""
    wrpcap(path, frames)


def read_vxlan(path: str) -> list[Packet]:
    """The VXLAN frames of a pcap file (scapy decodes UDP port 4789 as VXLAN), in order;
    none while libpcap has not yet flushed the file's header."""
    if os.path.getsize(path) < PCAP_HEADER:
        return []
    return [p for p in rdpcap(path) if p.haslayer(VXLAN)]
