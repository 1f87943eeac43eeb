"""The fresh-VM demand the plugin counts at collection (a hint for the snapshot store)."""

from __future__ import annotations

import pytest

from pytest_dtsvirt.fixtures import fresh_demand, item_markers, item_suite

pytest_plugins = ["pytester"]


def test_demand_counts_fresh_vm_tests_by_suite_and_markers(pytester: pytest.Pytester) -> None:
    items = pytester.getitems("""
import pytest

@pytest.mark.parametrize("i", range(3))
def test_plain(vm_dut, i):
    pass

@pytest.mark.vm(mem={"size": 1024})
def test_big(vm):
    pass

def test_factory(function_vm_factory):
    pass

def test_no_vm():
    pass

def test_session(session_vm_dut):
    pass
""")
    demand = fresh_demand(items)
    by_name = {item.name: item for item in items}
    suite = item_suite(by_name["test_factory"])
    big = (suite, item_markers(by_name["test_big"]))
    assert demand[(suite, ())] == 4  # three parametrized + the factory user
    assert demand[big] == 1 and big != (suite, ())
    assert sum(demand.values()) == 5  # no VM / session VM: not counted


def test_the_plugin_stashes_the_demand_of_the_selection(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
from pytest_dtsvirt.fixtures import DEMAND_KEY

def pytest_sessionfinish(session):
    print("DEMAND", sorted(session.config.stash[DEMAND_KEY].values()))
""")
    pytester.makepyfile("""
import pytest

@pytest.mark.parametrize("i", range(3))
def test_plain(vm_dut, i):
    pass

@pytest.mark.vm(mem={"size": 1024})
def test_big(vm):
    pass
""")
    result = pytester.runpytest("--collect-only", "-q", "-s", "-k", "not plain[2]")
    result.stdout.fnmatch_lines(["DEMAND [1, 2]"])  # -k deselected one before counting
