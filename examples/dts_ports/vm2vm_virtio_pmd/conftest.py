"""The vm2vm_virtio_pmd port (legacy TestSuite_vm2vm_virtio_pmd.py with the compat layer).

The host side is dpdk-testpmd on two vhost-user ports (``set fwd mac``); each guest is the
DPDK test guest running testpmd on its virtio port, one ``txonly``, one ``rxonly``.
"""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session", autouse=True)
def _host_testpmd() -> None:
    if shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed on the DUT (Debian package dpdk-dev)")
