"""Host-side vhost-user backends for guests with vhost-user network devices.

The reference's vxlan sample suite started DPDK's ``tep_termination`` application as the
vhost-user backend before the VM. That application is not packaged anywhere any more; its
role is played here by DPDK's ``dpdk-testpmd`` (Debian package ``dpdk-dev``) with one
``net_vhost`` port per socket: :class:`~pytest_dtsvirt.vhost.testpmd.TestpmdBackend`.
"""

from __future__ import annotations

from pytest_dtsvirt.vhost.parse import PacketRecord, PortStats, parse_packet_log, parse_port_stats
from pytest_dtsvirt.vhost.testpmd import TestpmdBackend, TestpmdHost, build_testpmd_argv

__all__ = [
    "PacketRecord",
    "PortStats",
    "TestpmdBackend",
    "TestpmdHost",
    "build_testpmd_argv",
    "parse_packet_log",
    "parse_port_stats",
]
