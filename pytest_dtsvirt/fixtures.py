"""The fixtures of pytest-dtsvirt, after pytest's ``tmpdir.py``: one factory
(:class:`~pytest_dtsvirt.vmfactory.VmFactory`, fixture ``vm_factory``) that creates, boots,
tracks and stops VMs, and thin fixtures on top of it. The factory itself lives in
:mod:`pytest_dtsvirt.vmfactory` (no pytest needed); its names are re-exported here.

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
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pytest

from pytest_dtsvirt.errors import ConfigError, DtsvirtError, Location, VmDied, VmError
from pytest_dtsvirt.hypervisor import Hypervisor
from pytest_dtsvirt.marker import MARKER, VmRequest, default_suite, parse_marker
from pytest_dtsvirt.vmfactory import (
    Settings,
    VmFactory,
    diagnostics_of,
    load_duts,
    reap_leftovers,
)
from pytest_dtsvirt.xdist_duts import assign

if TYPE_CHECKING:
    from pytest_dtsvirt.session.dut import Dut, VmDut
    from pytest_dtsvirt.session.dutconfig import DutConfig

log = logging.getLogger("pytest_dtsvirt")

#: the fixtures that give a test its own VM (markers apply to them)
FUNCTION_VM_FIXTURES = frozenset({"vm", "vm_dut", "function_vm_factory"})
SESSION_VM_FIXTURES = frozenset({"session_vm", "session_vm_dut"})

SETTINGS_KEY = pytest.StashKey[Settings]()
#: the session's root factory (set by the vm_factory fixture)
FACTORY_KEY = pytest.StashKey[VmFactory]()
#: the VMs a test used, for report sections and junit properties
USED_KEY = pytest.StashKey[list[Hypervisor]]()
#: each phase's report of a test, recorded by the plugin's report hook; the fixture
#: teardowns read it to decide (pytest's tmpdir.py pattern)
REPORTS_KEY = pytest.StashKey[dict[str, pytest.TestReport]]()
#: report sections the fixture teardowns made (VMs kept), put on the teardown report
TEARDOWN_SECTIONS_KEY = pytest.StashKey[list[tuple[str, str]]]()
#: ids of the VMs whose keep decision was made for this test
_DECIDED_KEY = pytest.StashKey[set[int]]()
#: the title ending of a "kept running" report section (read by the plugin's summary)
KEPT_TITLE = ": kept running at teardown"
#: how many collected tests ask for a fresh VM with each (suite, markers) signature (set at
#: the end of collection; a hint for the snapshot store, see :func:`fresh_demand`)
DEMAND_KEY = pytest.StashKey[dict[tuple[str, tuple[VmRequest, ...]], int]]()


# ---- the fixtures -------------------------------------------------------------------------

def _settings(config: pytest.Config) -> Settings:
    return config.stash[SETTINGS_KEY]


def _fail(err: BaseException) -> BaseException:
    """A short setup error (no deep traceback) for a framework error; chained to it."""
    exc = pytest.fail.Exception(f"{type(err).__name__}: {err}", pytrace=False)
    exc.dtsvirt_cause = err  # type: ignore[attr-defined]  # read by the report hook
    return exc


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


@pytest.fixture(scope="session")
def dut(dut_config: DutConfig) -> Iterator[Dut]:
    """This worker's DUT (see ``dut_config``), connected for the whole session; leftovers of
    earlier crashed runs of this plugin on it are reaped first. Closed at session end."""
    from pytest_dtsvirt.session.dut import connect

    log.info("connecting to DUT %s", dut_config.name)
    try:
        host = connect(dut_config)
    except DtsvirtError as err:
        raise _fail(err) from None
    try:
        reap_leftovers(host)
        yield host
    finally:
        host.close()


@pytest.fixture(scope="session")
def vm_factory(dut: Dut, pytestconfig: pytest.Config) -> Iterator[VmFactory]:
    """The session's :class:`VmFactory`: ``vm_factory.create(name="vm0", suite=..., **params)``
    (unstarted), ``vm_factory.start(...)`` (started), ``vm_factory.guest(vm)`` (its VmDut),
    ``vm_factory.shared(name, suite)`` (the session VM). ``params`` use the marker's
    vocabulary. Every VM it made is stopped at session end (unless kept)."""
    factory = VmFactory.for_dut(dut, _settings(pytestconfig), label="session")
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
            origin = getattr(vm, "restored_from", None)
            node.user_properties.append(
                (f"dtsvirt.{vm.vm_name}.fresh", f"restored:{origin}" if origin else "booted"))
            for phase, seconds in vm.phase_timings.items():
                node.user_properties.append(
                    (f"dtsvirt.{vm.vm_name}.boot.{phase}", f"{seconds:.3f}"))
    return on_use


def test_failed(node: pytest.Item) -> bool:
    """Whether the test's setup or call failed (from the reports the hook recorded)."""
    reports = node.stash.get(REPORTS_KEY, {})
    return any(reports[when].failed for when in ("setup", "call") if when in reports)


def fresh_demand(items: list[pytest.Item]) -> dict[tuple[str, tuple[VmRequest, ...]], int]:
    """How many of ``items`` use a fresh (function-scoped) VM, by (suite, markers): the
    things that decide the VM's shape before a fixture's own ``set_vm_*`` calls. A shape
    wanted by one test only is not worth saving as a snapshot (see ``qemu/fresh.py``).
    Items whose markers do not parse are left out (they fail at setup)."""
    demand: dict[tuple[str, tuple[VmRequest, ...]], int] = {}
    for item in items:
        if not FUNCTION_VM_FIXTURES & set(getattr(item, "fixturenames", ())):
            continue
        try:
            key = (item_suite(item), item_markers(item))
        except ConfigError:
            continue
        demand[key] = demand.get(key, 0) + 1
    return demand


def _keep_if_asked(node: pytest.Item, root: VmFactory) -> None:
    """``--dtsvirt-keep-vm``: mark the VMs the test used to be kept (always, or when the
    test failed) and say how to reach them in the teardown report."""
    keep_vm = _settings(node.config).keep_vm
    if not (keep_vm == "always" or (keep_vm == "failed" and test_failed(node))):
        return
    decided = node.stash.setdefault(_DECIDED_KEY, set())
    sections = node.stash.setdefault(TEARDOWN_SECTIONS_KEY, [])
    for used in node.stash.get(USED_KEY, []):
        if id(used) in decided:
            continue
        decided.add(id(used))
        root.keep(used)
        reach = diagnostics_of(used).get("reach", "(no reach info from the backend)")
        sections.append((f"dtsvirt {used.vm_name} ({used.suite}){KEPT_TITLE}", reach))


def _finish(node: pytest.Item, close: Callable[[], None]) -> None:
    """Run a fixture's VM teardown ``close``: a Ctrl-C in it still ends the VMs (stop()
    finishes first), then errors this test's teardown and stops the run, so an interrupted
    run never reads as a clean pass; a VM that died fails the teardown with the cause
    unless the test already failed (then the cause is shown under that failure, as a
    teardown section, and logged)."""
    try:
        close()
    except KeyboardInterrupt:
        node.session.shouldstop = "dtsvirt: interrupted (Ctrl-C) during a VM teardown"
        raise _fail(VmError("interrupted (Ctrl-C) during the VM teardown; the VMs were "
                            "ended and their run dirs removed; the run stops here")) from None
    except VmDied as err:
        if test_failed(node):  # one error per test: the cause goes under its failure
            log.error("%s", err)
            node.stash.setdefault(TEARDOWN_SECTIONS_KEY, []).append(
                ("dtsvirt: a VM of this test died (found at teardown)", str(err)))
            return
        raise _fail(err) from None


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
    demand = node.config.stash.get(DEMAND_KEY, {}).get((suite, markers))
    factory = vm_factory.child(default_suite=suite, markers=markers, label=node.nodeid,
                               on_use=_use(node), test_dir=str(node.path.parent),
                               demand=demand)
    try:
        yield factory
    finally:
        _keep_if_asked(node, vm_factory)
        _finish(node, factory.close)


def _marker_vm_name(node: pytest.Item) -> str:
    closest = node.get_closest_marker(MARKER)
    if closest is None:
        return "vm0"
    return parse_marker(closest.args, closest.kwargs, where=node.nodeid).name


@pytest.fixture
def vm(function_vm_factory: VmFactory, request: pytest.FixtureRequest) -> Hypervisor:
    """A fresh, started VM for this test (the :class:`Hypervisor`: ``pci_maps``, ``qmp``,
    ``agent``, ``monitor_socket``, ``diagnostics()``); ``vm0`` of the module's suite unless a
    ``vm`` marker names another. Stopped at the end of the test."""
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
def session_vm(vm_factory: VmFactory, request: pytest.FixtureRequest) -> Iterator[Hypervisor]:
    """The VM ``vm0`` of this module's suite shared by every test of the session that asks
    for it: booted on first use, stopped at session end. ``vm`` markers do not apply (using
    one with this fixture is an error). Session-scoped fixtures of your own can use
    ``vm_factory.shared(name, suite)`` for the same VM.

    If it dies during a test, that test's teardown fails with the cause (once); the next
    test that asks for it gets a freshly booted one."""
    node = request.node
    assert isinstance(node, pytest.Item)
    try:
        suite = item_suite(node)
        factory = vm_factory.child(default_suite=suite, label=node.nodeid, on_use=_use(node),
                                   test_dir=str(node.path.parent))
        shared = factory.shared("vm0", suite)
    except DtsvirtError as err:
        raise _fail(err) from None
    yield shared
    _keep_if_asked(node, vm_factory)

    def check() -> None:
        cause = vm_factory.drop_if_died(shared)
        if cause is not None:
            raise VmDied(f"the session VM vm0 of suite {suite} died during this test: "
                         f"{cause}; the next test that asks for it gets a new one")

    _finish(node, check)


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


__all__ = ["DEMAND_KEY", "FACTORY_KEY", "KEPT_TITLE", "REPORTS_KEY", "SETTINGS_KEY",
           "TEARDOWN_SECTIONS_KEY", "USED_KEY", "Settings", "VmFactory",
           "diagnostics_of", "dut", "dut_config", "fresh_demand", "function_vm_factory",
           "load_duts",
           "session_vm", "session_vm_dut", "vm", "vm_dut", "vm_factory"]
