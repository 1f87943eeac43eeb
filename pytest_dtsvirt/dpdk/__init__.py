"""DPDK applications driven by tests: ``dpdk-testpmd`` on the host (the vhost-user backend
of guests with vhost-user devices) and inside guests (on their virtio ports), one driver
and one set of output parsers for both.

- :class:`~pytest_dtsvirt.dpdk.testpmd.Testpmd`: the interactive driver (``set_fwd``,
  ``start``, ``start_tx_first``, ``stop``, ``port_stats``, ``port_summary``, ``packet_log``).
- :class:`~pytest_dtsvirt.dpdk.vhost.TestpmdBackend`: testpmd with ``net_vhost`` ports.
- :class:`~pytest_dtsvirt.dpdk.guest.GuestTestpmd`: testpmd in a guest
  (``vm_dut.testpmd()``), and the guest DUT's ``ports_info``/``bind_interfaces_linux``.
"""

from __future__ import annotations

from pytest_dtsvirt.dpdk.guest import DpdkGuestMixin, GuestTestpmd
from pytest_dtsvirt.dpdk.parse import (
    PacketRecord,
    PortStats,
    PortSummary,
    parse_packet_log,
    parse_port_stats,
    parse_port_summary,
)
from pytest_dtsvirt.dpdk.testpmd import Testpmd, TestpmdHost
from pytest_dtsvirt.dpdk.vhost import TestpmdBackend, build_testpmd_argv

__all__ = [
    "DpdkGuestMixin",
    "GuestTestpmd",
    "PacketRecord",
    "PortStats",
    "PortSummary",
    "Testpmd",
    "TestpmdBackend",
    "TestpmdHost",
    "build_testpmd_argv",
    "parse_packet_log",
    "parse_port_stats",
    "parse_port_summary",
]
