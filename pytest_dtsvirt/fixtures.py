"""The fixtures of pytest-dtsvirt (design section 6), after pytest's ``tmpdir.py``: one factory
(:class:`VmFactory`, fixture ``vm_factory``) that creates, boots, tracks and stops VMs, and
thin fixtures on top of it.

=======================  ========  ====================================================
fixture                  scope     what
=======================  ========  ====================================================
``dut_config``           session   this worker's DUT config entry (xdist: gwN -> N mod K)
``dut``                  session   that DUT, connected (reaped of leftovers), closed at end
``vm_factory``           session   :class:`VmFactory`; its VMs are stopped at session end
``function_vm_factory``  function  a child factory: applies the test's ``vm`` markers,
                                   stops its VMs at the end of the test
``vm`` / ``vm_dut``      function  a fresh guest per test: the started hypervisor / its
                                   guest DUT
``session_vm`` /         function  one guest per (suite, vm name) for the whole session,
``session_vm_dut``       accessor  booted on first use, stopped at session end
=======================  ========  ====================================================
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest

from pytest_dtsvirt import hypervisor
from pytest_dtsvirt.errors import ConfigError, DtsvirtError, Location, VmError, VmStartError
from pytest_dtsvirt.hypervisor import Hypervisor, VmOptions
from pytest_dtsvirt.marker import MARKER, VmRequest, default_suite, merge, parse_marker
from pytest_dtsvirt.runtime import rundir
from pytest_dtsvirt.xdist_duts import assign

if TYPE_CHECKING:
    from pytest_dtsvirt.session.dut import Dut, VmDut
    from pytest_dtsvirt.session.dutconfig import DutConfig

log = logging.getLogger("pytest_dtsvirt")

#: backends that live in this package but are imported only when selected
_LAZY_BACKENDS = {"fake": "pytest_dtsvirt.testing.fake"}
#: the fixtures that give a test its own VM (markers apply to them)
FUNCTION_VM_FIXTURES = frozenset({"vm", "vm_dut", "function_vm_factory"})
SESSION_VM_FIXTURES = frozenset({"session_vm", "session_vm_dut"})


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

    def vm_options(self, suite: str, test_dir: str | None = None) -> VmOptions:
        return VmOptions(conf_dir=self.conf_dir_for(suite, test_dir), accel=self.accel,
                         boot_timeout=self.boot_timeout, cache_dir=self.cache_dir,
                         run_id=self.run_id)

    def conf_dir_for(self, suite: str, test_dir: str | None) -> str:
        """The configured conf dir; without one, ``conf/`` next to the test module when it
        holds ``<suite>.cfg``, else ``conf/`` in the rootdir."""
        if not self.conf_dir_given and test_dir is not None:
            near = os.path.join(test_dir, "conf")
            if os.path.isfile(os.path.join(near, f"{suite}.cfg")):
                return near
        return self.conf_dir


SETTINGS_KEY = pytest.StashKey[Settings]()
#: the session's root factory (set by the vm_factory fixture), for the report hooks
FACTORY_KEY = pytest.StashKey["VmFactory"]()
#: the VMs a test used, for report sections and junit properties
USED_KEY = pytest.StashKey[list[Hypervisor]]()


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
    kept: list[Hypervisor] = field(default_factory=list)
    session: VmFactory | None = None


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
                 test_dir: str | None = None) -> None:
        self._root = root
        self.test_dir = test_dir
        self._vms: list[Hypervisor] = []
        self.default_suite = default_suite
        self.markers = markers
        self.label = label
        self._on_use = on_use
        if root.session is None:
            root.session = self

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
              test_dir: str | None = None) -> VmFactory:
        """A factory sharing this one's DUT and boot-failure memo, with its own VM list."""
        return VmFactory(self._root, default_suite=default_suite, markers=markers,
                         label=label, on_use=on_use, test_dir=test_dir)

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

    def _create(self, suite: str, req: VmRequest, test_dir: str | None = None) -> Hypervisor:
        settings = self._root.settings
        if settings.hypervisor in _LAZY_BACKENDS:
            __import__(_LAZY_BACKENDS[settings.hypervisor])
        vm = hypervisor.create(settings.hypervisor, self._root.dut, req.name, suite,
                               settings.vm_options(suite, test_dir or self.test_dir))
        for key, options in req.calls():
            vm.set_vm_param(key, **options)
        self._root.requests[id(vm)] = (suite, req)
        self._vms.append(vm)
        return vm

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
        log.info("%s of suite %s ready in %.2f s (%s)", req.name, suite,
                 time.monotonic() - began, timings)
        if self._on_use is not None:
            self._on_use(vm)
        return guest

    def start(self, name: str = "vm0", suite: str | None = None, **params: Any) -> Hypervisor:
        """``create()`` then ``boot()``: a started VM (its guest DUT: :meth:`guest`)."""
        vm = self.create(name, suite, **params)
        self.boot(vm)
        return vm

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
        if vm is None:
            session = self._root.session or self
            vm = session._create(suite_name, VmRequest(name=name), self.test_dir)
            session.boot(vm, where=self.label)
            self._root.shared[key] = vm
        if self._on_use is not None:
            self._on_use(vm)
        return vm

    # -- stopping ------------------------------------------------------------------------------
    def keep(self, vm: Hypervisor) -> None:
        """Leave ``vm`` running when its factory closes (``--dtsvirt-keep-vm``)."""
        self._root.keep.add(id(vm))

    def is_kept(self, vm: Hypervisor) -> bool:
        return self._root.settings.keep_vm == "always" or id(vm) in self._root.keep

    def _forget(self, vm: Hypervisor) -> None:
        if vm in self._vms:
            self._vms.remove(vm)
        self._root.guests.pop(id(vm), None)
        self._root.requests.pop(id(vm), None)
        try:
            vm.stop()
        except DtsvirtError as err:  # a failed start leaves nothing; be sure anyway
            log.warning("cleaning up %s after a failed start: %s", _key(vm), err)

    def stop(self, vm: Hypervisor) -> None:
        """Stop ``vm`` now (even if kept) and stop tracking it."""
        if vm in self._vms:
            self._vms.remove(vm)
        self._root.guests.pop(id(vm), None)
        self._root.requests.pop(id(vm), None)
        log.info("stopping %s", _key(vm))
        vm.stop()

    def close(self) -> None:
        """Stop every tracked VM (newest first) except kept ones; each is tried even if an
        earlier one fails, then the first error is raised."""
        vms = list(self._vms)
        if self._root.session is self:
            self._root.shared.clear()
        errors: list[BaseException] = []
        for vm in reversed(vms):
            if self.is_kept(vm):
                reach = _keep(vm)
                log.warning("keeping %s running: %s", _key(vm), reach)
                self._root.kept.append(vm)
                self._vms.remove(vm)
                continue
            try:
                self.stop(vm)
            except Exception as err:
                log.error("stopping %s failed: %s", _key(vm), err)
                errors.append(err)
        self._vms.clear()
        if errors:
            raise VmError(f"{len(errors)} VM(s) failed to stop; first: {errors[0]}") \
                from errors[0]


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


# ---- the fixtures -------------------------------------------------------------------------

def _settings(config: pytest.Config) -> Settings:
    return config.stash[SETTINGS_KEY]


def _fail(err: BaseException) -> BaseException:
    """A short setup error (no deep traceback) for a framework error; chained to it."""
    exc = pytest.fail.Exception(f"{type(err).__name__}: {err}", pytrace=False)
    exc.dtsvirt_cause = err  # type: ignore[attr-defined]  # read by the report hook
    return exc


def load_duts(settings: Settings) -> list[DutConfig]:
    """The DUT list: the ``--dtsvirt-duts`` file, or this host."""
    from pytest_dtsvirt.session import dutconfig

    if not settings.duts_file:
        return [dutconfig.local_dut_config()]
    configs = list(dutconfig.load_dut_configs(settings.duts_file))
    if not configs:
        raise ConfigError("the DUT config lists no DUT", Location(settings.duts_file))
    return configs


@pytest.fixture(scope="session")
def dut_config(pytestconfig: pytest.Config) -> DutConfig:
    """The DUT config entry this process uses: with ``pytest -n K``, worker ``gwN`` takes
    entry ``N mod len(duts)`` of ``--dtsvirt-duts``; without xdist the first (default: this
    host)."""
    settings = _settings(pytestconfig)
    try:
        return assign(load_duts(settings), settings.worker)
    except DtsvirtError as err:
        raise _fail(err) from None


def _reap(dut: Dut) -> None:
    """Remove leftovers of crashed runs on the DUT (never live runs of other workers)."""
    try:
        for path in rundir.reap(dut.session, dut.config.workdir):
            log.warning("removed a leftover of a crashed run on %s: %s", dut.config.name, path)
    except DtsvirtError as err:
        log.warning("reaping leftovers on %s failed: %s", getattr(dut, "name", dut), err)


@pytest.fixture(scope="session")
def dut(dut_config: DutConfig) -> Iterator[Dut]:
    """This worker's DUT (see ``dut_config``), connected for the whole session; leftovers of
    earlier crashed runs of this plugin on it are reaped first. Closed at session end."""
    from pytest_dtsvirt.session import dutconfig

    log.info("connecting to DUT %s", dut_config.name)
    try:
        host = dutconfig.connect(dut_config)
    except DtsvirtError as err:
        raise _fail(err) from None
    try:
        _reap(host)
        yield host
    finally:
        host.close()


@pytest.fixture(scope="session")
def vm_factory(dut: Dut, pytestconfig: pytest.Config) -> Iterator[VmFactory]:
    """The session's :class:`VmFactory`: ``vm_factory.create(name="vm0", suite=..., **params)``
    (unstarted), ``vm_factory.start(...)`` (started), ``vm_factory.guest(vm)`` (its VmDut),
    ``vm_factory.shared(name, suite)`` (the session VM). ``params`` use the marker's
    vocabulary. Every VM it made is stopped at session end (unless kept)."""
    factory = VmFactory(_Root(dut=dut, settings=_settings(pytestconfig)), label="session")
    pytestconfig.stash[FACTORY_KEY] = factory
    try:
        yield factory
    finally:
        factory.close()


def item_markers(node: pytest.Item) -> tuple[VmRequest, ...]:
    """The item's ``vm`` markers, validated, farthest (module) first."""
    marks = list(node.iter_markers(MARKER))
    return tuple(parse_marker(m.args, m.kwargs, where=node.nodeid) for m in reversed(marks))


def item_suite(node: pytest.Item) -> str:
    """The suite of a test: ``dtsvirt_suite`` of its module, else the module name without
    ``test_`` (markers may still name another suite)."""
    module = getattr(node, "module", None)
    if module is None:
        return default_suite(node.path.stem)
    return default_suite(module.__name__, getattr(module, "dtsvirt_suite", None))


def _use(node: pytest.Item) -> Callable[[Hypervisor], None]:
    def on_use(vm: Hypervisor) -> None:
        used = node.stash.setdefault(USED_KEY, [])
        if vm not in used:
            used.append(vm)
            for phase, seconds in vm.phase_timings.items():
                node.user_properties.append(
                    (f"dtsvirt.{vm.vm_name}.boot.{phase}", f"{seconds:.3f}"))
    return on_use


@pytest.fixture
def function_vm_factory(vm_factory: VmFactory, request: pytest.FixtureRequest,
                        ) -> Iterator[VmFactory]:
    """A :class:`VmFactory` for this test: the test's ``vm`` markers apply to the VMs it
    creates (by name), the suite defaults to the module's, and its VMs are stopped at the
    end of the test (unless ``--dtsvirt-keep-vm`` keeps them)."""
    node = request.node
    assert isinstance(node, pytest.Item)
    try:
        markers = item_markers(node)
        suite = item_suite(node)
    except ConfigError as err:
        raise _fail(err) from None
    factory = vm_factory.child(default_suite=suite, markers=markers, label=node.nodeid,
                               on_use=_use(node), test_dir=str(node.path.parent))
    try:
        yield factory
    finally:
        factory.close()


def _marker_vm_name(node: pytest.Item) -> str:
    closest = node.get_closest_marker(MARKER)
    if closest is None:
        return "vm0"
    return parse_marker(closest.args, closest.kwargs, where=node.nodeid).name


@pytest.fixture
def vm(function_vm_factory: VmFactory, request: pytest.FixtureRequest) -> Hypervisor:
    """A fresh, started VM for this test (the hypervisor object: ``pci_map``, monitor,
    agent, ``diagnostics()``); ``vm0`` of the module's suite unless a ``vm`` marker names
    another. Stopped at the end of the test."""
    node = request.node
    assert isinstance(node, pytest.Item)
    try:
        return function_vm_factory.start(_marker_vm_name(node))
    except DtsvirtError as err:
        raise _fail(err) from None


@pytest.fixture
def vm_dut(vm: Hypervisor, function_vm_factory: VmFactory) -> VmDut:
    """The guest DUT of ``vm`` (same API as ``dut``: ``send_expect``, ``kill_all``...)."""
    return function_vm_factory.guest(vm)


@pytest.fixture
def session_vm(vm_factory: VmFactory, request: pytest.FixtureRequest) -> Hypervisor:
    """The VM ``vm0`` of this module's suite shared by every test of the session that asks
    for it: booted on first use, stopped at session end. ``vm`` markers do not apply (using
    one with this fixture is an error). Session-scoped fixtures of your own can use
    ``vm_factory.shared(name, suite)`` for the same VM."""
    node = request.node
    assert isinstance(node, pytest.Item)
    try:
        suite = item_suite(node)
        factory = vm_factory.child(default_suite=suite, label=node.nodeid, on_use=_use(node),
                                   test_dir=str(node.path.parent))
        return factory.shared("vm0", suite)
    except DtsvirtError as err:
        raise _fail(err) from None


@pytest.fixture
def session_vm_dut(session_vm: Hypervisor, vm_factory: VmFactory) -> VmDut:
    """The guest DUT of ``session_vm``."""
    return vm_factory.guest(session_vm)


def setup_check(node: pytest.Item, fixturenames: Mapping[str, object] | list[str]) -> None:
    """Validate the item's markers before its fixtures run (ConfigError on misuse)."""
    markers = item_markers(node)
    names = set(fixturenames)
    if markers and names & SESSION_VM_FIXTURES and not names & FUNCTION_VM_FIXTURES:
        raise ConfigError(
            "@pytest.mark.vm does not apply to session_vm/session_vm_dut (one guest shared by "
            "the session); use vm/vm_dut (a fresh guest per test) for per-test parameters",
            Location(file=node.nodeid, key="@pytest.mark.vm"))


__all__ = ["FACTORY_KEY", "SETTINGS_KEY", "USED_KEY", "Settings", "VmFactory", "dut",
           "dut_config", "function_vm_factory", "session_vm", "session_vm_dut", "vm",
           "vm_dut", "vm_factory"]
