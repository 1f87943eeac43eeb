"""The legacy multi-VM path with real guests: a compat ``TestCase`` suite ``quick_start()``s two
VMs in ``set_up_all`` and ``start()``s them; they boot together (``vm_factory.boot_all``),
so the wall time of the two ``start()`` calls is well below the sum of the two boots (each
VM's own boot time, measured by its readiness ladder whether it booted alone or not). Boots 2
guests at once (TCG).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

CFG = """\
[vm0]
mem =
    size=512;
start =
    wait_seconds=240;
[vm1]
mem =
    size=512;
start =
    wait_seconds=240;
"""

SUITE = """
import json, os, time
from pytest_dtsvirt.compat import VM, TestCase

OUT = {out!r}


class TestTwoVms(TestCase):
    def set_up_all(self):
        self.vm0 = VM(self.dut, "vm0", self.suite_name)
        self.vm1 = VM(self.dut, "vm1", self.suite_name)
        self.vm0.quick_start()
        self.vm1.quick_start()
        began = time.monotonic()
        self.vm_dut0 = self.vm0.start()
        self.vm_dut1 = self.vm1.start()
        wall = time.monotonic() - began
        boots = [vm.hypervisor.phase_timings["total"] for vm in (self.vm0, self.vm1)]
        with open(os.path.join(OUT, "timing"), "w") as f:
            json.dump(dict(wall=wall, boots=boots,
                           run_dirs=[self.vm0.hypervisor.run_dir, self.vm1.hypervisor.run_dir]),
                      f)

    def test_both_guests_answer(self):
        for i, vm_dut in enumerate((self.vm_dut0, self.vm_dut1)):
            self.verify(vm_dut.send_expect(f"echo guest{{i}}", "# ") == f"guest{{i}}",
                        f"vm{{i}} does not answer")
        self.verify(self.vm0.hostfwd_addr != self.vm1.hostfwd_addr, "one forward for two VMs")

    def tear_down_all(self):
        self.vm1.stop()
        self.vm0.stop()
"""


def test_quick_started_vms_boot_in_parallel(pytester: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    conf = pytester.path / "conf"
    conf.mkdir()
    (conf / "two_vms.cfg").write_text(CFG)
    pytester.makepyfile(test_two_vms=SUITE.format(out=str(out)))
    # cold boots both (no snapshot restore): two boots of the same kind to compare
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v",
                                           f"--dtsvirt-conf-dir={conf}", "--dtsvirt-accel=tcg",
                                           "--dtsvirt-fresh=boot", timeout=900)
    result.assert_outcomes(passed=1)
    timing = json.loads((out / "timing").read_text())
    wall, boots = timing["wall"], timing["boots"]
    # serial boots take at least their sum; together about the longer one (+ overhead)
    assert wall < 0.75 * sum(boots), f"wall {wall:.1f} s for boots of {boots} s: not parallel"
    for run_dir in timing["run_dirs"]:
        assert not Path(run_dir).exists()
