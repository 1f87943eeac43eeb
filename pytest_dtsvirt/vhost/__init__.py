"""Host-side vhost-user backends (kept for imports of earlier versions).

The reference's vxlan sample suite started DPDK's ``tep_termination`` application as the
vhost-user backend before the VM. That application is not packaged anywhere any more; its
role is played by ``dpdk-testpmd`` (Debian package ``dpdk-dev``) with one ``net_vhost``
port per socket: :class:`~pytest_dtsvirt.dpdk.vhost.TestpmdBackend`, which now lives in
:mod:`pytest_dtsvirt.dpdk` with the guest-side testpmd driver.
"""

from __future__ import annotations

from pytest_dtsvirt.dpdk import (
    PacketRecord,
    PortStats,
    TestpmdBackend,
    TestpmdHost,
    build_testpmd_argv,
    parse_packet_log,
    parse_port_stats,
)

__all__ = [
    "PacketRecord",
    "PortStats",
    "TestpmdBackend",
    "TestpmdHost",
    "build_testpmd_argv",
    "parse_packet_log",
    "parse_port_stats",
]
