"""Legacy ``TestCase``: ``set_up_all``/``tear_down_all`` once per class, ``set_up``/
``tear_down`` around each test, as pytest fixtures (class- and function-scoped, autouse).

::

    from pytest_dtsvirt.compat import TestCase, VM

    class TestVhostSample(TestCase):
        def set_up_all(self):
            self.vm = VM(self.dut, "vm0", self.suite_name)
        def test_guest(self):
            vm_dut = self.vm.start()
            self.verify("Linux" in vm_dut.send_expect("uname", "# "), "not Linux")
        def tear_down(self):
            self.vm.stop()

pytest makes a new instance of the class for every test, so the class fixture keeps the
state ``set_up_all`` writes on ``self`` and copies it into each test's instance (what a
legacy suite expects: one object for the whole suite). Legacy test methods are named
``test_*`` already, so pytest collects them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_dtsvirt.compat import context
from pytest_dtsvirt.compat.suitecfg import load_suite_cfg
from pytest_dtsvirt.errors import VerifyError
from pytest_dtsvirt.fixtures import SETTINGS_KEY
from pytest_dtsvirt.marker import default_suite

VerifyFailure = VerifyError


def _suite_of(node: Any, cls: type) -> str:
    explicit = getattr(cls, "suite_name", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    module = getattr(node, "module", None)
    name = module.__name__ if module is not None else node.path.stem
    return default_suite(name, getattr(module, "dtsvirt_suite", None))


def _optional_fixture(request: pytest.FixtureRequest, name: str) -> Any:
    """The value of fixture ``name`` when a conftest defines it, else None."""
    try:
        return request.getfixturevalue(name)
    except pytest.FixtureLookupError:
        return None


class TestCase:
    """Base class of a ported legacy suite (see the module docstring).

    Attributes as in legacy: ``dut`` (the host DUT), ``duts``, ``suite_name`` (the module's
    suite, or a ``suite_name`` class attribute), ``logger``, ``target``; ``tester`` is None
    (no traffic generator here). A conftest may stand in for hardware this machine lacks
    with fixtures (class scope or wider) ``dts_duts`` (the list ``duts`` becomes, ``dut``
    first) and ``dts_tester`` (what ``tester`` becomes). ``get_suite_cfg()`` is the typed
    ``[suite]`` section of ``conf/<suite>.cfg``.
    """

    __test__ = True
    suite_name: str = ""
    dut: Any
    duts: list[Any]
    running_case: str
    logger: logging.Logger
    _suite_cfg: dict[str, Any]
    _conf_dir: str
    target = "x86_64-native-linuxapp-gcc"
    tester: Any = None

    # -- the legacy hooks (override) ---------------------------------------------------------
    def set_up_all(self) -> None:
        """Once, before the first test of the class."""

    def set_up(self) -> None:
        """Before each test."""

    def tear_down(self) -> None:
        """After each test (also a failed one)."""

    def tear_down_all(self) -> None:
        """Once, after the last test of the class."""

    # -- the legacy helpers -------------------------------------------------------------------
    def verify(self, passed: Any, description: str) -> None:
        """Fail the test with ``description`` unless ``passed`` is true."""
        if not passed:
            raise VerifyError(description)

    def get_suite_cfg(self) -> dict[str, Any]:
        """The ``[suite]`` section, typed (see :mod:`pytest_dtsvirt.compat.suitecfg`)."""
        return self._suite_cfg

    def update_suite_cfg(self, suite_cfg: dict[str, Any]) -> None:
        self._suite_cfg = suite_cfg

    def update_suite_cfg_ele(self, key: str, value: Any) -> None:
        self._suite_cfg[key] = value

    def skip_case(self, condition: Any, reason: str) -> None:
        """Legacy: skip the running test unless ``condition``."""
        if not condition:
            pytest.skip(reason)

    def result_table_create(self, header: list[str]) -> None:
        """Legacy result tables go to the log (there is no RST report)."""
        self.result_table: list[list[Any]] = []
        self.logger.info("result table: %s", " | ".join(map(str, header)))

    def result_table_add(self, row: list[Any]) -> None:
        self.result_table.append(list(row))
        self.logger.info("result row: %s", " | ".join(map(str, row)))

    def result_table_print(self) -> None:
        for row in getattr(self, "result_table", []):
            self.logger.info("%s", " | ".join(map(str, row)))

    def result_table_getrows(self) -> list[list[Any]]:
        """Legacy: the rows added since :meth:`result_table_create`."""
        return list(getattr(self, "result_table", []))

    # -- the fixtures ------------------------------------------------------------------------
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _dtsvirt_suite(cls, request: pytest.FixtureRequest, dut: Any,
                       vm_factory: Any) -> Iterator[dict[str, Any]]:
        suite = _suite_of(request.node, cls)
        test_dir = str(request.path.parent)
        conf_dir = request.config.stash[SETTINGS_KEY].conf_dir_for(suite, test_dir)
        suite_obj = cls.__new__(cls)
        duts = _optional_fixture(request, "dts_duts") or [dut]
        tester = _optional_fixture(request, "dts_tester")
        suite_obj.__dict__.update(
            dut=dut, duts=list(duts), tester=tester, suite_name=suite, _conf_dir=conf_dir,
            logger=logging.getLogger(f"dts.{cls.__name__}"),
            _suite_cfg=load_suite_cfg(f"{conf_dir}/{suite}.cfg"))
        factory = vm_factory.child(default_suite=suite, label=request.node.nodeid,
                                   test_dir=test_dir)
        try:
            with context.using(factory), context.using_conf_dir(conf_dir):
                suite_obj.set_up_all()
                state = suite_obj.__dict__
                yield state
                suite_obj.tear_down_all()
        finally:
            factory.close()

    @pytest.fixture(autouse=True)
    def _dtsvirt_case(self, _dtsvirt_suite: dict[str, Any], function_vm_factory: Any,
                      request: pytest.FixtureRequest) -> Iterator[None]:
        # One object per suite, as legacy: the test's instance shares the class state.
        self.__dict__ = _dtsvirt_suite
        self.running_case = request.node.name
        with context.using(function_vm_factory), context.using_conf_dir(self._conf_dir):
            self.set_up()
            try:
                yield
            finally:
                self.tear_down()
