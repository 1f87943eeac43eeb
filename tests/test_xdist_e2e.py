"""pytest-xdist across two DUTs, end to end: two real sshd DUTs on loopback addresses, an
inner ``pytest -n 2 --dtsvirt-duts FILE`` session of 4 tests that each boot a fresh guest.

Checks that worker gwN takes DUT N mod 2, that each worker's guests run with qemu started
through its own DUT's SSH session (run dirs in that DUT's workdir, qemu a descendant of that
DUT's sshd), that every test got its own guest, and that nothing is left afterwards (qemu,
run dirs, SSH connections). Boots 4 guests (2 per worker, the workers in parallel).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from support.sshd import SshdHandle, start_sshd

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

ADDRESSES = ("127.0.0.4", "127.0.0.5")
DUT_NAMES = ("dut-a", "dut-b")
RECORD_ENV = "DTSVIRT_XDIST_E2E_RECORD"

CFG = """\
[vm0]
login =
    user=root,password=tester;
"""

INNER = """
import json, os
import pytest

def _ancestors(pid):
    chain = []
    while pid > 1:
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rpartition(") ")[2].split()[1])
        chain.append(pid)
    return chain

def _qemu_pids(run_dir):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except OSError:
            continue
        if comm.startswith("qemu-system") and run_dir in cmdline:
            found.append(int(pid))
    return found

@pytest.mark.parametrize("i", range(4))
def test_guest(vm, vm_dut, dut, i):
    boot_id = vm_dut.send_expect("cat /proc/sys/kernel/random/boot_id", "# ", 30)
    qemu = _qemu_pids(vm.run_dir)
    record = {
        "i": i,
        "worker": os.environ.get("PYTEST_XDIST_WORKER"),
        "dut": dut.config.name,
        "session": type(vm.dut.session).__name__,
        "boot_id": boot_id,
        "run_dir": vm.run_dir,
        "qemu_ancestors": [_ancestors(pid) for pid in qemu],
    }
    with open(os.environ["@RECORD_ENV@"], "a") as f:
        f.write(json.dumps(record) + "\\n")
""".replace("@RECORD_ENV@", RECORD_ENV)


def _cmdlines() -> Iterator[tuple[int, str]]:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            yield int(pid), raw.replace(b"\0", b" ").decode(errors="replace")


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not condition():
        time.sleep(0.1)


def _no_children(handle: SshdHandle) -> bool:
    return not handle.children()


@pytest.fixture
def duts(tmp_path: Path) -> Iterator[list[tuple[SshdHandle, str]]]:
    """Two sshd DUTs, each with a short private workdir; stopped and removed at the end."""
    started: list[tuple[SshdHandle, str]] = []
    try:
        for address in ADDRESSES:
            workdir = tempfile.mkdtemp(prefix="dx-", dir="/tmp")  # short: unix socket paths
            try:
                started.append((start_sshd(tmp_path, address=address), workdir))
            except BaseException:
                shutil.rmtree(workdir, ignore_errors=True)
                raise
        yield started
    finally:
        for handle, workdir in started:
            handle.stop()
            shutil.rmtree(workdir, ignore_errors=True)


def test_two_workers_two_duts(pytester: pytest.Pytester, duts: list[tuple[SshdHandle, str]],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    sections = []
    for name, (handle, workdir) in zip(DUT_NAMES, duts, strict=True):
        sections.append(f"[{name}]\nhost = {handle.host}\nport = {handle.port}\n"
                        f"user = {handle.user}\nkey = {handle.key_path}\n"
                        f"known_hosts = {handle.known_hosts}\nworkdir = {workdir}\n")
    duts_file = pytester.path / "duts.cfg"
    duts_file.write_text("\n".join(sections))
    (pytester.path / "conf").mkdir()
    (pytester.path / "conf" / "dx.cfg").write_text(CFG)
    pytester.makepyfile(test_dx=INNER)
    records_file = pytester.path / "records.jsonl"
    junit = pytester.path / "junit.xml"
    monkeypatch.setenv(RECORD_ENV, str(records_file))

    began = time.monotonic()
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dtsvirt-duts", str(duts_file), "--dtsvirt-accel", "tcg",
        "-p", "no:cacheprovider", "-o", "log_cli=false",
        f"--junitxml={junit}", timeout=600)
    print(f"inner run: {time.monotonic() - began:.1f} s")
    for case in ElementTree.parse(junit).iter("testcase"):  # boot phases, for the log
        phases = {p.get("name"): p.get("value") for p in case.iter("property")}
        print(case.get("name"), case.get("time"), phases)
    result.assert_outcomes(passed=4)

    records = [json.loads(line) for line in records_file.read_text().splitlines()]
    for r in records:
        print(r)
    assert sorted(r["i"] for r in records) == [0, 1, 2, 3], records
    # each worker on its own DUT (gwN -> DUT N mod 2), and both DUTs used
    assert {r["worker"] for r in records} == {"gw0", "gw1"}, records
    for r in records:
        assert r["dut"] == {"gw0": DUT_NAMES[0], "gw1": DUT_NAMES[1]}[r["worker"]], r
        assert r["session"] == "SshSession", r
    # a fresh guest per test
    boot_ids = [r["boot_id"].strip().splitlines()[-1].strip() for r in records]
    assert all(len(b) == 36 for b in boot_ids), boot_ids
    assert len(set(boot_ids)) == 4, boot_ids
    # qemu ran on the worker's DUT: run dir in its workdir, qemu under its sshd
    for r in records:
        handle, workdir = duts[DUT_NAMES.index(r["dut"])]
        other_handle, _ = duts[1 - DUT_NAMES.index(r["dut"])]
        assert r["run_dir"].startswith(f"{workdir}/dtsvirt-"), r
        assert len(r["qemu_ancestors"]) == 1, r
        assert handle.pid in r["qemu_ancestors"][0], r
        assert other_handle.pid not in r["qemu_ancestors"][0], r

    # nothing left behind: qemu, run dirs, SSH connections
    workdirs = [workdir for _, workdir in duts]
    for pid, cmdline in _cmdlines():
        assert not any(w in cmdline for w in workdirs), f"leaked process {pid}: {cmdline[:300]}"
    for workdir in workdirs:
        assert not [n for n in os.listdir(workdir) if n.startswith("dtsvirt-")], \
            os.listdir(workdir)
    for handle, _ in duts:
        _wait_for(functools.partial(_no_children, handle))  # closing takes a moment
        assert handle.children() == [], (handle.host, handle.children())
