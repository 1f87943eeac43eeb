"""Fresh guests from a snapshot: the restore half of ``QEMUKvm`` (a mixin, like teardown).

The first VM of a shape (see ``qemu/shape.py``) boots cold; once its agent answers, its
``host_connect`` address is up and sshd greets, and before any login or password, it is
paused and saved to the run's snapshot store (``runtime/snapshot.py``), then continues:
the test that booted it sees the very state every later restore starts from. Later VMs of
the same shape start the same argv plus ``-incoming fd:4`` with the snapshot open as that
fd (``runtime/supervisor.py``: qemu reads the file itself, no ``cat``), get pinned, run
as soon as the stream is loaded (it carries no run state: ``shape.NO_GLOBAL_STATE``), get
the host's wall clock through the agent and a fresh login password. The kernel RNG is
reseeded by the new VM generation id (``vmgenid``) of each start. ``boot_id`` and the SSH
host keys are the snapshot's (the same for every VM of a shape in a run).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_dtsvirt.errors import AgentReplyError, DtsvirtError, NotYet
from pytest_dtsvirt.qemu import migration, overlay, shape
from pytest_dtsvirt.qemu.overlay import Overlay

if TYPE_CHECKING:
    from pytest_dtsvirt.runtime.ladder import Ladder
    from pytest_dtsvirt.runtime.snapshot import SnapshotStore
    from pytest_dtsvirt.session.base import Session

log = logging.getLogger("pytest_dtsvirt")

#: bound of writing a snapshot (an 88 MB stream takes well under a second)
SAVE_TIMEOUT_S = 60.0
#: budget of a restore before it falls back to a cold boot
RESTORE_BUDGET_S = 45.0

#: bound of hashing the images of a shape
HASH_TIMEOUT_S = 300.0
#: a ``guest-set-time`` that answers within this many seconds set the guest's clock at most
#: this far behind the host's (the time is taken when the request is sent); a slower one is
#: sent again, with a new time
CLOCK_SLACK_S = 0.2
#: ``guest-set-time`` requests at most
CLOCK_ATTEMPTS = 3

_version_memo: dict[tuple[str, str], str] = {}
_hash_memo: dict[tuple[str, str, str], str] = {}
_hash_lock = threading.Lock()
#: the guest's /etc/shadow as saved in the snapshot of each shape (before any password):
#: a restore writes its password into it without reading it first
_shadows: dict[str, str] = {}


@dataclass
class FreshPlan:
    """What this start does about snapshots."""

    store: SnapshotStore
    fingerprint: str
    restore: str | None = None  # the snapshot to restore from
    save_tmp: str | None = None  # the claimed temp path to save to after the cold boot
    disks: list[Overlay] = field(default_factory=list)  # saved and restored with the stream
    #: the shape still being worked out (images being hashed) while this VM boots cold;
    #: :meth:`Restorable._settle` finishes it before the save
    pending: Callable[[], str] | None = None
    demand: int | None = None


def qemu_version(session: Session, qemu: str) -> str:
    key = (session.name, qemu)
    if key not in _version_memo:
        res = session.run([qemu, "--version"], timeout=20)
        _version_memo[key] = res.stdout.splitlines()[0] if res.ok and res.stdout else "?"
    return _version_memo[key]


def image_hashes(session: Session, paths: list[str],
                 cached_only: bool = False) -> dict[str, str] | None:
    """Content hashes of the image files (memoized by path, size, mtime and inode);
    ``cached_only``: None instead of hashing a file not hashed yet. One file is hashed at a
    time in this process (a second caller waits for the first's result)."""
    out: dict[str, str] = {}
    stats = _stats(session, paths)
    for path, st in zip(paths, stats, strict=True):
        key = (session.name, path, st)
        if key not in _hash_memo:
            if cached_only:
                return None
            with _hash_lock:
                if key not in _hash_memo:
                    res = session.run(["sha256sum", "--", path], timeout=300)
                    _hash_memo[key] = res.stdout.split()[0] if res.ok and res.stdout else "?"
        out[path] = _hash_memo[key]
    return out


def _stats(session: Session, paths: list[str]) -> list[str]:
    """``size mtime inode`` of each path (one command for all; "" for one that is gone)."""
    if not paths:
        return []
    res = session.run(["stat", "-L", "-c", "%s %Y %i", "--", *paths], timeout=20)
    lines = res.stdout.splitlines()
    if res.ok and len(lines) == len(paths):
        return [line.strip() for line in lines]
    return [session.run(["stat", "-L", "-c", "%s %Y %i", "--", p], timeout=20).stdout.strip()
            for p in paths]


def _in_background(fn: Callable[[], str]) -> Callable[[], str]:
    """Run ``fn`` in a thread now; the returned function waits for its result (or error)."""
    future: Future[str] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:  # handed over by future.result()
            future.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="dtsvirt-image-hash").start()
    return lambda: future.result(timeout=HASH_TIMEOUT_S)


class Restorable:
    """Mixin for QEMUKvm: planning, saving and the restored guest's fix-ups."""

    vm_name: str
    #: whether this VM was restored from a snapshot, and which (its fingerprint)
    restored: bool = False
    restored_from: str | None = None
    #: the fingerprint of this VM's shape ("" when it cannot be restored)
    fingerprint: str = ""
    #: why this VM booted cold although restore is on ("" if not)
    cold_reason: str = ""

    def _fresh_plan(self, store: SnapshotStore | None, session: Session, argv: list[str],
                    run_dir: str, qemu: str, usercmd: tuple[str, ...],
                    bases: list[str], demand: int | None = None) -> FreshPlan | None:
        if store is None:
            return None
        version = qemu_version(session, qemu)
        blocker = (shape.restore_blocker(argv, usercmd, run_dir)
                   or shape.version_blocker(version))
        images = [p for p in shape.image_paths(argv) if not p.startswith(run_dir)] + bases
        hashes = image_hashes(session, images, cached_only=blocker is None)
        if hashes is None:
            # the first VM of these images in this process: no snapshot of them can be ours
            # yet; it boots cold while they are hashed (hundreds of ms of sha256 for a
            # kernel), and the shape is settled before the save
            store.ensure_dir()
            hashed = _in_background(lambda: shape.fingerprint(
                version, argv, run_dir, image_hashes(session, images) or {}))
            return FreshPlan(store, "", pending=hashed, demand=demand)
        fp = shape.fingerprint(version, argv, run_dir, hashes)
        if blocker is not None:
            self.cold_reason = blocker
            if fp not in store.told:
                store.told.add(fp)
                log.warning("%s: booting cold, not from a snapshot: %s", self.vm_name, blocker)
            return None
        self.fingerprint = fp
        store.ensure_dir()
        path = store.available(fp)
        if path is not None:
            store.seen.add(fp)
            return FreshPlan(store, fp, restore=path)
        if fp in store.seen and not store.is_bad(fp):
            log.warning("%s: the snapshot %s is gone (deleted or evicted); booting cold",
                        self.vm_name, fp)
            store.seen.discard(fp)
        plan = FreshPlan(store, fp, demand=demand)
        self._claim(plan)
        return plan if plan.save_tmp is not None else None

    def _claim(self, plan: FreshPlan) -> None:
        """Claim the right to save ``plan.fingerprint`` (``plan.save_tmp``), unless no later
        test wants the shape or another process saves it (``cold_reason`` says which)."""
        store, fp = plan.store, plan.fingerprint
        if plan.demand is not None and plan.demand <= 1:  # no later test wants it
            self.cold_reason = ("one test of this session asks for this shape: booted "
                                "without saving a snapshot")
            if fp not in store.told:
                store.told.add(fp)
                log.info("%s: %s (%s)", self.vm_name, self.cold_reason, fp)
            return
        plan.save_tmp = store.claim(fp)
        if plan.save_tmp is None:
            self.cold_reason = ("the snapshot of this shape is marked bad" if store.is_bad(fp)
                                else "another process is saving the snapshot of this shape")

    def _settle(self, plan: FreshPlan) -> None:
        """Finish a pending shape (the cold boot ran meanwhile): its fingerprint, then the
        claim to save it unless another process saved it already."""
        assert plan.pending is not None
        pending, plan.pending = plan.pending, None
        try:
            plan.fingerprint = self.fingerprint = pending()
        except (DtsvirtError, TimeoutError) as exc:
            log.warning("%s: hashing its images failed (%s); not saving a snapshot",
                        self.vm_name, exc)
            return
        if plan.store.available(plan.fingerprint) is not None:
            plan.store.seen.add(plan.fingerprint)  # another process saved it meanwhile
            return
        self._claim(plan)

    # -- pieces called by QEMUKvm._launch ------------------------------------------------
    def _sshd_greets(self, link: Session, port: int, timeout: float) -> None:
        sock = link.open_tcp("127.0.0.1", port, timeout)
        try:
            sock.settimeout(timeout)
            banner = sock.recv(64)
        finally:
            sock.close()
        if not banner.startswith(b"SSH-"):
            raise NotYet(f"sshd did not greet yet ({banner[:20]!r})")

    def _save_snapshot(self, qmp: Any, plan: FreshPlan) -> None:
        """Pause, write the stream to the claimed temp file, publish it, run on. A failed
        save publishes nothing: the claim and its partial stream are dropped (the next VM
        of the shape may claim it again)."""
        assert plan.save_tmp is not None
        began = time.monotonic()
        try:
            migration.stop(qmp)
            migration.migrate(qmp, migration.save_uri(plan.save_tmp), SAVE_TIMEOUT_S)
            # paused, block devices flushed: the overlays match the stream
            overlay.copy(plan.store.session, [
                (d.path, overlay.saved_name(plan.store.path(plan.fingerprint), i))
                for i, d in enumerate(plan.disks)])
            plan.store.commit(plan.fingerprint, plan.save_tmp)
        except BaseException as exc:
            plan.store.abandon(plan.fingerprint, plan.save_tmp)
            if not isinstance(exc, DtsvirtError):
                raise
            log.warning("%s: saving the snapshot %s failed (%s); nothing was saved",
                        self.vm_name, plan.fingerprint, exc)
        else:
            log.info("%s: saved snapshot %s in %.2f s", self.vm_name, plan.fingerprint,
                     time.monotonic() - began)
        finally:
            plan.save_tmp = None
            try:
                migration.cont(qmp)
            except DtsvirtError as exc:
                log.warning("%s: resuming after the snapshot: %s", self.vm_name, exc)

    def _wait_running(self, qmp: Any, ladder: Ladder) -> None:
        """Until the restored guest runs: qemu starts it once the stream is loaded (there is
        no saved run state, ``shape.NO_GLOBAL_STATE``) and says so with a ``RESUME`` event,
        so nothing is polled. A stream qemu cannot load makes it exit (the ladder reports
        that, and the VM boots cold)."""
        migration.wait_running(qmp, ladder.attempt_timeout(RESTORE_BUDGET_S))

    def _snapshot_shadow(self) -> str | None:
        """The /etc/shadow this VM's snapshot holds, if this process read it already."""
        return _shadows.get(self.fingerprint) if self.fingerprint else None

    def _remember_shadow(self, text: str) -> None:
        """``text`` (read before this VM's password was set) is its shape's /etc/shadow."""
        if self.fingerprint:
            _shadows[self.fingerprint] = text

    def _set_clock(self, agent: Any, ladder: Ladder) -> None:
        """The host's wall clock into the guest (``guest-set-time``, nanoseconds). The guest
        applies the time some moment between request and answer: on a loaded host that can
        be seconds, so a slow answer is followed by another request (a guest that just
        answered one is quick), until one answers within :data:`CLOCK_SLACK_S`."""
        took = 0.0
        for _ in range(CLOCK_ATTEMPTS):
            began = time.monotonic()
            try:
                agent.command("guest-set-time", {"time": time.time_ns()},
                              timeout=ladder.attempt_timeout(5))
            except AgentReplyError as exc:
                if "hwclock" not in exc.desc:  # the clock is set before qemu-ga runs hwclock
                    raise
            took = time.monotonic() - began
            if took <= CLOCK_SLACK_S:
                return
            log.info("%s: setting the guest's clock took %.2f s; setting it again",
                     self.vm_name, took)
        log.warning("%s: the guest's clock may be up to %.2f s behind the host's (the "
                    "agent answered slowly %d times: a loaded host?)", self.vm_name, took,
                    CLOCK_ATTEMPTS)


__all__ = ["FreshPlan", "Restorable", "image_hashes", "qemu_version"]
