"""The plugin's own ``QEMUKvm(dut, name, suite)`` (not the compat one) made inside a pytest
test: it takes the running plugin's options and conf dir and belongs to the test's factory,
which stops it; outside pytest it reads ``conf/`` of the current directory. Inner pytest
sessions run in subprocesses; one guest boots (about 5-15 s under TCG).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CFG = """\
[vm0]
mem =
    size=512;
start =
    wait_seconds=180;
"""

INNER = """
import json, os
import pytest
from pytest_dtsvirt import QEMUKvm
from pytest_dtsvirt.errors import ConfigError

OUT = {out!r}

def record(name, value):
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(value, f)
"""

OPTIONS_TEST = """
def test_takes_the_plugin_options(dut, request):
    vm = QEMUKvm(dut, "vm0", "plug")
    factory = request.getfixturevalue("function_vm_factory")
    record("options", dict(conf_dir=vm.options.conf_dir, accel=vm.options.accel,
                           boot_timeout=vm.options.boot_timeout,
                           tracked=vm in factory.vms, cpus=vm.params.build()[0].cpu.number))

@pytest.mark.vm(cpu={"number": 2})
def test_the_test_markers_apply(dut):
    vm = QEMUKvm(dut, "vm0", "plug")
    record("marked", vm.params.build()[0].cpu.number)

@pytest.fixture(scope="module")
def module_vm(dut):
    return QEMUKvm(dut, "vm0", "plug")

def test_a_module_fixture_vm_belongs_to_the_session(module_vm, vm_factory):
    record("module", dict(conf_dir=module_vm.options.conf_dir, accel=module_vm.options.accel,
                          tracked=module_vm in vm_factory.vms))
"""


def _write_conf(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "plug.cfg").write_text(CFG)
    return where


def test_options_conf_dir_and_tracking_come_from_the_plugin(pytester: pytest.Pytester,
                                                            tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    conf = _write_conf(pytester.path / "elsewhere")  # not conf/ of the cwd or the rootdir
    pytester.makepyfile(test_plug=INNER.format(out=str(out)) + OPTIONS_TEST)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--dtsvirt-conf-dir={conf}", "--dtsvirt-accel=tcg",
        "--dtsvirt-boot-timeout=77", timeout=300)
    result.assert_outcomes(passed=3)
    options = json.loads((out / "options").read_text())
    assert options == {"conf_dir": str(conf), "accel": "tcg", "boot_timeout": 77.0,
                       "tracked": True, "cpus": 1}
    assert json.loads((out / "marked").read_text()) == 2
    assert json.loads((out / "module").read_text()) == {"conf_dir": str(conf), "accel": "tcg",
                                                        "tracked": True}


def test_a_missing_conf_dir_is_named(pytester: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    missing = pytester.path / "no-such-conf"
    pytester.makepyfile(test_plug=INNER.format(out=str(out)) + """
def test_missing(dut):
    with pytest.raises(ConfigError) as err:
        QEMUKvm(dut, "vm0", "plug")
    record("error", str(err.value))
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider",
                                           f"--dtsvirt-conf-dir={missing}", timeout=300)
    result.assert_outcomes(passed=1)
    error = json.loads((out / "error").read_text())
    assert f"conf dir {str(missing)!r} not found" in error, error
    assert "plug.cfg" in error and "config file not found" not in error


def test_outside_pytest_it_reads_conf_of_the_cwd(tmp_path: Path) -> None:
    _write_conf(tmp_path / "conf")
    (tmp_path / "conf" / "plug.cfg").write_text(CFG.replace("size=512", "size=640"))
    script = textwrap.dedent("""
        from pytest_dtsvirt import QEMUKvm, VmOptions, connect, local_dut_config
        dut = connect(local_dut_config())
        vm = QEMUKvm(dut, "vm0", "plug")
        assert vm.options == VmOptions(), vm.options
        print(vm.params.build()[0].mem.size_mb)
        dut.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "640"


@pytest.mark.slow
def test_a_forgotten_vm_is_stopped_by_the_plugin(pytester: pytest.Pytester,
                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    conf = _write_conf(pytester.path / "elsewhere")
    pytester.makepyfile(test_plug=INNER.format(out=str(out)) + """
def test_boot_and_forget(dut):
    vm = QEMUKvm(dut, "vm0", "plug")
    vm_dut = vm.start()
    record("booted", dict(run_dir=vm.run_dir, argv=vm.argv,
                          echo=vm_dut.send_expect("echo up", "# ")))
""")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--dtsvirt-conf-dir={conf}",
                                           "--dtsvirt-accel=tcg", timeout=600)
    result.assert_outcomes(passed=1)
    booted = json.loads((out / "booted").read_text())
    assert booted["echo"] == "up"
    assert "tcg" in " ".join(booted["argv"])  # --dtsvirt-accel reached the VM
    assert not Path(booted["run_dir"]).exists()  # the test's factory stopped it
