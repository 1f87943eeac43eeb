"""The disk guest (``guest disk=yes``) restored from a snapshot (issue 11), with real guests:
it boots from its disk (SYSLINUX, no ``-kernel``), gets its password through the agent, and
has an ext4 data partition at /data. An inner pytest runs three function-scoped tests with
``--dtsvirt-fresh restore``: a file written (and synced) on /data by one test is gone in the
next, e2fsck finds the file system clean in each, and the image in the cache is unchanged."""

from __future__ import annotations

import json
import logging
import os

import pytest

from pytest_dtsvirt.guest import ensure_guest_image
from pytest_dtsvirt.guest.apt import sha256_file

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.slow

CFG = """\
[vm0]
guest =
    disk=yes;
mem =
    size=512;
start =
    wait_seconds=240;
"""

BODY = """
import json, os
import pytest
OUT = {out!r}

def sh(vm_dut, cmd):
    text = vm_dut.send_expect(f"{{cmd}}; echo rc=$?", "# ", 60)
    body, _, rc = text.rpartition("rc=")
    return int(rc.strip()[:1]), body

def check_clean(vm_dut):
    # read-only while e2fsck reads the device: the journal is flushed, the check is exact
    assert sh(vm_dut, "sync && mount -o remount,ro /data")[0] == 0
    rc, out = sh(vm_dut, "e2fsck -fn $(findfs LABEL=dtsvirt-data)")
    assert sh(vm_dut, "mount -o remount,rw /data")[0] == 0
    return rc, out

@pytest.mark.parametrize("i", range(3))
def test_disk(vm, vm_dut, i):
    seen = {{n: sh(vm_dut, f"test -e /data/mark-{{n}}")[0] == 0 for n in range(3)}}
    fsck_rc, fsck = check_clean(vm_dut)
    mounts = sh(vm_dut, "grep ' /data ' /proc/mounts; cat /proc/cmdline")[1]
    wrote = sh(vm_dut, f"echo {{i}} > /data/mark-{{i}} && sync && cat /data/mark-{{i}}")
    opts = vm.options
    snapdir = opts.snapshots.dir
    doc = dict(restored=vm.restored, restored_from=vm.restored_from, fp=vm.fingerprint,
               run_dir=vm.run_dir, argv=vm.argv, seen=seen, fsck_rc=fsck_rc, fsck=fsck,
               mounts=mounts, wrote=wrote[0], snapdir=snapdir,
               overlay=os.path.exists(os.path.join(vm.run_dir, "disk0.qcow2")),
               saved=sorted(n for n in os.listdir(snapdir) if n.endswith(".qcow2"))
               if snapdir and os.path.isdir(snapdir) else [])
    with open(os.path.join(OUT, f"disk{{i}}.json"), "w") as f:
        json.dump(doc, f)
"""


def test_disk_guest_restores_with_a_clean_disk_and_no_earlier_writes(
        pytester: pytest.Pytester) -> None:
    image = ensure_guest_image(disk=True, progress=logging.getLogger("dtsvirt.guest").info)
    assert image.disk is not None
    before = sha256_file(image.disk)
    out = pytester.path / "out"
    out.mkdir()
    conf = pytester.path / "conf"
    conf.mkdir()
    (conf / "disk.cfg").write_text(CFG)
    pytester.makepyfile(test_disk=BODY.format(out=str(out)))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--dtsvirt-accel", "tcg", f"--dtsvirt-conf-dir={conf}",
        "--dtsvirt-fresh", "restore", "-o", "log_cli=true", "-o", "log_cli_level=INFO",
        timeout=900)
    result.assert_outcomes(passed=3)
    runs = [json.loads((out / f"disk{i}.json").read_text()) for i in range(3)]
    fp = runs[0]["fp"]
    assert isinstance(fp, str) and fp
    assert runs[0]["restored"] is False  # booted cold, saved, continued
    for r in runs[1:]:
        assert r["restored"] is True and r["restored_from"] == fp, r
    for i, r in enumerate(runs):
        assert "-kernel" not in r["argv"], r["argv"]
        assert any(a.startswith(f"file={r['run_dir']}/disk0.qcow2,") for a in r["argv"])
        assert r["overlay"] is True
        assert "/data ext4 rw" in r["mounts"] and "BOOT_IMAGE=/vmlinuz" in r["mounts"], r
        # no test sees a file an earlier one wrote and synced
        assert r["seen"] == {"0": False, "1": False, "2": False}, (i, r["seen"])
        assert r["wrote"] == 0
        assert r["fsck_rc"] == 0 and "dtsvirt-data: " in r["fsck"], r["fsck"]
        assert "Fix?" not in r["fsck"] and "UNEXPECTED" not in r["fsck"]
    # the snapshot's overlay was saved next to its stream while the run lasted
    assert runs[1]["saved"] == [f"{fp}.disk0.qcow2"], runs[1]["saved"]
    text = result.stdout.str()
    assert f"restored from {fp} in" in text
    for r in runs:
        assert not os.path.exists(r["run_dir"]), f"{r['run_dir']} left behind"
    assert not os.path.exists(runs[0]["snapdir"]), "snapshot dir left behind"
    assert sha256_file(image.disk) == before
