"""vm_factory.start_many / boot_all: the VMs of one test boot at once (legacy MultipleVM),
with the single boot's guarantees: one failing stops the others and the error names it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.runtime import qemu_pids_naming

import pytest_dtsvirt.testing.fake  # noqa: F401  (registers the "fake" backend)
from pytest_dtsvirt.errors import VmStartError
from pytest_dtsvirt.runtime.parallel import boot_many
from pytest_dtsvirt.session.dut import Dut
from pytest_dtsvirt.testing.fake import FAIL_ENV
from pytest_dtsvirt.vmfactory import Settings, VmFactory


def _settings(hypervisor: str, conf_dir: str = "conf") -> Settings:
    return Settings(conf_dir=conf_dir, duts_file=None, accel="tcg", boot_timeout=150.0,
                    keep_vm="never", hypervisor=hypervisor, cache_dir=None, run_id="par1",
                    worker=None, conf_dir_given=True)


class _Dut:
    name = "fake-dut"


def test_one_failing_boot_stops_the_others_and_is_named(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    monkeypatch.setenv(FAIL_ENV, "vm1")
    dut: Any = _Dut()
    factory = VmFactory.for_dut(dut, _settings("fake"))
    with pytest.raises(VmStartError) as info:
        factory.start_many(["vm0", "vm1", {"name": "vm2", "suite": "t"}], suite="s")
    text = str(info.value)
    assert "parallel boot of 3 VMs: 1 failed: vm1:" in text
    assert "stopped the others (vm0, vm2)" in text
    assert factory.vms == ()
    factory.close()


def test_an_interrupt_during_the_boots_stops_every_booted_vm() -> None:
    stopped: list[str] = []

    class Vm:
        def __init__(self, name: str) -> None:
            self.vm_name = name

    def boot(vm: Any) -> None:
        if vm.vm_name == "b":
            raise KeyboardInterrupt  # as if Ctrl-C landed in this boot
        time.sleep(0.2)

    vms: Any = [Vm("a"), Vm("b"), Vm("c")]
    with pytest.raises(KeyboardInterrupt):
        boot_many(vms, boot, lambda vm: stopped.append(vm.vm_name))
    assert stopped == ["a", "c"]


def test_two_real_vms_boot_concurrently(dut: Dut, tmp_path: Path) -> None:
    """Both boots run at the same time (their windows overlap, and the group's wall time is
    below the sum of the two boots); both guests answer; nothing is left."""
    (tmp_path / "par.cfg").write_text("[vm0]\nlogin =\n    user=root,password=tester;\n"
                                      "[vm1]\nlogin =\n    user=root,password=tester;\n")
    factory = VmFactory.for_dut(dut, _settings("kvm", str(tmp_path)))
    try:
        began = time.monotonic()
        vms = factory.start_many(["vm0", "vm1"], suite="par")
        wall = time.monotonic() - began
        w0, w1 = factory.last_boot_windows
        assert max(w0.began, w1.began) < min(w0.ended, w1.ended), "the boots did not overlap"
        serial = (w0.ended - w0.began) + (w1.ended - w1.began)
        assert wall < serial, f"wall {wall:.1f} s, boots {serial:.1f} s in sum"
        for vm in vms:
            assert factory.guest(vm).send_expect(f"echo {vm.vm_name}", "# ").strip()\
                .endswith(vm.vm_name)
        run_dirs = [vm.run_dir for vm in vms]
    finally:
        factory.close()
    for run_dir in run_dirs:
        assert run_dir is not None and qemu_pids_naming(run_dir) == []


def test_a_real_vm_failing_in_a_parallel_boot_stops_the_other(dut: Dut, tmp_path: Path
                                                              ) -> None:
    (tmp_path / "parf.cfg").write_text("[vm0]\nlogin =\n    user=root,password=tester;\n"
                                       "[vm1]\ncpu =\n    number=1,cpupin=4000;\n")
    factory = VmFactory.for_dut(dut, _settings("kvm", str(tmp_path)))
    try:
        vm0, vm1 = factory.create("vm0", "parf"), factory.create("vm1", "parf")
        with pytest.raises(VmStartError) as info:
            factory.boot_all([vm0, vm1])
        text = str(info.value)
        assert "1 failed: vm1: " in text and "cpupin names CPU 4000" in text, text
        assert "stopped the others (vm0)" in text
        assert factory.vms == ()
    finally:
        factory.close()
    assert vm0.run_dir is not None and qemu_pids_naming(vm0.run_dir) == []
    assert not Path(vm0.run_dir).exists()
