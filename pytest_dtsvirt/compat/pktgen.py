"""A software stand-in for the legacy tester's packet generator (``framework.pktgen``) on a
machine without a NIC or a traffic generator.

The tester's port is played by a ``net_pcap`` port attached to the DUT's running testpmd
(``port attach``): it replays the stream's pcap endlessly (``infinite_rx=1``, one
``rx_pcap`` per queue) into the forwarding path, and what testpmd sends back out of it is
what a tester would have received. :meth:`TestpmdPktgen.measure_throughput` returns that
port's measured TX rate (packets and bits per second from its counters over ``duration``),
as the legacy ``measure_throughput`` returned the tester's RX rate.

Only the stream's packets and the legacy ``fields_config`` address ranges are used; the rate
percentage is ignored (a pcap port sends as fast as testpmd polls it).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_dtsvirt.compat.pmd_output import parse_pmd_stats
from pytest_dtsvirt.errors import SessionError

log = logging.getLogger("pytest_dtsvirt.compat")

#: the name of the attached tester port (a DPDK vdev name)
PORT_NAME = "net_pcap_dtstester"
PROMPT = "testpmd> "


@dataclass
class Stream:
    """One legacy stream: its ports (unused: one tester port), pcap and field ranges."""

    tx_port: Any
    rx_port: Any
    pcap: str
    fields: Mapping[str, Any] = field(default_factory=dict)


def expand_fields(packets: Sequence[Any], fields: Mapping[str, Any]) -> list[Any]:
    """The stream's packets with the legacy ``fields_config`` ranges applied (pure, scapy
    packets): ``{"ip": {"dst": {"range": N, "step": S, ...}}}`` gives N copies of each
    packet with the IP (or ``mac``) ``src``/``dst`` stepped by S. Random order (``"action":
    "random"``) makes no difference to a replayed pcap, so the copies are in order."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether

    out = [p.copy() for p in packets]
    for layer_name, layer_cls in (("mac", Ether), ("ip", IP)):
        for key, spec in (fields.get(layer_name) or {}).items():
            count, step = int(spec.get("range", 1)), int(spec.get("step", 1))
            grown = []
            for pkt in out:
                if layer_cls not in pkt:
                    grown.append(pkt)
                    continue
                start = _addr_int(layer_name, getattr(pkt[layer_cls], key))
                for i in range(count):
                    copy = pkt.copy()
                    setattr(copy[layer_cls], key, _int_addr(layer_name, start + i * step))
                    grown.append(copy)
            out = grown
    return out


def _addr_int(kind: str, text: str) -> int:
    parts = text.split(":" if kind == "mac" else ".")
    return int("".join(parts), 16) if kind == "mac" else int.from_bytes(
        bytes(int(p) for p in parts), "big")


def _int_addr(kind: str, value: int) -> str:
    if kind == "mac":
        raw = (value % (1 << 48)).to_bytes(6, "big")
        return ":".join(f"{b:02x}" for b in raw)
    return ".".join(str(b) for b in (value % (1 << 32)).to_bytes(4, "big"))


def attached_port(output: str) -> int:
    """The port number of testpmd's ``port attach`` output (pure)."""
    found = re.search(r"Port (\d+) is attached", output)
    if found is None:
        raise SessionError(f"testpmd did not attach the tester port:\n{output[-2000:]}")
    return int(found.group(1))


def port_of(summary: str, name: str) -> int | None:
    """The port number named ``name`` in ``show port summary all`` output (pure)."""
    for line in summary.splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[0].isdigit() and cols[2] == name:
            return int(cols[0])
    return None


class TestpmdPktgen:
    """The legacy ``tester.pktgen`` played by a ``net_pcap`` port of the testpmd that runs
    in ``session`` (a DUT shell showing ``testpmd> ``) with ``queues`` RX/TX queues per
    port (its ``--rxq``/``--txq``)."""

    __test__ = False

    def __init__(self, session: Any, queues: int = 1) -> None:
        self.session = session
        self.queues = queues
        self._streams: list[Stream] = []
        self.port: int | None = None

    def _cmd(self, cmd: str, timeout: float = 30) -> str:
        return str(self.session.send_expect(cmd, PROMPT, timeout))

    def clear_streams(self) -> None:
        """Forget the streams (legacy)."""
        self._streams = []

    def add_stream(self, tx_port: Any, rx_port: Any, pcap: str,
                   fields: Mapping[str, Any] | None = None) -> int:
        """One stream from ``pcap``; its id."""
        self._streams.append(Stream(tx_port, rx_port, pcap, dict(fields or {})))
        return len(self._streams) - 1

    def _write_stream_pcap(self, stream: Stream) -> str:
        from scapy.utils import rdpcap, wrpcap

        path = re.sub(r"\.pcap$", "", stream.pcap) + ".stream.pcap"
        wrpcap(path, expand_fields(list(rdpcap(stream.pcap)), stream.fields))
        return path

    def _detach(self) -> None:
        """Remove a tester port left in this testpmd by an earlier measurement."""
        port = port_of(self._cmd("show port summary all"), PORT_NAME)
        if port is not None:
            self._cmd("stop")
            self._cmd(f"port stop {port}")
            self._cmd(f"port detach {port}")  # closes it and frees the vdev name
        self.port = None

    def attach(self, pcap: str) -> int:
        """Attach the tester port replaying ``pcap`` on every queue and restart forwarding;
        its port number."""
        self._detach()
        self._cmd("stop")
        rx = ",".join(f"rx_pcap={pcap}" for _ in range(self.queues))
        self.port = attached_port(self._cmd(f"port attach {PORT_NAME},{rx},infinite_rx=1"))
        out = self._cmd(f"port start {self.port}", timeout=60)
        if "Fail" in out or "Invalid" in out:
            raise SessionError(f"testpmd did not start the tester port:\n{out[-2000:]}")
        self._cmd("start")
        return self.port

    def _tx_counters(self) -> tuple[int, int]:
        stats = parse_pmd_stats(self._cmd(f"show port stats {self.port}"))
        packets, octets = stats.get("TX-packets"), stats.get("TX-bytes")
        if packets is None or octets is None:
            raise SessionError(f"no TX counters for the tester port {self.port}")
        return packets, octets

    def measure_throughput(self, stream_ids: Sequence[int] = (),
                           options: Mapping[str, Any] | None = None) -> tuple[float, float]:
        """Legacy ``measure_throughput``: replay the streams (the first one's pcap: one tester
        port), wait ``delay`` s, then count what comes back for ``duration`` s; returns
        ``(bps, pps)`` (bits count 24 more bytes a frame, CRC, preamble and gap, as on a wire)."""
        opts = dict(options or {})
        ids = list(stream_ids) or list(range(len(self._streams)))
        if not ids:
            raise SessionError("measure_throughput: no stream (prepare_stream_from_tginput)")
        self.attach(self._write_stream_pcap(self._streams[ids[0]]))
        time.sleep(float(opts.get("delay", 0)))
        packets0, octets0 = self._tx_counters()
        t0 = time.monotonic()
        time.sleep(float(opts.get("duration", 10)))
        packets1, octets1 = self._tx_counters()
        elapsed = time.monotonic() - t0
        pps = (packets1 - packets0) / elapsed
        bps = ((octets1 - octets0) + 24 * (packets1 - packets0)) * 8 / elapsed
        log.info("pktgen (net_pcap port %s): %.0f pps, %.0f bps over %.1f s", self.port, pps,
                 bps, elapsed)
        return bps, pps


class PacketGeneratorHelper:
    """Legacy ``PacketGeneratorHelper``: streams from a ``tgen_input`` list."""

    def prepare_stream_from_tginput(self, tgen_input: Sequence[Sequence[Any]],
                                    ratePercent: float, vm_config: Mapping[str, Any] | None,
                                    pktgen: TestpmdPktgen) -> list[int]:
        """One stream per ``(tx_port, rx_port, pcap)``; their ids. ``ratePercent`` is
        ignored (see the module docstring)."""
        return [pktgen.add_stream(tx, rx, pcap, vm_config) for tx, rx, pcap in tgen_input]


class HostTester:
    """The legacy ``self.tester`` on a machine without one: its shell is the host DUT's
    (scapy and pcap files live on the host), its port ``i`` is the DUT's port ``i``, and its
    :attr:`pktgen` is a :class:`TestpmdPktgen` once a suite binds one."""

    __test__ = False

    def __init__(self, dut: Any, pktgen: TestpmdPktgen | None = None) -> None:
        self.dut = dut
        self.pktgen = pktgen

    def send_expect(self, cmd: str, expected: str, timeout: float = 15) -> Any:
        """A command in the host DUT's shell."""
        return self.dut.send_expect(cmd, expected, timeout)

    def get_local_port(self, dut_port: int) -> int:
        """The tester port wired to DUT port ``dut_port``: the same number here."""
        return dut_port


__all__ = ["PORT_NAME", "HostTester", "PacketGeneratorHelper", "Stream", "TestpmdPktgen",
           "attached_port", "expand_fields", "port_of"]
