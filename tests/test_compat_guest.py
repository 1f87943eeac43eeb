"""The compat layer with real guests: an inner pytest session runs a legacy-shaped
``TestCase`` suite (``VM(self.dut, "vm0", self.suite_name).start()`` in ``set_up_all``) on
the project's test guest, with its cfg in a conf dir given only by ``--dtsvirt-conf-dir``
(legacy ``QEMUKvm`` read ``conf/`` of the current directory). Boots 2 guests (about 5-15 s
each under TCG).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

CFG = """\
[suite]
packet_sizes = [64, 1518]
[vm0]
mem =
    size=512;
start =
    wait_seconds=180;
"""

SUITE = """
import json, os, re, time
import pytest
from pytest_dtsvirt.compat import VM, QEMUKvm, TestCase
from pytest_dtsvirt.errors import CommandTimeout

OUT = {out!r}

def record(name, value):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(value, f)


class TestCompatSuite(TestCase):
    def set_up_all(self):
        self.vm = VM(self.dut, "vm0", self.suite_name)
        self.vm.load_config()
        self.vm.params[self.vm.find_option_index("mem")]["mem"][0]["size"] = "600"
        self.vm_dut = self.vm.start(load_config=False, set_target=True, bind_dev=True)
        self.verify(self.vm_dut is not None, "VM start failed")
        self.calls = ["set_up_all"]
        record("suite", [self.suite_name, self.get_suite_cfg()])

    def set_up(self):
        self.calls.append("set_up")

    def test_a_ctrl_c_interrupts_ping(self):
        with pytest.raises(CommandTimeout):
            self.vm_dut.send_expect("ping 127.0.0.1", "# ", 3)
        began = time.monotonic()
        out = self.vm_dut.send_expect("^c", "# ", 15)
        record("ping", [out, time.monotonic() - began])
        self.verify("packets transmitted" in out, "ping was not interrupted: " + out)
        self.verify(self.vm_dut.send_expect("echo back", "# ") == "back", "no prompt")

    def test_b_session_before_after_timeout(self):
        with pytest.raises(CommandTimeout):
            self.vm_dut.send_expect("echo one; sleep 1; echo two; sleep 60", "never-seen", 0.5)
        text = self.vm_dut.get_session_before(timeout=4)
        record("before", text)
        self.vm_dut.send_expect("^c", "# ", 15)
        self.verify("one" in text and "two" in text, text)

    def test_c_legacy_attributes(self):
        mem = self.vm_dut.send_expect("grep MemTotal /proc/meminfo", "# ")
        shell = self.vm_dut.new_session("suite")
        record("attrs", dict(hostfwd=self.vm.hostfwd_addr, qemu=self.vm.qemu_emulator,
                             pci=self.vm.pci_maps, mem=mem,
                             pwd=shell.send_expect("pwd", "# "), base=self.vm_dut.base_dir,
                             main_pwd=self.vm_dut.send_expect("pwd", "# "),
                             mode=self.vm_dut.send_expect("stat -c %a .", "# "),
                             verify=self.vm_dut.send_expect("false", "# ", verify=True),
                             cores=self.vm_dut.get_core_list("all")))
        self.vm_dut.close_session(shell)

    def tear_down(self):
        self.calls.append("tear_down")

    def tear_down_all(self):
        self.vm.stop()
        record("calls", self.calls + ["tear_down_all"])


def test_forgotten_vm_is_stopped_by_the_plugin(vm_factory):
    vm = QEMUKvm(vm_factory.dut, "vm0", "compat_suite")
    vm_dut = vm.start()
    record("forgotten", vm.hypervisor.run_dir)
    assert vm_dut.send_expect("echo up", "# ") == "up"
"""


def test_compat_testcase_suite_on_real_guests(pytester: pytest.Pytester, tmp_path: Path
                                              ) -> None:
    out = tmp_path / "out"
    out.mkdir()
    conf = pytester.path / "elsewhere"
    conf.mkdir()
    (conf / "compat_suite.cfg").write_text(CFG)
    pytester.makepyfile(test_compat_suite=SUITE.format(out=str(out)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-v",
                                           f"--dtsvirt-conf-dir={conf}", timeout=900)
    result.assert_outcomes(passed=4)

    def read(name: str) -> object:
        return json.loads((out / name).read_text())

    assert read("suite") == ["compat_suite", {"packet_sizes": [64, 1518]}]
    assert read("calls") == ["set_up_all", "set_up", "tear_down", "set_up", "tear_down",
                             "set_up", "tear_down", "tear_down_all"]
    ping, seconds = read("ping")  # type: ignore[misc]
    assert "packets transmitted" in ping and seconds < 10
    before = read("before")
    assert "one" in before and "two" in before  # type: ignore[operator]
    attrs = read("attrs")
    assert isinstance(attrs, dict)
    assert attrs["hostfwd"].startswith("127.0.0.1:") and attrs["pci"] == []
    assert attrs["qemu"].endswith("qemu-system-x86_64")
    kib = int(attrs["mem"].split()[1])
    assert 450_000 < kib <= 600 * 1024, attrs["mem"]  # the params edit reached qemu (-m 600)
    assert attrs["pwd"] == attrs["base"] and attrs["verify"] == 1 and attrs["cores"]
    assert attrs["main_pwd"] == attrs["base"] and attrs["base"].startswith("/tmp/dtsvirt-base.")
    assert attrs["mode"] == "700"
    # the VM the last test never stopped was stopped by the plugin: its run dir is gone
    assert not Path(str(read("forgotten"))).exists()
