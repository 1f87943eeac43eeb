"""Shapes (pure) and the snapshot store on a local DUT (real files, real shell)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from pytest_dtsvirt.qemu import shape
from pytest_dtsvirt.runtime import rundir, snapshot
from pytest_dtsvirt.runtime.snapshot import SnapshotStore
from pytest_dtsvirt.session.local import LocalSession

ARGV = ["qemu-system-x86_64", "-name", "guest=vm0", "-pidfile", "/w/dtsvirt-r-vm0-AAA/qemu.pid",
        "-kernel", "/c/guest-1/vmlinuz", "-initrd", "/c/guest-1/initrd",
        "-drive", "file=/img/a.qcow2,if=virtio",
        "-netdev", "user,id=n0,hostfwd=tcp:127.0.0.1:0-:22", "-vnc", ":3,password=on",
        "-chardev", "socket,id=qmp,path=/w/dtsvirt-r-vm0-AAA/qmp.sock,server=on,wait=off"]


def test_normalize_drops_per_instance_values() -> None:
    other = [a.replace("AAA", "BBB") for a in ARGV]
    other[other.index("-vnc") + 1] = ":7,password=on"
    other[other.index("-netdev") + 1] = "user,id=n0,hostfwd=tcp:127.0.0.1:40000-:22"
    other.extend(["-chardev", "socket,id=char0,path=/tmp/dtsvirt-vhost.B/vhost0"])
    argv = [*ARGV, "-chardev", "socket,id=char0,path=/tmp/dtsvirt-vhost.A/vhost0"]
    assert (shape.normalize_argv(argv, "/w/dtsvirt-r-vm0-AAA")
            == shape.normalize_argv(other, "/w/dtsvirt-r-vm0-BBB"))
    assert "<vnc>,password=on" in shape.normalize_argv(ARGV, "/w/dtsvirt-r-vm0-AAA")
    fp = shape.fingerprint("QEMU 7.2", argv, "/w/dtsvirt-r-vm0-AAA", {"/k": "1"})
    assert fp == shape.fingerprint("QEMU 7.2", other, "/w/dtsvirt-r-vm0-BBB", {"/k": "1"})
    assert fp != shape.fingerprint("QEMU 8.0", argv, "/w/dtsvirt-r-vm0-AAA", {"/k": "1"})
    assert fp != shape.fingerprint("QEMU 7.2", argv, "/w/dtsvirt-r-vm0-AAA", {"/k": "2"})
    bigger = [*argv, "-m", "768"]
    assert fp != shape.fingerprint("QEMU 7.2", bigger, "/w/dtsvirt-r-vm0-AAA", {"/k": "1"})


def test_image_paths_and_blockers() -> None:
    assert shape.image_paths(ARGV) == ["/c/guest-1/vmlinuz", "/c/guest-1/initrd",
                                       "/img/a.qcow2"]
    assert "writable" in str(shape.restore_blocker(ARGV))
    assert shape.restore_blocker([a.replace("if=virtio", "if=virtio,readonly=on")
                                  for a in ARGV]) is None
    assert "vfio-pci" in str(shape.restore_blocker([*ARGV, "-device", "vfio-pci,host=1:0.0"]))
    assert "script" in str(shape.restore_blocker(
        [*ARGV, "-netdev", "tap,id=t,script=/etc/qemu-ifup"]))
    ro = [a.replace("if=virtio", "if=virtio,readonly=on") for a in ARGV]
    assert shape.restore_blocker([*ro, "-netdev", "tap,id=t,script=no"]) is None
    assert "daemonizes" in str(shape.restore_blocker([*ARGV, "-daemonize"]))
    assert "live migration target" in str(shape.restore_blocker(
        [*ro, "-incoming", "tcp:127.0.0.1:4444"]))
    assert "usercmd" in str(shape.restore_blocker(ARGV, ("-foo",)))
    assert "snapshot=on" in str(shape.restore_blocker(
        [*ARGV, "-drive", "file=/x.img,snapshot=on"]))


def test_version_blocker() -> None:
    assert shape.version_blocker("QEMU emulator version 7.2.22 (Debian)") is None
    assert "older than 5.0" in str(shape.version_blocker("QEMU emulator version 4.2.1"))
    assert "unknown" in str(shape.version_blocker("?"))


def test_lru_evictions() -> None:
    files = snapshot.parse_sizes("a.snap 100 5\nb.snap 100 1\nbad line\nc.snap 100 9\n")
    assert [f[0] for f in files] == ["a.snap", "b.snap", "c.snap"]
    assert snapshot.evictions(files, 300) == []
    assert snapshot.evictions(files, 150) == ["b.snap", "a.snap"]


@pytest.fixture
def store() -> Iterator[SnapshotStore]:
    with tempfile.TemporaryDirectory(prefix="dtk-snap-") as tmp:
        workdir = os.path.join(tmp, "wd")
        s = SnapshotStore(LocalSession(), workdir, "run1", cap_bytes=2048)
        yield s
        s.close()
        assert not os.path.exists(s.dir)


def test_claim_commit_bad_and_cap(store: SnapshotStore) -> None:
    fp, fp2 = "0123456789abcdef", "fedcba9876543210"
    store.ensure_dir()
    assert os.stat(store.dir).st_mode & 0o777 == 0o700
    assert store.available(fp) is None
    tmp = store.claim(fp)
    assert tmp is not None and store.claim(fp) is None  # one saver at a time
    with open(tmp, "wb") as f:
        f.write(b"x" * 1500)
    assert store.available(fp) is None  # a half-written stream is never offered
    assert store.commit(fp, tmp) == store.path(fp)
    assert store.available(fp) == store.path(fp)
    tmp2 = store.claim(fp2)
    assert tmp2 is not None
    with open(tmp2, "wb") as f:
        f.write(b"y" * 1500)
    os.utime(store.path(fp), (1, 1))  # fp used least recently
    store.commit(fp2, tmp2)  # 3000 bytes > cap 2048: the LRU one goes
    assert store.available(fp) is None and store.available(fp2) is not None
    store.mark_bad(fp2)
    assert store.available(fp2) is None and store.claim(fp2) is None
    stale = os.path.join(store.dir, "bbbbbbbbbbbbbbbb.saving")
    os.mkdir(stale)
    assert store.claim("bbbbbbbbbbbbbbbb") is None  # a live claim of another saver
    os.utime(stale, (1, 1))
    assert store.claim("bbbbbbbbbbbbbbbb") is not None  # its saver died long ago
    abandoned = store.claim("aaaaaaaaaaaaaaaa")
    store.abandon("aaaaaaaaaaaaaaaa", abandoned)
    assert store.claim("aaaaaaaaaaaaaaaa") is not None


def test_reaper_removes_snapshot_dirs_of_dead_runs() -> None:
    with tempfile.TemporaryDirectory(prefix="dtk-snap-") as tmp:
        workdir = os.path.join(tmp, "wd")
        live = SnapshotStore(LocalSession(), workdir, "live")
        live.ensure_dir()
        dead = os.path.join(workdir, "dtsnap-dead")
        os.mkdir(dead, 0o700)
        gone = subprocess.Popen(["true"])
        gone.wait()
        open(os.path.join(dead, f"owner-{gone.pid}"), "w").close()
        open(os.path.join(dead, "0123456789abcdef.snap"), "w").close()
        assert rundir.reap(LocalSession(), workdir) == [dead]
        assert os.path.isdir(live.dir) and not os.path.exists(dead)
        live.close()


def test_overlay_rewrite_is_pure_and_keeps_other_drives() -> None:
    from pytest_dtsvirt.qemu import overlay

    argv = ["-drive", "file=/img/a.raw,if=virtio,snapshot=on", "-drive", "file=/img/b.raw",
            "-drive", "file=/img/c.raw,snapshot=on"]
    assert overlay.bases(argv) == ["/img/a.raw", "/img/c.raw"]
    out, disks = overlay.rewrite(argv, "/w/run/", {"/img/a.raw": "raw"})
    assert out == ["-drive", "file=/w/run/disk0.qcow2,format=qcow2,if=virtio",
                   "-drive", "file=/img/b.raw", "-drive", "file=/img/c.raw,snapshot=on"]
    assert disks == [overlay.Overlay("/w/run/disk0.qcow2", "/img/a.raw", "raw")]
    assert overlay.saved_name("/s/0123.snap", 1) == "/s/0123.disk1.qcow2"
    # the overlay is the VM's own: not "writable" for the restore check
    assert shape.restore_blocker(out[:2], (), "/w/run") is None
    assert "writable" in str(shape.restore_blocker(out[2:4], (), "/w/run"))
