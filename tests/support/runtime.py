"""Helpers for the runtime tests: suite configs in tmp dirs and leak checks."""

from __future__ import annotations

import os
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pytest_dtsvirt.hypervisor import VmOptions
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.session.dut import Dut, connect
from pytest_dtsvirt.session.dutconfig import local_dut_config

BASE_VM = """\
[vm0]
login =
    user=root,password=tester;
"""

#: the DPDK variant of the test guest (testpmd inside)
DPDK_VM = """\
[vm0]
guest =
    dpdk=yes;
login =
    user=root,password=tester;
"""


def local_dut() -> Iterator[Dut]:
    """This host as a DUT, closed afterwards: the ``dut`` fixture of conftest.py (function
    scope: some tests close it); a module that shares one makes it module-scoped with
    ``dut = pytest.fixture(scope="module", name="dut")(local_dut)``."""
    d = connect(local_dut_config())
    yield d
    d.close()


def write_cfg(directory: Path, text: str = BASE_VM, suite: str = "runtime") -> Path:
    """``directory/<suite>.cfg`` with ``text`` (dedented)."""
    path = directory / f"{suite}.cfg"
    path.write_text(textwrap.dedent(text))
    return path


def make_vm(dut: Dut, cfg: Path, vm_name: str = "vm0", **options: object) -> QEMUKvm:
    """A QEMUKvm for ``cfg`` (TCG, a generous budget for a loaded 2-core machine)."""
    opts = {"accel": "tcg", "boot_timeout": 90.0, **options}
    return QEMUKvm(dut, vm_name, cfg.stem, VmOptions(cfg_path=str(cfg), **opts))  # type: ignore[arg-type]


def qemu_pids_naming(fragment: str) -> list[int]:
    """PIDs of running qemu processes whose command line contains ``fragment``."""
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout
    pids = []
    for word in out.split():
        try:
            cmdline = Path(f"/proc/{word}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            comm = Path(f"/proc/{word}/comm").read_text()
        except OSError:
            continue
        if comm.startswith("qemu-system") and fragment in cmdline:
            pids.append(int(word))
    return pids


def gone_or_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited (reaped or not); it may be reaped while we look."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[0] == "Z"


def assert_nothing_left(vm: QEMUKvm) -> None:
    """No qemu of this VM runs and its run dir (sockets, pidfile, logs) is gone."""
    run_dir = vm.run_dir
    assert run_dir is not None, "the VM never got a run dir"
    assert qemu_pids_naming(run_dir) == [], f"qemu of {run_dir} still running"
    assert not os.path.exists(run_dir), f"{run_dir} left behind: {os.listdir(run_dir)}"


def start_in_thread(vm: QEMUKvm) -> tuple[threading.Thread, list[BaseException]]:
    """``vm.start()`` in a thread; the list receives what it raised."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            vm.start()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


def wait_for_qemu_pid(vm: QEMUKvm, timeout: float = 30) -> int:
    """qemu's PID as soon as the supervisor reported it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = vm._proc
        if proc is not None and proc.pid is not None:
            return proc.pid
        time.sleep(0.01)
    raise AssertionError("qemu never started")
