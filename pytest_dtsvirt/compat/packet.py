"""The part of legacy ``framework.packet.Packet`` VM suites use on the DUT side: reading a
pcap file (with scapy, the legacy tester's library)."""

from __future__ import annotations

from typing import Any


class Packet:
    """Legacy ``Packet()``; only :meth:`read_pcapfile` (no tester here to send from)."""

    def read_pcapfile(self, filename: str, crb: Any = None) -> list[Any]:
        """The packets of ``filename`` (a local file) as scapy packets."""
        from scapy.utils import rdpcap

        return list(rdpcap(filename))
