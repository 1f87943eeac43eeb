"""VmFactory's handling of a session VM that died (pure: the fake backend)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import pytest_dtsvirt.testing.fake  # noqa: F401  (registers the "fake" backend)
from pytest_dtsvirt.vmfactory import Settings, VmFactory


class _Dut:
    name = "fake-dut"


def _factory() -> VmFactory:
    settings = Settings(conf_dir="conf", duts_file=None, accel="tcg", boot_timeout=None,
                        keep_vm="never", hypervisor="fake", cache_dir=None, run_id="r1",
                        worker=None)
    dut: Any = _Dut()
    return VmFactory.for_dut(dut, settings)


def test_a_dead_session_vm_is_dropped_and_booted_again(caplog: pytest.LogCaptureFixture,
                                                       ) -> None:
    factory = _factory()
    first: Any = factory.shared("vm0", "s")
    assert factory.shared("vm0", "s") is first  # alive: the same VM
    first.death_reason = lambda: "qemu (PID 7) died while the VM was in use: killed by signal 9"
    with caplog.at_level(logging.WARNING, logger="pytest_dtsvirt"):
        second = factory.shared("vm0", "s")
    assert second is not first and first.stops == 1
    assert ("the session VM vm0 of suite s died since its last use: qemu (PID 7) died while "
            "the VM was in use: killed by signal 9; booting it again") in caplog.text
    assert factory.drop_if_died(second) is None  # a live VM is left alone
    factory.close()


def test_drop_if_died_returns_the_cause_and_stops_tracking_the_vm() -> None:
    factory = _factory()
    vm: Any = factory.shared("vm0", "s")
    vm.death_reason = lambda: "the VM is not responding: qemu (PID 8) is stopped (SIGSTOP)"
    assert factory.drop_if_died(vm) == ("the VM is not responding: qemu (PID 8) is stopped "
                                        "(SIGSTOP)")
    assert vm not in factory.vms and vm.stops == 1
    factory.close()
