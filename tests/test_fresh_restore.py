"""Fresh guests restored from a snapshot (issue 11), with real guests: an inner pytest boots
the first VM of a shape, saves it and restores every later one; what each guest saw is
recorded and checked here."""

from __future__ import annotations

import json
import os
import re
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

HELPERS = """
import json, os, time
import pytest
OUT = {out!r}

def record(name, vm, vm_dut, **extra):
    t0 = time.time()
    clock = vm.agent.command("guest-get-time") / 1e9  # busybox date has no %N
    t1 = time.time()
    doc = dict(restored=vm.restored, restored_from=vm.restored_from, fp=vm.fingerprint,
               port=vm.hostfwd_port, run_dir=vm.run_dir, skew=max(t0 - clock, clock - t1, 0.0),
               rand=vm_dut.send_expect("head -c16 /dev/urandom | od -An -tx1 | tr -d ' \\\\n'",
                                       "# ", 30).strip().splitlines()[-1],
               boot_id=vm_dut.send_expect("cat /proc/sys/kernel/random/boot_id", "# ",
                                          30).strip().splitlines()[-1], **extra)
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(doc, f)
"""


def _run(pytester: pytest.Pytester, out: Path, body: str, *args: str) -> pytest.RunResult:
    conf = pytester.path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / "fresh.cfg").write_text(CFG)
    pytester.makepyfile(test_fresh=HELPERS.format(out=str(out)) + body)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--dtsvirt-accel", "tcg", f"--dtsvirt-conf-dir={conf}",
        "-o", "log_cli=true", "-o", "log_cli_level=INFO", *args, timeout=900)


def _load(out: Path, name: str) -> dict[str, object]:
    data = json.loads((out / f"{name}.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def out(pytester: pytest.Pytester) -> Path:
    path = pytester.path / "out"
    path.mkdir()
    return path


def _left(run_dir: object) -> None:
    assert isinstance(run_dir, str) and run_dir
    assert not os.path.exists(run_dir), f"{run_dir} left behind"


def test_five_fresh_guests_in_a_row_then_two_at_once_and_a_marker(
        pytester: pytest.Pytester, out: Path) -> None:
    result = _run(pytester, out, """
@pytest.mark.parametrize("i", range(5))
def test_row(vm, vm_dut, i):
    def rc(cmd):
        return vm_dut.send_expect(f"{cmd}; echo rc=$?", "# ", 30).split("rc=")[-1][:1]
    assert rc(f"test -e /var/mark-{i - 1}") == "1"  # the previous test's file is absent
    assert rc(f"echo {i} > /var/mark-{i} && test -s /var/mark-{i}") == "0"
    record(f"row{i}", vm, vm_dut)

def test_two_at_once(function_vm_factory):
    a = function_vm_factory.start("vm0")
    b = function_vm_factory.start("vm0")
    record("twoA", a, function_vm_factory.guest(a))
    record("twoB", b, function_vm_factory.guest(b))

@pytest.mark.parametrize("i", range(2))
@pytest.mark.vm(mem={"size": 640})
def test_marked(vm, vm_dut, i):
    mem = vm_dut.send_expect("grep MemTotal /proc/meminfo", "# ", 30)
    record(f"marked{i}", vm, vm_dut, mem=mem)
""", f"--junitxml={out / 'junit.xml'}")
    text = result.stdout.str()
    junit = (out / "junit.xml").read_text()
    result.assert_outcomes(passed=8)
    rows = [_load(out, f"row{i}") for i in range(5)]
    two = [_load(out, "twoA"), _load(out, "twoB")]
    marked = [_load(out, "marked0"), _load(out, "marked1")]
    fp = rows[0]["fp"]
    assert isinstance(fp, str) and fp
    assert rows[0]["restored"] is False  # the first booted cold and continued
    for r in [*rows[1:], *two]:
        assert r["restored"] is True and r["restored_from"] == fp, r
    every = [*rows, *two, *marked]
    for r in every:
        assert isinstance(r["skew"], float) and r["skew"] < 0.5, r
    assert len({r["rand"] for r in every}) == len(every)  # reseeded per restore
    assert len({r["port"] for r in every}) == len(every)
    assert len({r["run_dir"] for r in every}) == len(every)
    # boot_id is made on its first read, after the snapshot, from the reseeded RNG
    assert len({r["boot_id"] for r in every}) == len(every)
    assert marked[0]["fp"] != fp and marked[0]["restored"] is False
    assert marked[1]["restored"] is True and marked[1]["restored_from"] == marked[0]["fp"]
    for m in marked:
        found = re.search(r"MemTotal:\s+(\d+) kB", str(m["mem"]))
        assert found and 512 * 1024 < int(found.group(1)) < 640 * 1024
        _left(m["run_dir"])
    for r in every:
        _left(r["run_dir"])
    assert f"restored from {fp} in" in text and "booted in" in text
    assert junit.count('name="dtsvirt.vm0.fresh" value="booted"') == 2  # row0, marked0
    assert junit.count(f'name="dtsvirt.vm0.fresh" value="restored:{fp}"') == 6
    assert 'name="dtsvirt.vm0.boot.load"' in junit
    # this run's snapshot dir (named in the restores' log lines; other runs may have theirs)
    snap_dirs = set(re.findall(r"\((/\S+/dtsnap-[^/\s]+)/\S+\.snap as fd 4\)", text))
    assert len(snap_dirs) == 1, snap_dirs
    assert not os.path.exists(snap_dirs.pop())


def test_fresh_boot_gives_distinct_boot_ids(pytester: pytest.Pytester, out: Path) -> None:
    result = _run(pytester, out, """
@pytest.mark.parametrize("i", range(2))
def test_cold(vm, vm_dut, i):
    record(f"cold{i}", vm, vm_dut)
""", "--dtsvirt-fresh", "boot")
    result.assert_outcomes(passed=2)
    cold = [_load(out, "cold0"), _load(out, "cold1")]
    assert cold[0]["boot_id"] != cold[1]["boot_id"]
    assert not any(c["restored"] for c in cold)
    assert "restored from" not in result.stdout.str()


def test_a_broken_snapshot_falls_back_to_a_cold_boot(pytester: pytest.Pytester,
                                                       out: Path) -> None:
    """The snapshot truncated, then deleted, mid-run: the VM boots cold with a warning."""
    result = _run(pytester, out, """
def _snap(vm):
    return vm.options.snapshots.path(vm.fingerprint)

def test_a(vm, vm_dut):
    record("a", vm, vm_dut)
    path = _snap(vm)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size // 2)

def test_b(vm, vm_dut):
    record("b", vm, vm_dut)

@pytest.mark.vm(mem={"size": 576})
def test_c(vm, vm_dut):
    record("c", vm, vm_dut)
    os.unlink(_snap(vm))

@pytest.mark.vm(mem={"size": 576})
def test_d(vm, vm_dut):
    record("d", vm, vm_dut)
""")
    result.assert_outcomes(passed=4)
    a, b, c, d = (_load(out, n) for n in "abcd")
    assert a["restored"] is False and b["restored"] is False
    text = result.stdout.str()
    assert f"restoring from snapshot {a['fp']} failed" in text
    assert "booting cold, and this shape boots cold for the rest of the run" in text
    assert c["restored"] is False and d["restored"] is False and c["fp"] == d["fp"]
    assert f"the snapshot {c['fp']} is gone (deleted or evicted); booting cold" in text


def test_a_shape_one_test_wants_is_not_saved(pytester: pytest.Pytester, out: Path) -> None:
    """The demand counted at collection: a shape only one test asks for boots cold without
    a snapshot; one that two tests ask for is saved and restored. A restored VM's teardown
    (qemu told to quit at once) leaves no qemu, run dir (sockets) or snapshot."""
    result = _run(pytester, out, """
@pytest.mark.vm(mem={"size": 640})
def test_once(vm, vm_dut):
    record("once", vm, vm_dut, reason=vm.cold_reason, run_id=vm.options.run_id,
           snapdir=vm.options.snapshots.dir)

@pytest.mark.parametrize("i", range(2))
def test_twice(vm, vm_dut, i):
    record(f"twice{i}", vm, vm_dut, sockets=[os.path.join(vm.run_dir, n)
                                             for n in os.listdir(vm.run_dir)])
""")
    result.assert_outcomes(passed=3)
    once, first, second = _load(out, "once"), _load(out, "twice0"), _load(out, "twice1")
    text = result.stdout.str()
    assert once["restored"] is False and "one test of this session" in str(once["reason"])
    assert f"saved snapshot {once['fp']}" not in text
    assert first["restored"] is False and second["restored"] is True
    assert f"saved snapshot {first['fp']}" in text and once["fp"] != first["fp"]
    for r in (once, first, second):
        assert not os.path.exists(str(r["run_dir"])), r
    assert second["sockets"] and not any(os.path.exists(p) for p in second["sockets"])
    assert _processes_naming(str(once["run_id"])) == []
    assert not os.path.exists(str(once["snapdir"]))


def _processes_naming(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline[:200]}")
    return found


def test_ctrl_c_during_a_restore_leaves_nothing(pytester: pytest.Pytester, out: Path) -> None:
    """A real SIGINT while the restored qemu loads its stream: no qemu, run dir or snapshot
    of the run is left."""
    result = _run(pytester, out, """
import signal
from pytest_dtsvirt.qemu import migration

def test_a(vm, vm_dut):
    record("a", vm, vm_dut, run_id=vm.options.run_id, snapdir=vm.options.snapshots.dir)

def test_b(function_vm_factory, monkeypatch):
    original = migration.wait_running
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)
    monkeypatch.setattr(migration, "wait_running", interrupted)
    function_vm_factory.start("vm0")

def test_c(vm):
    record("c", vm, vm.dut)
""")
    a = _load(out, "a")
    assert "KeyboardInterrupt" in result.stdout.str()
    assert not (out / "c.json").exists()
    run_id = str(a["run_id"])
    assert not os.path.exists(str(a["snapdir"]))
    workdir = os.path.dirname(str(a["snapdir"]))
    assert [n for n in os.listdir(workdir) if run_id in n] == []
    assert _processes_naming(run_id) == []


def test_two_workers_share_snapshots(pytester: pytest.Pytester, out: Path) -> None:
    """pytest -n 2: the workers share the run's snapshot; one saves, the other boots cold
    meanwhile or restores; every VM is fresh."""
    result = _run(pytester, out, """
@pytest.mark.parametrize("i", range(6))
def test_x(vm, vm_dut, i):
    record(f"x{i}", vm, vm_dut, snapdir=vm.options.snapshots.dir)
""", "-n", "2")
    result.assert_outcomes(passed=6)
    xs = [_load(out, f"x{i}") for i in range(6)]
    assert sum(1 for x in xs if x["restored"]) >= 2
    assert len({x["rand"] for x in xs}) == 6 and len({x["port"] for x in xs}) == 6
    assert len({x["fp"] for x in xs}) == 1
    assert not os.path.exists(str(xs[0]["snapdir"]))


def test_restored_vcpus_are_pinned_before_they_run(pytester: pytest.Pytester,
                                                    out: Path) -> None:
    """cpupin applies to the restored qemu's own vCPU threads (it starts paused)."""
    result = _run(pytester, out, """
@pytest.mark.parametrize("i", range(2))
@pytest.mark.vm(cpu={"number": 2, "cpupin": "1 0"})
def test_pinned(vm, vm_dut, i):
    threads = vm.qmp.vcpu_threads()
    masks = [os.sched_getaffinity(t) for t in threads]
    record(f"pin{i}", vm, vm_dut, masks=[sorted(m) for m in masks])
""")
    result.assert_outcomes(passed=2)
    first, second = _load(out, "pin0"), _load(out, "pin1")
    assert first["restored"] is False and second["restored"] is True
    for r in (first, second):
        assert r["masks"] == [[1], [0]], r


def test_qemu_killed_during_the_save_leaves_nothing(pytester: pytest.Pytester,
                                                    out: Path) -> None:
    """The first VM's qemu SIGKILLed while its snapshot is being written: its test errors
    naming the death, nothing is published as a snapshot, the other tests of that VM are
    refused at once (a failed boot is not repeated in a session), and nothing of the run is
    left: no qemu, no partial stream, no snapshot or run dir."""
    result = _run(pytester, out, """
import signal
from pytest_dtsvirt.qemu import fresh, migration

SAVING = []
_save, _migrate = fresh.Restorable._save_snapshot, migration.migrate

def _saving(self, qmp, plan):
    SAVING.append(self._proc.pid)
    with open(os.path.join(OUT, "a.json"), "w") as f:
        json.dump(dict(run_id=self.options.run_id, snapdir=self.options.snapshots.dir), f)
    return _save(self, qmp, plan)

def _killing(qmp, uri, *args, **kwargs):
    if len(SAVING) == 1:
        os.kill(SAVING.pop(), signal.SIGKILL)
        SAVING.append(0)  # once
    return _migrate(qmp, uri, *args, **kwargs)

fresh.Restorable._save_snapshot = _saving
migration.migrate = _killing

def test_a(vm, vm_dut):
    pass

def test_b(vm, vm_dut):
    pass

def test_c(vm, vm_dut):
    pass
""")
    result.assert_outcomes(errors=3)
    text = result.stdout.str()
    assert re.search(r"ERROR .*test_a - .*qemu exited", text), text[-3000:]
    assert "killed by signal 9 (SIGKILL)" in text
    assert "saving the snapshot" in text and "nothing was saved" in text
    assert "saved snapshot" not in text and "restored from" not in text
    assert len(re.findall(r"ERROR \S*::test_[bc] - Failed: VmStartError", text)) == 2
    assert "failed to boot earlier in this session (test_fresh.py::test_a)" in text
    a = _load(out, "a")
    run_id = str(a["run_id"])
    assert not os.path.exists(str(a["snapdir"]))
    workdir = os.path.dirname(str(a["snapdir"]))
    assert [n for n in os.listdir(workdir) if run_id in n] == []
    assert _processes_naming(run_id) == []
