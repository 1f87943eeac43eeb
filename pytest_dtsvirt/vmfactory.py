"""The core of the fixtures, usable without pytest: :class:`VmFactory` creates, boots, tracks
and stops VMs on a DUT; :class:`Settings` holds the plugin's resolved options.

From a plain script::

    settings = Settings(conf_dir="conf", duts_file=None, accel="tcg", boot_timeout=None,
                        keep_vm="never", hypervisor="kvm", cache_dir=None, run_id="...",
                        worker=None)
    dut = connect(load_duts(settings)[0])   # from pytest_dtsvirt.session.dut
    reap_leftovers(dut)
    factory = VmFactory.for_dut(dut, settings)
    try:
        vm = factory.start("vm0", suite="vxlan_sample")
        print(factory.guest(vm).send_expect("uname -r", "# "))
    finally:
        factory.close()
        dut.close()

The pytest fixtures (:mod:`pytest_dtsvirt.fixtures`) are thin layers over this module.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_dtsvirt import backends
from pytest_dtsvirt.errors import ConfigError, DtsvirtError, VmDied, VmError, VmStartError
from pytest_dtsvirt.guest import DEFAULT_SSH
from pytest_dtsvirt.hypervisor import Hypervisor, VmOptions
from pytest_dtsvirt.marker import VmRequest, merge, parse_marker
from pytest_dtsvirt.runtime import parallel, rundir

if TYPE_CHECKING:
    from pytest_dtsvirt.runtime.snapshot import SnapshotStore
    from pytest_dtsvirt.session.dut import Dut, VmDut
    from pytest_dtsvirt.session.dutconfig import DutConfig

log = logging.getLogger("pytest_dtsvirt")

@dataclass(frozen=True)
class Settings:
    """The plugin's options after ini/option resolution (built in ``pytest_configure``)."""

    conf_dir: str
    duts_file: str | None
    accel: str
    boot_timeout: float | None
    keep_vm: str  # never | failed | always
    hypervisor: str
    cache_dir: str | None
    run_id: str
    worker: str | None

    conf_dir_given: bool = False  # --dtsvirt-conf-dir / ini set: no lookup near the test
    guest_ssh: str = DEFAULT_SSH  # SSH server of the default test guest
    fresh: str = "restore"  # restore | boot: how a fresh (not session) VM starts

    def vm_options(self, suite: str, test_dir: str | None = None,
                   snapshots: Any = None, demand: int | None = None) -> VmOptions:
        return VmOptions(conf_dir=self.conf_dir_for(suite, test_dir), accel=self.accel,
                         boot_timeout=self.boot_timeout, cache_dir=self.cache_dir,
                         guest_ssh=self.guest_ssh,
                         run_id=self.run_id, snapshots=snapshots, snapshot_demand=demand)

    def conf_dir_for(self, suite: str, test_dir: str | None) -> str:
        """The configured conf dir; without one, ``conf/`` next to the test module when it
        holds ``<suite>.cfg``, else ``conf/`` in the rootdir."""
        if not self.conf_dir_given and test_dir is not None:
            near = os.path.join(test_dir, "conf")
            if os.path.isfile(os.path.join(near, f"{suite}.cfg")):
                return near
        return self.conf_dir


def _key(vm: Hypervisor) -> str:
    return f"{vm.suite}/{vm.vm_name}"


@dataclass
class _Root:
    """State shared by a session factory and its children."""

    dut: Dut
    settings: Settings
    failed: dict[tuple[str, VmRequest], tuple[str, VmStartError]] = field(default_factory=dict)
    shared: dict[tuple[str, str], Hypervisor] = field(default_factory=dict)
    guests: dict[int, VmDut] = field(default_factory=dict)
    requests: dict[int, tuple[str, VmRequest]] = field(default_factory=dict)
    keep: set[int] = field(default_factory=set)
    session: VmFactory | None = None
    snapshots: SnapshotStore | None = None

    def snapshot_store(self) -> SnapshotStore | None:
        """The run's snapshot store on this DUT (``--dtsvirt-fresh restore``, kvm only)."""
        if self.settings.fresh != "restore" or self.settings.hypervisor != "kvm":
            return None
        if self.snapshots is None:
            from pytest_dtsvirt.runtime.snapshot import SnapshotStore

            self.snapshots = SnapshotStore(self.dut.session, self.dut.config.workdir,
                                           self.settings.run_id)
        return self.snapshots


class VmFactory:
    """Creates, boots and tracks VMs on this worker's DUT.

    ``create()`` returns a configured, unstarted VM (call ``set_vm_*`` on it, then
    ``boot(vm)``); ``start()`` does both. Every VM is stopped by :meth:`close` (session end
    for ``vm_factory``, test end for ``function_vm_factory``) unless ``--dtsvirt-keep-vm``
    keeps it. A VM whose boot failed is not booted again in this session with the same
    (suite, name, parameters): :class:`VmStartError` is raised at once with the first cause.
    """

    def __init__(self, root: _Root, *, default_suite: str | None = None,
                 markers: tuple[VmRequest, ...] = (), label: str = "session",
                 on_use: Callable[[Hypervisor], None] | None = None,
                 test_dir: str | None = None, demand: int | None = None) -> None:
        self._root = root
        self.test_dir = test_dir
        #: how many tests of the session ask for VMs like this factory's (None: unknown);
        #: with 1 a VM that finds no snapshot boots cold without saving one
        self.demand = demand
        self._vms: list[Hypervisor] = []
        self.default_suite = default_suite
        self.markers = markers
        self.label = label
        self._on_use = on_use
        #: when each VM of the last :meth:`boot_all` booted
        self.last_boot_windows: list[parallel.BootWindow[Hypervisor]] = []
        if root.session is None:
            root.session = self

    @classmethod
    def for_dut(cls, dut: Dut, settings: Settings, *, label: str = "session") -> VmFactory:
        """A root factory for ``dut`` (what the ``vm_factory`` fixture is); close it when
        done."""
        return cls(_Root(dut=dut, settings=settings), label=label)

    @property
    def dut(self) -> Dut:
        """The DUT the VMs run on."""
        return self._root.dut

    @property
    def vms(self) -> tuple[Hypervisor, ...]:
        """The VMs this factory tracks (not yet stopped), in creation order."""
        return tuple(self._vms)

    def child(self, *, default_suite: str | None, markers: tuple[VmRequest, ...] = (),
              label: str = "test", on_use: Callable[[Hypervisor], None] | None = None,
              test_dir: str | None = None, demand: int | None = None) -> VmFactory:
        """A factory sharing this one's DUT and boot-failure memo, with its own VM list
        (``demand``: see :attr:`demand`)."""
        return VmFactory(self._root, default_suite=default_suite, markers=markers,
                         label=label, on_use=on_use, test_dir=test_dir, demand=demand)

    # -- creating and booting ----------------------------------------------------------------
    def request_for(self, name: str = "vm0", suite: str | None = None,
                    **params: Any) -> tuple[str, VmRequest]:
        """The suite and merged parameter entries a VM ``name`` gets from this factory's
        markers plus ``params`` (validated like a marker)."""
        extra = parse_marker((), {"name": name, "suite": suite, **params},
                             where=f"{self.label} factory")
        merged = merge((*self.markers, extra), name)
        suite_name = suite or merged.suite or self.default_suite
        if suite_name is None:
            raise ConfigError("no suite: pass suite=... (vm_factory is session-wide and does "
                              "not know the test module)")
        return suite_name, merged

    def create(self, name: str = "vm0", suite: str | None = None, **params: Any) -> Hypervisor:
        """A configured, unstarted VM ``name`` of ``suite`` (``conf/<suite>.cfg``) with the
        markers' and ``params``' entries applied, tracked by this factory."""
        suite_name, req = self.request_for(name, suite, **params)
        return self._create(suite_name, req)

    def _create(self, suite: str, req: VmRequest, test_dir: str | None = None, *,
                fresh: bool = True) -> Hypervisor:
        settings = self._root.settings
        store = self._root.snapshot_store() if fresh else None
        vm = backends.create(settings.hypervisor, self._root.dut, req.name, suite,
                             settings.vm_options(suite, test_dir or self.test_dir, store,
                                                 self.demand if fresh else None))
        for key, options in req.calls():
            vm.set_vm_param(key, **options)
        self._root.requests[id(vm)] = (suite, req)
        self._vms.append(vm)
        return vm

    def vm_options(self, suite: str, *, fresh: bool = True,
                   test_dir: str | None = None) -> VmOptions:
        """The options a VM of ``suite`` made here gets: the plugin's settings, the conf
        dir lookup beside the test module, and (``fresh``) the run's snapshot store."""
        store = self._root.snapshot_store() if fresh else None
        return self._root.settings.vm_options(suite, test_dir or self.test_dir, store)

    def adopt(self, vm: Hypervisor) -> None:
        """Track a VM made outside the factory (a ``QEMUKvm(dut, name, suite)`` a test makes
        itself, :mod:`pytest_dtsvirt.qemu.kvm`): this factory's markers for its name apply
        to it and it is stopped when the factory closes, as if :meth:`create` made it."""
        suite, req = self.request_for(vm.vm_name, vm.suite)
        for key, options in req.calls():
            vm.set_vm_param(key, **options)
        self._root.requests[id(vm)] = (suite, req)
        self._vms.append(vm)

    def boot(self, vm: Hypervisor, *, where: str | None = None) -> VmDut:
        """Start ``vm`` (created by this factory); return its guest DUT. ``where`` names
        the requester in a memoized boot failure (default: this factory's label)."""
        suite, req = self._root.requests.get(id(vm), (vm.suite, VmRequest(vm.vm_name)))
        memo_key = (suite, req)
        earlier = self._root.failed.get(memo_key)
        if earlier is not None:
            where, cause = earlier
            self._forget(vm)
            raise VmStartError(
                f"{req.describe()} of suite {suite} failed to boot earlier in this session "
                f"({where}); not booting it again. First cause: {cause}",
                cause.diagnostics) from cause
        log.info("booting %s of suite %s on %s", req.describe(), suite,
                 getattr(self._root.dut, "name", "the DUT"))
        began = time.monotonic()
        try:
            guest = vm.start()
        except VmStartError as err:
            self._root.failed[memo_key] = (where or self.label, err)
            self._forget(vm)
            log.error("%s of suite %s failed to boot: %s", req.name, suite, err)
            raise
        except BaseException:
            self._forget(vm)
            raise
        self._root.guests[id(vm)] = guest
        timings = ", ".join(f"{k} {v:.2f}" for k, v in vm.phase_timings.items())
        origin = getattr(vm, "restored_from", None)
        how = f"restored from {origin} in" if origin else "booted in"
        log.info("%s of suite %s %s %.2f s (%s)", req.name, suite, how,
                 time.monotonic() - began, timings)
        if self._on_use is not None:
            self._on_use(vm)
        return guest

    def start(self, name: str = "vm0", suite: str | None = None, **params: Any) -> Hypervisor:
        """``create()`` then ``boot()``: a started VM (its guest DUT: :meth:`guest`)."""
        vm = self.create(name, suite, **params)
        self.boot(vm)
        return vm

    def start_many(self, vms: Sequence[str | Mapping[str, Any]], suite: str | None = None
                   ) -> list[Hypervisor]:
        """Create and boot several VMs at once (each boot in its own thread), in order.

        An item is a VM name or a mapping of :meth:`create`'s arguments (``name``,
        ``suite``, marker parameters). If one fails, the others are stopped and a
        :class:`VmStartError` names the VM(s) that failed and why."""
        created: list[Hypervisor] = []
        try:
            for item in vms:
                args: dict[str, Any] = ({"name": item} if isinstance(item, str)
                                        else dict(item))
                args.setdefault("suite", suite)
                created.append(self.create(**args))
        except BaseException:
            for vm in created:
                self._forget(vm)
            raise
        return self.boot_all(created)

    def boot_all(self, vms: Sequence[Hypervisor]) -> list[Hypervisor]:
        """:meth:`boot` every VM of ``vms`` (created by this factory) at once; the same
        guarantees as :meth:`start_many`. The boot windows are in :attr:`last_boot_windows`."""
        self.last_boot_windows = parallel.boot_many(vms, self.boot, self.stop)
        return list(vms)

    def guest(self, vm: Hypervisor) -> VmDut:
        """The guest DUT of a started ``vm``."""
        try:
            return self._root.guests[id(vm)]
        except KeyError:
            raise VmError(f"{_key(vm)} is not started") from None

    def shared(self, name: str = "vm0", suite: str | None = None) -> Hypervisor:
        """The session-wide VM ``name`` of ``suite``, booted on first use (no markers
        apply); stopped when the root factory closes."""
        suite_name = suite or self.default_suite
        if suite_name is None:
            raise ConfigError("no suite: pass suite=...")
        key = (suite_name, name)
        vm = self._root.shared.get(key)
        if vm is not None:
            cause = self.drop_if_died(vm)
            if cause is not None:
                log.warning("the session VM %s of suite %s died since its last use: %s; "
                            "booting it again", name, suite_name, cause)
                vm = None
        if vm is None:
            session = self._root.session or self
            vm = session._create(suite_name, VmRequest(name=name), self.test_dir, fresh=False)
            session.boot(vm, where=self.label)
            self._root.shared[key] = vm
        if self._on_use is not None:
            self._on_use(vm)
        return vm

    def drop_if_died(self, vm: Hypervisor) -> str | None:
        """If ``vm`` died (qemu gone or stopped, DUT link dropped): stop tracking it (what
        is left of it is cleaned up; the next :meth:`shared` boots a new one) and return the
        cause; None while it runs. Uses the backend's optional ``death_reason()``."""
        cause = death_of(vm)
        if cause is None:
            return None
        for key, shared in list(self._root.shared.items()):
            if shared is vm:
                del self._root.shared[key]
        owner = self._root.session or self
        try:
            owner.stop(vm)
        except DtsvirtError as err:  # VmDied repeats the cause; anything else is news
            if not isinstance(err, VmDied):
                log.warning("cleaning up %s after it died: %s", _key(vm), err)
        return cause

    # -- stopping ------------------------------------------------------------------------------
    def keep(self, vm: Hypervisor) -> None:
        """Leave ``vm`` running when its factory closes (``--dtsvirt-keep-vm``)."""
        self._root.keep.add(id(vm))

    def is_kept(self, vm: Hypervisor) -> bool:
        return self._root.settings.keep_vm == "always" or id(vm) in self._root.keep

    def _untrack(self, vm: Hypervisor) -> None:
        if vm in self._vms:
            self._vms.remove(vm)
        self._root.guests.pop(id(vm), None)
        self._root.requests.pop(id(vm), None)

    def _forget(self, vm: Hypervisor) -> None:
        self._untrack(vm)
        try:
            vm.stop()
        except DtsvirtError as err:  # a failed start leaves nothing; be sure anyway
            log.warning("cleaning up %s after a failed start: %s", _key(vm), err)

    def stop(self, vm: Hypervisor) -> None:
        """Stop ``vm`` now (even if kept) and stop tracking it."""
        self._untrack(vm)
        log.info("stopping %s", _key(vm))
        vm.stop()

    def close(self) -> None:
        """Stop every tracked VM (newest first) except kept ones; each is tried even if an
        earlier one fails, then the first error is raised."""
        vms = list(self._vms)
        if self._root.session is self:
            self._root.shared.clear()
        errors: list[BaseException] = []
        interrupted: KeyboardInterrupt | None = None
        for vm in reversed(vms):
            if self.is_kept(vm):
                reach = _keep(vm)
                log.warning("keeping %s running: %s", _key(vm), reach)
                self._vms.remove(vm)
                continue
            try:
                self.stop(vm)
            except KeyboardInterrupt as exc:  # stop the others too, then let it go on
                interrupted = exc
            except Exception as err:
                log.error("stopping %s failed: %s", _key(vm), err)
                errors.append(err)
        self._vms.clear()
        if self._root.session is self and self._root.snapshots is not None:
            self._root.snapshots.close()
            self._root.snapshots = None
        if interrupted is not None:
            raise interrupted
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise VmError(f"{len(errors)} VM(s) failed to stop; first: {errors[0]}") \
                from errors[0]


def death_of(vm: Hypervisor) -> str | None:
    """Why ``vm`` died while in use, from the backend's optional ``death_reason()``; None
    when it runs (or the backend cannot tell)."""
    reason = getattr(vm, "death_reason", None)
    if reason is None:
        return None
    try:
        cause = reason()
    except Exception as err:  # a broken probe must not end the session
        log.debug("death_reason() of %s failed: %s", _key(vm), err)
        return None
    return None if cause is None else str(cause)


def _keep(vm: Hypervisor) -> str:
    """Tell the backend to leave ``vm`` running past this process (``keep()``, an optional
    backend method: the kvm supervisor otherwise ends qemu when pytest exits); how to reach
    it."""
    try:
        return vm.keep()
    except Exception as err:
        log.error("keeping %s failed: %s", _key(vm), err)
    return _reach(vm)


def _reach(vm: Hypervisor) -> str:
    try:
        diag = vm.diagnostics()
    except Exception as err:
        return f"(diagnostics failed: {err})"
    return diag.get("reach") or "(the backend gave no reach info; see the diagnostics)"


def diagnostics_of(vm: Hypervisor) -> dict[str, str]:
    """``vm.diagnostics()`` completed with argv and phase timings; never raises."""
    try:
        diag = dict(vm.diagnostics())
    except Exception as err:
        diag = {"diagnostics error": f"{type(err).__name__}: {err}"}
    if not any("argv" in title for title in diag):
        try:
            diag["argv"] = shlex.join(vm.argv)
        except Exception as err:
            diag["argv"] = f"(not available: {err})"
    if not any("phase" in title for title in diag):
        try:
            diag["phase timings"] = "\n".join(
                f"{k}: {v:.3f} s" for k, v in vm.phase_timings.items()) or "(none)"
        except Exception as err:
            diag["phase timings"] = f"(not available: {err})"
    return diag


def load_duts(settings: Settings) -> list[DutConfig]:
    """The DUT list: the ``--dtsvirt-duts`` file, or this host."""
    from pytest_dtsvirt.session import dutconfig

    if not settings.duts_file:
        return [dutconfig.local_dut_config()]
    return list(dutconfig.load_dut_configs(settings.duts_file))  # never empty: it raises


def reap_leftovers(dut: Dut) -> None:
    """Remove leftovers of crashed runs on the DUT (never live runs of other workers)."""
    try:
        for path in rundir.reap(dut.session, dut.config.workdir,
                                local=dut.config.is_local):
            log.warning("removed a leftover of a crashed run on %s: %s", dut.config.name, path)
    except DtsvirtError as err:
        log.warning("reaping leftovers on %s failed: %s", getattr(dut, "name", dut), err)


__all__ = ["Settings", "VmFactory", "death_of", "diagnostics_of", "load_duts",
           "reap_leftovers"]
