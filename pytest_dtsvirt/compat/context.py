"""Which :class:`~pytest_dtsvirt.vmfactory.VmFactory` a legacy ``VM(dut, name, suite)``
uses inside a pytest run.

The innermost one wins: a :class:`~pytest_dtsvirt.compat.testcase.TestCase`'s own factories
(one per class for ``set_up_all``, the test's ``function_vm_factory`` for ``set_up``, the
test and ``tear_down``), else the running test's ``function_vm_factory`` (asked for lazily,
through the request :mod:`pytest_dtsvirt.compat.plugin` records; a test that never makes a
VM never connects to the DUT for it), else (a module or session fixture) the session's
``vm_factory``, which stops its VMs at the end of the session. Outside pytest there is none
and ``VM`` builds a VM from ``conf/`` itself.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pytest_dtsvirt import hypervisor

if TYPE_CHECKING:
    from pytest_dtsvirt.vmfactory import VmFactory

_FACTORIES: list[VmFactory] = []
_REQUEST: list[Any] = []  # the running test's pytest.FixtureRequest (at most one)
_CONF_DIRS: list[str] = []  # the running TestCase's conf dir


@contextlib.contextmanager
def using(factory: VmFactory) -> Iterator[VmFactory]:
    """Make ``factory`` the one legacy ``VM()`` calls use while the block runs."""
    _FACTORIES.append(factory)
    try:
        yield factory
    finally:
        _FACTORIES.remove(factory)


@contextlib.contextmanager
def test_request(request: Any) -> Iterator[None]:
    """Record the running test's fixture request (see the module docstring)."""
    _REQUEST.append(request)
    try:
        yield
    finally:
        _REQUEST.remove(request)


@contextlib.contextmanager
def using_conf_dir(conf_dir: str) -> Iterator[None]:
    """Make legacy ``CONFIG_ROOT_PATH``-relative paths resolve in ``conf_dir`` meanwhile."""
    _CONF_DIRS.append(conf_dir)
    try:
        yield
    finally:
        _CONF_DIRS.remove(conf_dir)


def conf_path(path: str, root: str) -> str:
    """``path`` (legacy ``os.path.join(CONFIG_ROOT_PATH, name)``, ``root`` being
    ``CONFIG_ROOT_PATH``) in the running suite's conf dir, as the plugin finds it; ``path``
    itself outside a suite or when it is not below ``root``."""
    if not _CONF_DIRS or os.path.isabs(path):
        return path
    rel = os.path.relpath(path, root)
    if rel == os.curdir or rel.startswith(os.pardir):
        return path
    return os.path.join(_CONF_DIRS[-1], rel)


def current_factory() -> VmFactory | None:
    """The factory a ``VM()`` made now belongs to, or None outside pytest."""
    factory: VmFactory
    if _FACTORIES:
        return _FACTORIES[-1]
    if _REQUEST:
        factory = _REQUEST[-1].getfixturevalue("function_vm_factory")
        return factory
    if _SESSION:
        factory = _SESSION[-1].getfixturevalue("vm_factory")
        return factory
    return None


_SESSION: list[Any] = []  # the session's request (VMs made in module or session fixtures)


@contextlib.contextmanager
def session_request(request: Any) -> Iterator[None]:
    """Record the session's fixture request (see the module docstring)."""
    _SESSION.append(request)
    try:
        yield
    finally:
        _SESSION.remove(request)


# the plugin's own QEMUKvm(dut, name, suite) finds the test's factory the same way
hypervisor.set_home_finder(current_factory)
