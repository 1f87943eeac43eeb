"""Parsers of ``dpdk-testpmd`` output (pure): port statistics, port summaries and verbose
packet dumps.

Formats as printed by DPDK 22.11 (``show port stats N``, ``show port summary all``;
``set verbose 1|2|3`` dumps from ``app/test-pmd/util.c``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PortStats:
    """The counters of ``show port stats N``."""

    port: int
    rx_packets: int
    rx_missed: int
    rx_bytes: int
    rx_errors: int
    rx_nombuf: int
    tx_packets: int
    tx_errors: int
    tx_bytes: int


_STATS_BLOCK = re.compile(r"NIC statistics for port (\d+)\s*#+(.*?)#{20,}", re.S)
_STATS_FIELDS = {
    "rx_packets": "RX-packets", "rx_missed": "RX-missed", "rx_bytes": "RX-bytes",
    "rx_errors": "RX-errors", "rx_nombuf": "RX-nombuf", "tx_packets": "TX-packets",
    "tx_errors": "TX-errors", "tx_bytes": "TX-bytes",
}


def parse_port_stats(text: str) -> dict[int, PortStats]:
    """Port number -> counters, for every ``NIC statistics for port N`` block in ``text``.

    Raises ValueError when a block lacks one of the counters."""
    result: dict[int, PortStats] = {}
    for block in _STATS_BLOCK.finditer(text):
        port, body = int(block.group(1)), block.group(2)
        values: dict[str, int] = {}
        for attr, label in _STATS_FIELDS.items():
            found = re.search(rf"{label}:\s*(\d+)", body)
            if found is None:
                raise ValueError(f"port {port} statistics: no {label} in {body!r}")
            values[attr] = int(found.group(1))
        result[port] = PortStats(port=port, **values)
    return result


@dataclass(frozen=True)
class PacketRecord:
    """One packet of testpmd's verbose dump (``set verbose 1`` received, ``2`` sent)."""

    port: int
    queue: int
    direction: str  # "rx" or "tx"
    src: str  # MAC, as printed (upper case)
    dst: str
    ether_type: int
    length: int
    sw_ptype: tuple[str, ...]  # e.g. ("L2_ETHER", "L3_IPV4", "L4_UDP")
    hw_ptype: tuple[str, ...]
    ol_flags: tuple[str, ...]  # e.g. ("RTE_MBUF_F_TX_TUNNEL_VXLAN",)
    vxlan_udp_port: int | None  # from testpmd's "VXLAN packet:" note (hardware ptype only)
    offset: int = field(default=0, compare=False)  # where the packet line starts in the text

    @property
    def is_vxlan(self) -> bool:
        """testpmd classified the packet as VXLAN (by packet type or by TX tunnel flag)."""
        return ("TUNNEL_VXLAN" in self.sw_ptype or "TUNNEL_VXLAN" in self.hw_ptype
                or "RTE_MBUF_F_TX_TUNNEL_VXLAN" in self.ol_flags
                or self.vxlan_udp_port is not None)


_BURST = re.compile(r"port (\d+)/queue (\d+): (received|sent) \d+ packets")
_PKT = re.compile(
    r"(?:^|\s)(?:port \d+, )?src=(?P<src>[0-9A-Fa-f:]{17}) - dst=(?P<dst>[0-9A-Fa-f:]{17})"
    r".*? - type=0x(?P<type>[0-9a-fA-F]+) - length=(?P<len>\d+)(?P<rest>.*)$")
_PTYPE = {"hw": re.compile(r" - hw ptype: (.*?)\s+- "),
          "sw": re.compile(r" - sw ptype: (.*?)\s+- ")}
_VXLAN_NOTE = re.compile(r"VXLAN packet: .*?Destination UDP port =(\d+)")
_OL_FLAGS = re.compile(r"(?:^|\s)ol_flags: (.*)$")


def parse_packet_log(text: str, start: int = 0) -> list[PacketRecord]:
    """Every packet line of testpmd's verbose dump in ``text`` that starts at or after
    offset ``start``, in order.

    Tolerates interleaved prompts and command output: a packet line belongs to the last
    ``port P/queue Q: received|sent N packets`` header seen before it (also before
    ``start``, so a window never loses the header of its first packets)."""
    records: list[PacketRecord] = []
    port = queue = -1
    direction = "rx"
    pending: dict[str, object] | None = None

    def flush(flags: tuple[str, ...]) -> None:
        nonlocal pending
        if pending is not None:
            records.append(PacketRecord(ol_flags=flags, **pending))  # type: ignore[arg-type]
            pending = None

    offset = 0
    for line in text.split("\n"):
        at, offset = offset, offset + len(line) + 1
        raw = line.replace("\r", "")
        header = None
        for header in _BURST.finditer(raw):  # noqa: B007  (keep the last header)
            pass
        if header is not None:
            flush(())
            port, queue = int(header.group(1)), int(header.group(2))
            direction = "rx" if header.group(3) == "received" else "tx"
            continue
        pkt = _PKT.search(raw)
        if pkt is not None and port >= 0 and at >= start:
            flush(())
            rest = pkt.group("rest")
            ptypes = {k: (rx.search(rest + " - ")) for k, rx in _PTYPE.items()}
            note = _VXLAN_NOTE.search(rest)
            pending = dict(
                port=port, queue=queue, direction=direction,
                src=pkt.group("src").upper(), dst=pkt.group("dst").upper(),
                ether_type=int(pkt.group("type"), 16), length=int(pkt.group("len")),
                sw_ptype=tuple(ptypes["sw"].group(1).split()) if ptypes["sw"] else (),
                hw_ptype=tuple(ptypes["hw"].group(1).split()) if ptypes["hw"] else (),
                vxlan_udp_port=int(note.group(1)) if note else None, offset=at,
            )
            continue
        flags = _OL_FLAGS.search(raw)
        if flags is not None and pending is not None:
            flush(tuple(flags.group(1).split()))
    flush(())
    return records


@dataclass(frozen=True)
class PortSummary:
    """One row of ``show port summary all``."""

    port: int
    mac: str  # as printed (upper case)
    name: str  # the device: a PCI address or a vdev name
    driver: str
    link_up: bool
    speed: str  # e.g. "10 Gbps", "None"


_SUMMARY_COUNT = re.compile(r"Number of available ports: (\d+)")
_SUMMARY_ROW = re.compile(
    r"^(?P<port>\d+)\s+(?P<mac>[0-9A-Fa-f:]{17})\s+(?P<name>\S+)\s+(?P<driver>\S+)\s+"
    r"(?P<status>up|down)\s+(?P<speed>.*?)\s*$", re.M)


def parse_port_summary(text: str) -> list[PortSummary]:
    """The rows of ``show port summary all`` in ``text``, port order.

    Raises ValueError when the table is missing or has fewer rows than it announces."""
    text = text.replace("\r", "")
    count = _SUMMARY_COUNT.search(text)
    if count is None:
        raise ValueError(f"no port summary in {text!r}")
    rows = [PortSummary(port=int(m.group("port")), mac=m.group("mac").upper(),
                        name=m.group("name"), driver=m.group("driver"),
                        link_up=m.group("status") == "up", speed=m.group("speed"))
            for m in _SUMMARY_ROW.finditer(text, count.end())]
    if len(rows) < int(count.group(1)):
        raise ValueError(f"port summary announces {count.group(1)} ports, lists {len(rows)}: "
                         f"{text!r}")
    return sorted(rows, key=lambda r: r.port)[: int(count.group(1))]
