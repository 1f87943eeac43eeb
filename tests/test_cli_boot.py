"""``dtsvirt boot`` and ``dtsvirt reap`` as a user runs them (real guests, TCG)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from support.runtime import qemu_pids_naming, write_cfg

pytestmark = pytest.mark.slow


def dtsvirt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_dtsvirt", *args], capture_output=True,
                          text=True, timeout=180)


def test_boot_exec_returns_the_command_status_and_shows_phases(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path)
    done = dtsvirt("boot", str(cfg), "vm0", "--accel", "tcg", "--exec", "uname -n; exit 3")
    assert done.returncode == 3, done.stderr[-2000:]
    assert done.stdout.strip() == "dtsvirt-guest"
    for phase in ("qemu", "qmp", "agent", "host_connect", "ssh", "total"):
        assert re.search(rf"^\s*{phase}:\s+\d+\.\d\d s$", done.stderr, re.M), phase


def test_boot_keep_leaves_the_vm_until_killed_then_reap_cleans(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path)
    workdir = tempfile.mkdtemp(prefix="dtk-", dir="/tmp")
    duts = tmp_path / "duts.cfg"
    try:
        # --keep on the local DUT with its own workdir, so reap sees only this run
        duts.write_text(f"[here]\nhost = local\nworkdir = {workdir}\n")
        on_dut = ("--duts", str(duts))
        done = dtsvirt("boot", str(cfg), "vm0", "--accel", "tcg", "--exec", "true", "--keep",
                       *on_dut)
        assert done.returncode == 0, done.stderr[-2000:]
        match = re.search(r"^kill (\d+)", done.stderr, re.M)
        assert match, done.stderr
        pid = int(match.group(1))
        run_dirs = [d for d in os.listdir(workdir) if d.startswith("dtsvirt-")]
        assert len(run_dirs) == 1
        run_dir = os.path.join(workdir, run_dirs[0])
        assert qemu_pids_naming(run_dir) == [pid]  # it outlived `dtsvirt boot`
        assert "ssh -p" in done.stderr and "HMP monitor" in done.stderr
        reaped = dtsvirt("reap", *on_dut)
        assert reaped.returncode == 0 and run_dir not in reaped.stdout  # a kept VM is live
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while qemu_pids_naming(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert qemu_pids_naming(run_dir) == []
        reaped = dtsvirt("reap", *on_dut)
        assert reaped.returncode == 0
        assert reaped.stdout.split() == ["reaped", f"here:{run_dir}"]
        assert os.listdir(workdir) == []
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        duts.unlink(missing_ok=True)
