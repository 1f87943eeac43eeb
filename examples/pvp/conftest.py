"""Fixtures of the PVP example: the host's vhost-user testpmd, the DPDK guest on it, and
testpmd in the guest.

PVP (physical - virtual - physical) is the canonical DPDK virtualization loopback of the
legacy pvp_* suites: the host's testpmd forwards between a port and a vhost-user port, the
guest's testpmd forwards back on its virtio port. With no physical port here, the host side
is the vhost-user port alone (``io`` forwarding sends back what it receives), and the
guest's ``start tx_first`` puts the packets into the loop.

Teardown runs as the legacy suites do it: ``vm_dut.kill_all()`` ends the guest's testpmd,
the VM stops, then the host's testpmd is ended by PID and its socket removed.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import pytest

from pytest_dtsvirt import Dut, GuestTestpmd, TestpmdBackend, VmDut, VmFactory

log = logging.getLogger(__name__)

#: the MAC of the guest's virtio port
VM_MAC = "00:00:20:00:00:30"


@pytest.fixture
def vhost_backend(dut: Dut) -> Iterator[TestpmdBackend]:
    """dpdk-testpmd on the DUT with one vhost-user port, bound and ready."""
    if dut.config.is_local and shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed on the DUT (Debian package dpdk-dev)")
    with TestpmdBackend(dut.session, ports=1) as backend:
        try:
            yield backend
        finally:
            log.info("host testpmd output (tail):\n%s", backend.transcript()[-3000:])


@pytest.fixture
def pvp_vm_dut(vhost_backend: TestpmdBackend, function_vm_factory: VmFactory) -> VmDut:
    """``vm0`` of ``conf/pvp.cfg`` (the DPDK guest) with a virtio port on the host's
    vhost-user socket, started."""
    vm = function_vm_factory.create("vm0")
    vm.set_vm_device(driver="vhost-user", opt_path=vhost_backend.socket_paths[0],
                     opt_mac=VM_MAC)
    return function_vm_factory.boot(vm)


@pytest.fixture
def guest_testpmd(pvp_vm_dut: VmDut) -> Iterator[GuestTestpmd]:
    """testpmd in the guest on its virtio port (bound to uio_pci_generic), link up; ended by
    ``kill_all`` at teardown."""
    pvp_vm_dut.bind_interfaces_linux("uio_pci_generic")
    pmd = pvp_vm_dut.testpmd()
    try:
        yield pmd
    finally:
        pvp_vm_dut.kill_all()
        pmd.close()
