"""Compat ``TestCase`` stand-ins for hardware (``dts_duts``, ``dts_tester`` fixtures of a
conftest), legacy ``UserConf(os.path.join(CONFIG_ROOT_PATH, ...))`` inside a suite (the
suite's conf dir) and ``send_command("^a")`` as a control character (inner pytest runs and
the local DUT; no VM)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pytest_dtsvirt.compat import context
from pytest_dtsvirt.compat.vm import TCG_TIMEOUT_SCALE, LegacyVM
from pytest_dtsvirt.session.dut import Dut

pytest_plugins = ["pytester"]

CFG = """\
[mount_info]
host_share_dir=/home/vm-image
[vm0]
login =
    user=root,password=tester;
"""

CONFTEST = """
import pytest

class Tester:
    def get_interface(self, port):
        return "tester-if%d" % port

@pytest.fixture(scope="class")
def dts_tester():
    yield Tester()

@pytest.fixture(scope="class")
def dts_duts(dut):
    yield [dut, "second-dut"]
"""

SUITE = """
import json, os
from pytest_dtsvirt.compat import TestCase
from pytest_dtsvirt.compat.config import CONFIG_ROOT_PATH, UserConf

class TestStandIns(TestCase):
    def set_up_all(self):
        conf = UserConf(os.path.join(CONFIG_ROOT_PATH, self.suite_name + ".cfg"))
        self.mount = dict(conf.conf._sections["mount_info"])

    def test_record(self):
        conf = UserConf(os.path.join(CONFIG_ROOT_PATH, self.suite_name + ".cfg"))
        with open({out!r}, "w") as f:
            json.dump({{"duts": [self.duts[0] is self.dut, *self.duts[1:]],
                       "tester": self.tester and self.tester.get_interface(0),
                       "mount": self.mount, "sections": conf.get_sections()}}, f)
"""


def _run(pytester: pytest.Pytester, tmp_path: Path, conftest: str | None) -> dict[str, object]:
    out = tmp_path / "out.json"
    conf = pytester.path / "elsewhere"
    conf.mkdir()
    (conf / "stand_ins.cfg").write_text(CFG)
    if conftest is not None:
        pytester.makeconftest(conftest)
    pytester.makepyfile(test_stand_ins=SUITE.format(out=str(out)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--dtsvirt-conf-dir={conf}",
                                           timeout=300)
    result.assert_outcomes(passed=1)
    data: dict[str, object] = json.loads(out.read_text())
    return data


def test_conftest_stand_ins_for_duts_and_tester(pytester: pytest.Pytester,
                                                 tmp_path: Path) -> None:
    data = _run(pytester, tmp_path, CONFTEST)
    assert data["duts"] == [True, "second-dut"]
    assert data["tester"] == "tester-if0"
    # UserConf below CONFIG_ROOT_PATH read the suite's conf dir, not ./conf
    assert data["mount"] == {"host_share_dir": "/home/vm-image"}
    assert data["sections"] == ["mount_info", "vm0"]


def test_without_stand_ins_one_dut_and_no_tester(pytester: pytest.Pytester,
                                                 tmp_path: Path) -> None:
    data = _run(pytester, tmp_path, None)
    assert data["duts"] == [True]
    assert data["tester"] is None


@pytest.mark.parametrize(("path", "expected"), [
    ("conf/x.cfg", "/suite/conf/x.cfg"),
    ("conf/sub/x.cfg", "/suite/conf/sub/x.cfg"),
    ("/abs/conf/x.cfg", "/abs/conf/x.cfg"),  # absolute: as given
    ("other/x.cfg", "other/x.cfg"),  # not below CONFIG_ROOT_PATH
])
def test_conf_path_in_a_suite(path: str, expected: str) -> None:
    assert context.conf_path(path, "conf") == path  # outside a suite: as given
    with context.using_conf_dir("/suite/conf"):
        assert context.conf_path(path, "conf") == expected


def test_send_command_sends_control_characters(dut: Dut) -> None:
    """Legacy ``send_command("^c")`` (and ``"^a"``, ``"^d"`` for screen) is the control
    character, not the text."""
    dut.send_command("sleep 30", timeout=0.2)  # still running
    began = time.monotonic()
    dut.send_command("^c", timeout=2)
    assert dut.send_expect("echo alive", "# ", timeout=5) == "alive"
    assert time.monotonic() - began < 5


class _Guest:
    timeout_scale = 1.0

    def set_timeout_scale(self, factor: float) -> None:
        self.timeout_scale = factor


class _Target:
    """A migration target's hypervisor (pure forwarding corner): qemu under ``accel``."""

    def __init__(self, accel: str) -> None:
        self.argv = ["qemu-system-x86_64", "-accel", accel]
        self.guest = _Guest()

    def migrated_start(self, set_target: bool, cpu_topo: str) -> _Guest:
        return self.guest


@pytest.mark.parametrize(("accel", "scale"), [("tcg", TCG_TIMEOUT_SCALE), ("kvm", 1.0)])
def test_migrated_start_scales_a_tcg_guests_timeouts_as_start_does(accel: str,
                                                                    scale: float) -> None:
    vm = LegacyVM.__new__(LegacyVM)
    vm.vm_name, vm.hypervisor = "backup", _Target(accel)  # type: ignore[assignment]
    guest = vm.migrated_start(set_target=False)
    assert guest is vm.vm_dut and vm.migration_vm
    assert guest.timeout_scale == scale
