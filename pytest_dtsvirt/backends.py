"""The hypervisor backends of this package, loaded (and so registered) only when selected.

:mod:`pytest_dtsvirt.hypervisor` defines the interface and the registry and knows no backend;
each backend module registers itself when imported. This module sits above both: it imports
the built-in backend a run selects, then creates the VM through the registry, so a backend
of another package (``hypervisor.register``) works the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_dtsvirt import hypervisor
from pytest_dtsvirt.hypervisor import Hypervisor, VmOptions

if TYPE_CHECKING:
    from pytest_dtsvirt.session.dut import Dut


def _load_kvm() -> None:
    from pytest_dtsvirt.qemu import kvm  # noqa: F401  (registers "kvm")


def _load_fake() -> None:
    from pytest_dtsvirt.testing import fake  # noqa: F401  (registers "fake")


#: built-in backend name -> what imports (and so registers) it
BUILT_IN: dict[str, Callable[[], None]] = {"kvm": _load_kvm, "fake": _load_fake}


def create(kind: str, dut: Dut, vm_name: str, suite: str, options: VmOptions) -> Hypervisor:
    """A new, not yet started VM of backend ``kind``; ConfigError naming the registered
    backends if there is no such backend."""
    if kind not in hypervisor.registered():
        # an unknown kind loads every built-in, so the error lists them all
        for load in [BUILT_IN[kind]] if kind in BUILT_IN else BUILT_IN.values():
            load()
    return hypervisor.create(kind, dut, vm_name, suite, options)
