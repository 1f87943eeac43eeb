"""Private per-VM run directories on a DUT, and the reaper of crashed runs' leftovers.

Every VM gets ``<workdir>/dtsvirt-<run id>-<vm>-XXXXXX`` (mode 0700, made by ``mktemp -d``
in a work dir checked to be ours alone, see ``workdir.py``) for its sockets, pidfile, logs
and console. The supervisor (see ``supervisor.py``) writes
``supervisor.pid`` there. A run dir whose supervisor is gone belongs to a crashed run: the
reaper kills its qemu, but only after checking that the PID's command line names that very
run dir (PIDs get reused), and removes the directory. Nothing else is ever touched.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.runtime import snapshot
from pytest_dtsvirt.runtime.workdir import check_workdir, make_run_dir_in
from pytest_dtsvirt.session.base import Session

log = logging.getLogger("pytest_dtsvirt")

RUN_DIR_PREFIX = "dtsvirt-"
# supervisor.pid holds "SUPERVISOR QEMU WATCHER" (written by runtime/supervisor.py)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
#: a run dir without a supervisor pidfile that is older than this is a failed early start
STALE_WITHOUT_PIDFILE_S = 300


def current_run_id() -> str:
    """This process's run id: ``$DTSVIRT_RUN_ID`` (xdist workers share the controller's)
    or a fresh one, fixed for the life of the process."""
    global _RUN_ID
    if _RUN_ID is None:
        _RUN_ID = os.environ.get("DTSVIRT_RUN_ID") or uuid.uuid4().hex[:12]
    return _RUN_ID


_RUN_ID: str | None = None


def make_run_dir(session: Session, workdir: str, vm_name: str, run_id: str) -> str:
    """Create a private run dir for one VM on the session's host; return its path.

    The work dir is created or accepted only when it is ours alone (see
    :mod:`pytest_dtsvirt.runtime.workdir`; :class:`UnsafeWorkdir` otherwise), then the run
    dir is made in it atomically by ``mktemp -d`` (mode 0700)."""
    safe_vm = _SAFE_NAME.sub("_", vm_name)[:20]
    safe_run = _SAFE_NAME.sub("_", run_id)[:32]
    path = make_run_dir_in(session, workdir, f"{RUN_DIR_PREFIX}{safe_run}-{safe_vm}-XXXXXX")
    if len(path) > 80:  # unix socket paths are limited to 107 bytes
        session.run(["rm", "-rf", "--", path], timeout=20)
        raise SessionError(f"DUT workdir {workdir!r} is too long for unix socket paths; "
                           "choose a shorter 'workdir' in the DUT config")
    return path


#: below this much free space (or with no free inode) a run dir's filesystem counts as full:
#: qemu needs room for its sockets, logs and the console log
MIN_FREE_BYTES = 256 * 1024


def parse_statfs(text: str) -> tuple[int, int] | None:
    """``stat -f -c '%a %S %d %c'`` output -> (free bytes, free inodes) (pure); None if it
    does not parse. A filesystem without inode counts (0 in total) gives -1 free inodes."""
    words = text.split()
    if len(words) != 4 or not all(w.isdigit() for w in words):
        return None
    avail, bsize, ffree, files = (int(w) for w in words)
    return avail * bsize, (ffree if files else -1)


def space_problem(session: Session, path: str) -> str | None:
    """A sentence naming a full filesystem at ``path`` (no space or no inode left), else
    None (also when it cannot be checked)."""
    try:
        res = session.run(["stat", "-f", "-c", "%a %S %d %c", "--", path], timeout=10)
    except SessionError:
        return None
    parsed = parse_statfs(res.stdout) if res.ok else None
    if parsed is None:
        return None
    free, inodes = parsed
    if free < MIN_FREE_BYTES or inodes == 0:
        inode_note = ", no inode free" if inodes == 0 else ""
        return (f"no space left on the DUT work dir's filesystem ({path}: {free // 1024} KiB "
                f"free{inode_note}); free space there or choose another 'workdir' in the DUT "
                "config")
    return None


def remove_run_dir(session: Session, path: str) -> None:
    """Remove a run dir (and only a run dir: the name is checked)."""
    if RUN_DIR_PREFIX not in os.path.basename(path.rstrip("/")):
        raise SessionError(f"refusing to remove {path!r}: not a dtsvirt run dir")
    session.run(["rm", "-rf", "--", path], timeout=30)


def _pid_alive(session: Session, pid: int) -> bool:
    """True when ``pid`` runs on the session's host (a zombie counts as dead)."""
    res = session.run(["cat", f"/proc/{pid}/stat"], timeout=10)
    if not res.ok:
        return False
    # the state letter follows the command name in parentheses, which may contain spaces
    state = res.stdout.rpartition(")")[2].split()[:1]
    return state != ["Z"]


def _wait_gone(session: Session, pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _pid_alive(session, pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _cmdline_names(session: Session, pid: int, run_dir: str) -> bool:
    """True when the command line of ``pid`` names ``run_dir`` (the PID was not reused)."""
    res = session.run(["cat", f"/proc/{pid}/cmdline"], timeout=10)
    return res.ok and run_dir in res.stdout.replace("\0", " ")


def _age_seconds(session: Session, path: str) -> float:
    res = session.run(["sh", "-c", 'echo $(( $(date +%s) - $(stat -c %Y "$0") ))', path],
                      timeout=10)
    try:
        return float(res.stdout.strip())
    except ValueError:
        return 0.0


def reap(session: Session, workdir: str, *, local: bool = True) -> list[str]:
    """Remove leftovers of crashed dtsvirt runs under ``workdir``; return what was reaped.

    A run dir is a leftover when its supervisor is dead (or, with no supervisor pidfile,
    when it is older than a few minutes). Only the PIDs the supervisor recorded (qemu and
    the supervisor's watcher) are killed, each after checking that its command line still
    names that run dir; a user's ``tail -f`` of the console log is never touched. Live runs
    (other workers, other sessions, kept VMs) are left alone. Snapshot dirs of crashed runs
    go too (:func:`pytest_dtsvirt.runtime.snapshot.reap`; ``local``: the DUT is this host,
    so their owners' PIDs can be checked).
    """
    if check_workdir(session, workdir) is None:  # UnsafeWorkdir if another user owns it
        return []
    listing = session.run(["ls", "-1", "--", workdir], timeout=20)
    if not listing.ok:
        return []
    reaped: list[str] = []
    for name in listing.stdout.split():
        if not name.startswith(RUN_DIR_PREFIX):
            continue
        run_dir = f"{workdir.rstrip('/')}/{name}"
        pids = session.run(["cat", f"{run_dir}/supervisor.pid"], timeout=10)
        if pids.ok:
            words = pids.stdout.split()
            if len(words) != 3 or not all(w.isdigit() for w in words):
                continue
            supervisor, qemu, watcher = (int(w) for w in words)
            if _pid_alive(session, supervisor) and _cmdline_names(session, supervisor, run_dir):
                continue  # a live run owns it (a kept VM included)
            # only the PIDs the supervisor recorded, each checked to still be that process
            for pid in (watcher, qemu):
                if _pid_alive(session, pid) and _cmdline_names(session, pid, run_dir):
                    session.run(["kill", "-KILL", str(pid)], timeout=10)
                    _wait_gone(session, pid)
                    log.warning("reaped PID %d of a crashed run (%s)", pid, run_dir)
        elif _age_seconds(session, run_dir) < STALE_WITHOUT_PIDFILE_S:
            continue
        remove_run_dir(session, run_dir)
        reaped.append(run_dir)
    return reaped + snapshot.reap(session, workdir, listing.stdout.split(), local)
