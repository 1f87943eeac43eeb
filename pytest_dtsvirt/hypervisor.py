"""The hypervisor interface and its registry of backends.

A hypervisor object is one VM on one DUT, built from a suite config, in the reference's
shape: ``vm = QEMUKvm(dut, "vm0", "vxlan_sample")``, optional ``vm.set_vm_device(**opts)``,
``vm_dut = vm.start()``, ``vm.stop()``. The pytest layer only uses this interface, so another
backend (libvirt) can be registered without touching it. What the ``vm`` fixtures hand a
test is this type: besides the abstract methods it has ``dut``, ``pci_maps``,
``get_pci_mappings()``, ``qmp``, ``agent``, ``monitor_socket``, ``run_dir`` and
``hostfwd_port``; a backend without QMP or an agent raises :class:`VmError` for those.

:func:`current_home` tells a VM made by hand inside a pytest test which factory it belongs
to; the compat layer installs how that is found (its lookup serves both its legacy ``VM()``
and the plugin's own ``QEMUKvm``), so this layer never imports the pytest side.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from pytest_dtsvirt.errors import ConfigError, VmError
from pytest_dtsvirt.guest import DEFAULT_SSH

if TYPE_CHECKING:
    from pytest_dtsvirt.qemu.qga import GuestAgent
    from pytest_dtsvirt.qemu.qmp import Qmp
    from pytest_dtsvirt.session.dut import Dut, VmDut


@dataclass(frozen=True)
class VmOptions:
    """How the framework runs VMs (plugin options / CLI flags), independent of the cfg."""

    conf_dir: str | None = None  # where <suite>.cfg and virt_global.cfg live
    cfg_path: str | None = None  # an explicit cfg file (overrides conf_dir/<suite>.cfg)
    accel: str = "auto"  # auto | kvm | tcg
    boot_timeout: float | None = None  # overrides the cfg's start wait_seconds (default 120)
    cache_dir: str | None = None  # test guest cache
    guest_ssh: str = DEFAULT_SSH  # SSH server of the default test guest (SSH_SERVERS)
    run_id: str | None = None  # tags run dirs so the reaper knows what is ours
    #: the run's snapshot store (runtime/snapshot.py): fresh guests restore from it; None
    #: boots cold (session VMs, ``--dtsvirt-fresh boot``)
    snapshots: Any = None
    #: how many tests of the session want a VM of this signature (None: unknown); a shape
    #: wanted once is not saved as a snapshot (a hint: see ``fixtures.fresh_demand``)
    snapshot_demand: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class Hypervisor(abc.ABC):
    """One VM of a suite on a DUT."""

    #: the VM name (section name in the suite cfg)
    vm_name: str
    #: the suite name (``conf/<suite>.cfg``)
    suite: str
    #: the DUT the VM runs on
    dut: Dut
    #: guest PCI address of each passed-through device, by device id (read from QMP at start)
    pci_maps: Mapping[str, str] = MappingProxyType({})

    def get_pci_mappings(self) -> list[dict[str, str]]:
        """The reference's form: ``[{"hostpci": "08:10.0", "guestpci": "00:04.0"}, ...]``."""
        return []

    @property
    def qmp(self) -> Qmp:
        """The VM's QMP client (a started VM); VmError if the backend has none."""
        raise VmError(f"{self.vm_name}: the {type(self).__name__} backend has no QMP")

    @property
    def agent(self) -> GuestAgent:
        """The guest agent client (a started VM); VmError if the backend has none."""
        raise VmError(f"{self.vm_name}: the {type(self).__name__} backend has no guest agent")

    @property
    def monitor_socket(self) -> str | None:
        """The HMP monitor socket on the DUT (``nc -U`` it by hand), if any."""
        return None

    @property
    def run_dir(self) -> str | None:
        """The VM's private directory on the DUT (sockets, logs), while it runs."""
        return None

    @property
    def hostfwd_port(self) -> int | None:
        """The DUT-loopback port forwarded to the guest's SSH port, while it runs."""
        return None

    @abc.abstractmethod
    def set_vm_param(self, key: str, **options: str) -> None:
        """Add (``device``, ``net``) or replace (others) a parameter before ``start()``.

        ``vm.set_vm_device(driver="vhost-user", opt_path=p)`` is sugar for
        ``vm.set_vm_param("device", driver="vhost-user", opt_path=p)``.
        """

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("set_vm_"):
            key = name[len("set_vm_"):]

            def setter(**options: str) -> None:
                self.set_vm_param(key, **options)

            return setter
        raise AttributeError(name)

    @abc.abstractmethod
    def start(self) -> VmDut:
        """Boot the VM and return its guest DUT; VmStartError (with diagnostics) on failure.
        A failed start leaves nothing running."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Power the guest down and remove everything the VM created; idempotent."""

    @abc.abstractmethod
    def keep(self) -> str:
        """Leave the VM running after this process ends (keep-on-failure, ``--keep``);
        returns how a human reaches it."""

    @abc.abstractmethod
    def diagnostics(self) -> dict[str, str]:
        """Title -> text: argv, qemu log, console tail, QMP status, phase timings..."""

    @property
    @abc.abstractmethod
    def phase_timings(self) -> Mapping[str, float]:
        """Boot phase -> seconds, in order (qemu, qmp, agent, host_connect, ssh)."""

    @property
    @abc.abstractmethod
    def argv(self) -> list[str]:
        """The qemu command line (valid after start() began)."""


HypervisorFactory = Callable[["Dut", str, str, VmOptions], Hypervisor]

_REGISTRY: dict[str, HypervisorFactory] = {}


def register(name: str, factory: HypervisorFactory) -> None:
    """Register a hypervisor backend under ``name`` (the built-in ``kvm`` and ``fake``
    register themselves when :mod:`pytest_dtsvirt.backends` loads them)."""
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """The names of the registered backends."""
    return sorted(_REGISTRY)


def create(kind: str, dut: Dut, vm_name: str, suite: str, options: VmOptions) -> Hypervisor:
    """A new, not yet started VM of registered backend ``kind``
    (:func:`pytest_dtsvirt.backends.create` loads a built-in one first)."""
    try:
        factory = _REGISTRY[kind]
    except KeyError:
        raise ConfigError(f"unknown hypervisor {kind!r}; registered: {sorted(_REGISTRY)}")
    return factory(dut, vm_name, suite, options)


class VmHome(Protocol):
    """Where a VM made by hand inside a pytest test belongs (the test's
    :class:`~pytest_dtsvirt.vmfactory.VmFactory`): its options, and its tracking."""

    @property
    def dut(self) -> Dut: ...

    def vm_options(self, suite: str, *, fresh: bool = True,
                   test_dir: str | None = None) -> VmOptions: ...

    def adopt(self, vm: Hypervisor) -> None: ...


_HOME_FINDER: list[Callable[[], VmHome | None]] = []


def set_home_finder(finder: Callable[[], VmHome | None]) -> None:
    """Install how :func:`current_home` finds the running test's factory (the compat
    layer's :func:`pytest_dtsvirt.compat.context.current_factory`, when pytest loads it)."""
    _HOME_FINDER[:] = [finder]


def current_home() -> VmHome | None:
    """The factory a ``QEMUKvm(dut, name, suite)`` made now belongs to; None outside pytest
    (nothing installed a finder) or outside a test."""
    return _HOME_FINDER[0]() if _HOME_FINDER else None

