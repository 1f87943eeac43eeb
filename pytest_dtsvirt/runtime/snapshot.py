"""Snapshots of ready guests on a DUT, shared by the xdist workers of one run.

They live in ``<workdir>/dtsnap-<run id>/`` (mode 0700, in a work dir checked to be ours):
``<fingerprint>.snap`` is a complete migration stream (``<fingerprint>.disk<N>.qcow2``
the disk overlays saved with it), ``<fingerprint>.snap.tmp-<pid>`` one
being written (renamed when complete, so a half-written stream is never read),
``<fingerprint>.saving`` a claim (``mkdir`` is atomic: one worker saves, the others boot cold
meanwhile), ``<fingerprint>.bad`` a mark that a restore failed (the shape boots cold for the
rest of the run), ``owner-<pid>`` one per process using the dir. Each process removes the
snapshots it saved at session end (and the dir once empty); the reaper removes the dir of a
crashed run. The total size is capped: the least recently used snapshots go first.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.runtime.workdir import ensure_workdir
from pytest_dtsvirt.session.base import Session

log = logging.getLogger("pytest_dtsvirt")

SNAP_DIR_PREFIX = "dtsnap-"
#: default cap of the snapshots' total size on a DUT (about 20 guests of 512 MiB)
DEFAULT_CAP_BYTES = 2 * 1024**3
#: a snapshot dir untouched this long, with no live owner we can check, is a leftover
STALE_S = 3600
#: a save claim this old belongs to a process that died while saving
STALE_CLAIM_S = 600
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_FP = re.compile(r"^[0-9a-f]{8,64}$")


def parse_sizes(text: str) -> list[tuple[str, int, int]]:
    """``stat -c '%n %s %X'`` lines -> [(name, bytes, atime)] (pure; bad lines skipped)."""
    out = []
    for line in text.splitlines():
        name, _, rest = line.rpartition(" ")
        name, _, size = name.rpartition(" ")
        if size.isdigit() and rest.isdigit() and name:
            out.append((name, int(size), int(rest)))
    return out


def evictions(files: list[tuple[str, int, int]], cap: int) -> list[str]:
    """Which files to remove, least recently used first, so the total fits ``cap`` (pure)."""
    total = sum(size for _, size, _ in files)
    out = []
    for name, size, _ in sorted(files, key=lambda f: f[2]):
        if total <= cap:
            break
        out.append(name)
        total -= size
    return out


@dataclass
class SnapshotStore:
    """The snapshots of one run on one DUT, as seen by this process."""

    session: Session
    workdir: str
    run_id: str
    cap_bytes: int = DEFAULT_CAP_BYTES
    saved: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # restored from (to warn when one vanishes)
    told: set[str] = field(default_factory=set)
    _ready: bool = False

    @property
    def dir(self) -> str:
        return f"{self.workdir.rstrip('/')}/{SNAP_DIR_PREFIX}{_SAFE.sub('_', self.run_id)[:32]}"

    def path(self, fp: str) -> str:
        if not _FP.match(fp):
            raise ValueError(f"bad snapshot fingerprint {fp!r}")
        return f"{self.dir}/{fp}.snap"

    def _sh(self, script: str, *args: str, timeout: float = 30) -> tuple[bool, str]:
        res = self.session.run(["sh", "-c", script, "sh", *args], timeout=timeout)
        return res.ok, (res.stdout or "") + (res.stderr or "")

    def ensure_dir(self) -> str:
        """Create the private snapshot dir (and the work dir, checked) once."""
        if not self._ready:
            ensure_workdir(self.session, self.workdir)
            ok, out = self._sh('umask 077 && mkdir -p -m 0700 -- "$1" && : > "$1/owner-$2"',
                               self.dir, str(os.getpid()))
            if not ok:
                raise SessionError(f"{self.session.name}: cannot create the snapshot dir "
                                   f"{self.dir}: {out.strip()}")
            self._ready = True
        return self.dir

    def available(self, fp: str) -> str | None:
        """The path of a complete, not-bad snapshot of ``fp`` (its use time refreshed)."""
        if not self._ready:
            return None
        path = self.path(fp)
        ok, _ = self._sh('test ! -e "$2" && test -s "$1" && touch -a -- "$1"', path,
                         f"{self.dir}/{fp}.bad", timeout=10)
        return path if ok else None

    def is_bad(self, fp: str) -> bool:
        return self._ready and self._sh('test -e "$1"', f"{self.dir}/{fp}.bad", timeout=10)[0]

    def claim(self, fp: str) -> str | None:
        """Claim the right to save ``fp``: a temp path to write to, or None when another
        process saves it now (or it is bad)."""
        self.ensure_dir()
        if self.is_bad(fp):
            return None
        # a claim older than STALE_CLAIM_S is a saver that died: take it over
        ok, _ = self._sh('mkdir -m 0700 -- "$1" 2>/dev/null || { '
                         'test -n "$(find "$1" -maxdepth 0 -mmin +"$2" 2>/dev/null)" && '
                         'touch -- "$1"; }', f"{self.dir}/{fp}.saving",
                         str(STALE_CLAIM_S // 60), timeout=10)
        return f"{self.path(fp)}.tmp-{os.getpid()}" if ok else None

    def commit(self, fp: str, tmp: str) -> str:
        """Publish a complete stream (atomic rename), release the claim, apply the cap."""
        ok, out = self._sh('mv -f -- "$1" "$2" && rmdir -- "$3"', tmp, self.path(fp),
                           f"{self.dir}/{fp}.saving")
        if not ok:
            self.abandon(fp, tmp)
            raise SessionError(f"{self.session.name}: publishing snapshot {fp}: {out.strip()}")
        self.saved.add(fp)
        self.seen.add(fp)
        self.enforce_cap()
        return self.path(fp)

    def abandon(self, fp: str, tmp: str | None) -> None:
        """Drop a claim and its partial stream (a failed or interrupted save)."""
        self._sh('rm -f -- "$1"; rmdir -- "$2" 2>/dev/null; true', tmp or "/nonexistent",
                 f"{self.dir}/{fp}.saving")

    def mark_bad(self, fp: str) -> None:
        """A restore of ``fp`` failed: every process boots this shape cold from now on."""
        self._sh(': > "$1" && rm -f -- "$2"', f"{self.dir}/{fp}.bad", self.path(fp))

    def enforce_cap(self) -> list[str]:
        ok, out = self._sh('cd -- "$1" && for f in *.snap; do [ -e "$f" ] && '
                           'stat -c "%n %s %X" -- "$f"; done; true', self.dir)
        gone = evictions(parse_sizes(out), self.cap_bytes) if ok else []
        for name in gone:
            log.warning("snapshot cap of %d MiB reached: removing the least recently used "
                        "snapshot %s", self.cap_bytes >> 20, name)
            self._sh('rm -f -- "$1" "${1%.snap}".disk*.qcow2', f"{self.dir}/{name}")
        return gone

    def close(self) -> None:
        """Remove what this process saved and its owner mark; the dir once empty."""
        if not self._ready:
            return
        fps = sorted(self.saved)
        script = ('d=$1; o=$2; shift 2; for f in "$@"; do '
                  'rm -f -- "$d/$f.snap" "$d/$f".disk*.qcow2; done; rm -f -- "$d/owner-$o"; '
                  'if [ -z "$(ls -A -- "$d" | grep owner-)" ]; then rm -rf -- "$d"; fi; true')
        try:
            self._sh(script, self.dir, str(os.getpid()), *fps)
        except SessionError as exc:
            log.warning("removing the snapshots in %s: %s", self.dir, exc)
        self.saved.clear()
        self._ready = False


def reap(session: Session, workdir: str, listing: list[str], is_local: bool) -> list[str]:
    """Snapshot dirs of crashed runs under ``workdir`` (names from ``listing``): removed
    when no owner process is alive (local DUT) or, on a remote DUT, when untouched for
    :data:`STALE_S`. Returns what was removed."""
    removed = []
    for name in listing:
        if not name.startswith(SNAP_DIR_PREFIX):
            continue
        path = f"{workdir.rstrip('/')}/{name}"
        if is_local:
            script = ('for o in "$1"/owner-*; do p=${o##*/owner-}; '
                      '[ -d "/proc/$p" ] && exit 1; done; exit 0')
        else:
            script = (f'test -z "$(find "$1" -maxdepth 1 -mmin -{STALE_S // 60} '
                      '-print -quit 2>/dev/null)"')
        res = session.run(["sh", "-c", script, "sh", path], timeout=20)
        if res.ok:
            session.run(["rm", "-rf", "--", path], timeout=60)
            removed.append(path)
    return removed


__all__ = ["DEFAULT_CAP_BYTES", "SNAP_DIR_PREFIX", "SnapshotStore", "evictions",
           "parse_sizes", "reap"]
