"""The pytest layer with real guests (kvm backend, TCG here): an inner pytest session boots
the project's test guest through the plugin's fixtures and records what the guest saw.

Boots 5 guests in all (about 4-10 s each under TCG).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

CFG = """\
[vm0]
mem =
    size=512;
start =
    wait_seconds=180;
"""

INNER_HELPERS = """
import os, re
OUT = {out!r}

def record(name, text):
    with open(os.path.join(OUT, name), "w") as f:
        f.write(text)

def guest(vm_dut, cmd):
    return vm_dut.send_expect(cmd, "# ", 30)
"""


def _run(pytester: pytest.Pytester, out: Path, body: str, *args: str) -> pytest.RunResult:
    conf = pytester.path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "e2e.cfg").write_text(CFG)
    pytester.makepyfile(test_e2e=INNER_HELPERS.format(out=str(out)) + body)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--dtsvirt-accel", "tcg", f"--dtsvirt-conf-dir={conf}",
        "-o", "log_cli=false", *args, timeout=600)


def _no_qemu_left(marker: str) -> None:
    """No process on this host has ``marker`` (a run dir path) in its command line."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        assert marker not in cmdline, f"leaked process {pid}: {cmdline[:200]}"


@pytest.fixture
def out(pytester: pytest.Pytester) -> Path:
    path = pytester.path / "out"
    path.mkdir()
    return path


def test_function_vms_fresh_session_vm_shared(pytester: pytest.Pytester, out: Path) -> None:
    result = _run(pytester, out, """
import pytest

@pytest.mark.parametrize("i", range(2))
def test_fresh(vm, vm_dut, i):
    record(f"fresh{i}", guest(vm_dut, "cat /proc/sys/kernel/random/boot_id"))
    record(f"rundir-fresh{i}", vm.diagnostics().get("run dir", ""))

@pytest.mark.parametrize("i", range(2))
def test_shared(session_vm, session_vm_dut, i):
    record(f"shared{i}", guest(session_vm_dut, "cat /proc/sys/kernel/random/boot_id"))
    record(f"rundir-shared{i}", session_vm.diagnostics().get("run dir", ""))
""")
    result.assert_outcomes(passed=4)
    ids = {name: re.findall(r"[0-9a-f-]{36}", (out / name).read_text())
           for name in ("fresh0", "fresh1", "shared0", "shared1")}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert ids["fresh0"] != ids["fresh1"]
    assert ids["shared0"] == ids["shared1"]
    assert ids["shared0"] not in (ids["fresh0"], ids["fresh1"])
    for name in ("rundir-fresh0", "rundir-fresh1", "rundir-shared0"):
        run_dir = (out / name).read_text().partition(":")[2]
        assert run_dir, name
        assert not os.path.exists(run_dir), f"{run_dir} left behind"
        _no_qemu_left(run_dir)


def test_marker_changes_what_the_guest_sees(pytester: pytest.Pytester, out: Path) -> None:
    result = _run(pytester, out, """
import pytest

def test_default(vm_dut):
    record("default-mem", guest(vm_dut, "grep MemTotal /proc/meminfo"))
    record("default-macs", guest(vm_dut, "cat /sys/class/net/*/address"))

@pytest.mark.vm(mem={"size": 768},
                device=[{"driver": "virtio-net-pci", "opt_mac": "52:54:00:aa:bb:cc"}])
def test_marked(vm, vm_dut):
    record("marked-mem", guest(vm_dut, "grep MemTotal /proc/meminfo"))
    record("marked-macs", guest(vm_dut, "cat /sys/class/net/*/address"))
    record("marked-argv", " ".join(vm.argv))
""")
    result.assert_outcomes(passed=2)

    def mem_kib(name: str) -> int:
        match = re.search(r"MemTotal:\s+(\d+) kB", (out / name).read_text())
        assert match, name
        return int(match.group(1))

    assert 300_000 < mem_kib("default-mem") < 512 * 1024
    assert 600_000 < mem_kib("marked-mem") < 768 * 1024
    assert "52:54:00:aa:bb:cc" not in (out / "default-macs").read_text()
    assert "52:54:00:aa:bb:cc" in (out / "marked-macs").read_text()
    assert "virtio-net-pci" in (out / "marked-argv").read_text()



def _recorded_run_dir(out: Path, name: str) -> str:
    """The run dir an inner test recorded under ``name`` ("" if it did not get that far)."""
    path = out / name
    return path.read_text().partition(":")[2] if path.exists() else ""


def _end_kept_vm(run_dir: str) -> None:
    """End the qemu the supervisor of ``run_dir`` recorded (by PID, after checking that its
    command line names the run dir), then remove the run dir."""
    if not run_dir:
        return
    try:
        pid = int(Path(run_dir, "supervisor.pid").read_text().split()[1])
        if run_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
    except (OSError, ValueError, IndexError):
        pass  # no pidfile or no such process: nothing to end
    _no_qemu_left(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)


def test_keep_vm_of_failed_test(pytester: pytest.Pytester, out: Path) -> None:
    """--dtsvirt-keep-vm failed: the failed test's guest outlives pytest and the report says
    how to reach it; the passing test's guest is stopped. Then ended here by PID (also when
    this test is interrupted while the inner run is going)."""
    try:
        result = _run(pytester, out, """
def test_fails(vm):
    record("rundir-failed", vm.diagnostics()["run dir"])
    assert False, "on purpose"

def test_passes(vm):
    record("rundir-passed", vm.diagnostics()["run dir"])
""", "--dtsvirt-keep-vm=failed")
        failed_dir = _recorded_run_dir(out, "rundir-failed")
        text = result.stdout.str()
        match = re.search(r"kill (\d+)   # qemu PID", text)
        port = re.search(r"ssh -p (\d+) .*root@127\.0\.0\.1", text)
        result.assert_outcomes(passed=1, failed=1)
        assert "kept running" in text and "dtsvirt: VMs left running" in text
        assert match and port, text[-3000:]
        cmdline = Path(f"/proc/{match.group(1)}/cmdline").read_bytes()
        assert b"qemu-system" in cmdline and failed_dir.encode() in cmdline
        with socket.create_connection(("127.0.0.1", int(port.group(1))), timeout=10) as s:
            s.settimeout(10)
            assert s.recv(64).startswith(b"SSH-2.0-")   # the guest's sshd answers
        passed_dir = _recorded_run_dir(out, "rundir-passed")
        assert not os.path.exists(passed_dir)
        _no_qemu_left(passed_dir)
    finally:
        _end_kept_vm(_recorded_run_dir(out, "rundir-failed"))


def test_vms_that_die_fail_their_test_at_teardown(pytester: pytest.Pytester, out: Path) -> None:
    """qemu SIGKILLed during a test that never touches the guest again: that test fails at
    teardown with the cause. The session VM dying: reported once, by the test it died in;
    the next test that asks for it gets a freshly booted one (README: "session VM")."""
    result = _run(pytester, out, """
import signal

def _kill(vm):
    os.kill(vm._proc.pid, signal.SIGKILL)
    assert vm._proc.wait_exit(10)

def test_function_vm_dies(vm):
    record("rundir-fn", vm.diagnostics()["run dir"])
    _kill(vm)

def test_function_vm_dies_and_is_touched(vm, vm_dut):
    record("rundir-fn2", vm.diagnostics()["run dir"])
    _kill(vm)
    guest(vm_dut, "echo hi")

def test_session_vm_dies(session_vm):
    record("rundir-s1", session_vm.diagnostics()["run dir"])
    _kill(session_vm)

def test_session_vm_again(session_vm, session_vm_dut):
    record("s2", guest(session_vm_dut, "echo alive"))
    record("rundir-s2", session_vm.diagnostics()["run dir"])
""")
    result.assert_outcomes(passed=3, errors=2, failed=1)
    text = result.stdout.str()
    # the test that touched its dead VM fails once, with the cause; no second error
    assert re.search(r"SessionError: connection to DUT vm0@local lost.*: qemu \(PID \d+\) "
                     r"died while the VM was in use: killed by signal 9", text)
    assert "a VM of this test died (found at teardown)" in text
    assert "ERROR at teardown of test_function_vm_dies_and_is_touched" not in text
    assert re.search(r"ERROR at teardown of test_function_vm_dies", text), text[-3000:]
    assert re.search(r"VmDied: vm0: qemu \(PID \d+\) died while the VM was in use: killed by "
                     r"signal 9 \(SIGKILL\)", text)
    assert re.search(r"ERROR at teardown of test_session_vm_dies", text)
    assert re.search(r"VmDied: the session VM vm0 of suite e2e died during this test: qemu "
                     r"\(PID \d+\) died while the VM was in use: killed by signal 9 "
                     r"\(SIGKILL\).*the next test that asks for it gets a new one",
                     text, re.DOTALL)
    assert "StateError" not in text and "QMPClient" not in text
    assert "alive" in (out / "s2").read_text()
    for name in ("rundir-fn", "rundir-fn2", "rundir-s1", "rundir-s2"):
        run_dir = _recorded_run_dir(out, name)
        assert run_dir and not os.path.exists(run_dir), name
        _no_qemu_left(run_dir)


def test_ctrl_c_in_teardown_ends_the_vm_and_is_no_pass(pytester: pytest.Pytester,
                                                        out: Path) -> None:
    """SIGINT landing while the VM is being stopped: qemu and the run dir are gone, the test
    errors at teardown saying so, and the run stops there (no clean "1 passed")."""
    result = _run(pytester, out, """
import signal, threading, time
import pytest

@pytest.fixture
def ctrl_c_during_stop():
    yield
    # torn down before the VM fixtures: the signal lands while the VM is being stopped
    def press():
        time.sleep(0.15)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=press).start()

def test_passes(vm, ctrl_c_during_stop):
    record("rundir", vm.diagnostics()["run dir"])

def test_not_run():
    record("ran", "yes")
""", "--dtsvirt-fresh", "boot")  # a cold VM's stop has the courtesy stage the signal hits
    text = result.stdout.str()
    result.assert_outcomes(passed=1, errors=1)
    assert "interrupted (Ctrl-C) during the VM teardown; the VMs were ended and their run " \
           "dirs removed; the run stops here" in text, text[-3000:]
    assert "Interrupted: dtsvirt: interrupted (Ctrl-C) during a VM teardown" in text
    assert result.ret != 0
    assert not (out / "ran").exists()
    run_dir = _recorded_run_dir(out, "rundir")
    assert run_dir and not os.path.exists(run_dir)
    _no_qemu_left(run_dir)
