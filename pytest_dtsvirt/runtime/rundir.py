"""Private per-VM run directories on a DUT, and the reaper of crashed runs' leftovers.

Every VM gets ``<workdir>/dtsvirt-<run id>-<vm>-XXXXXX`` (mode 0700, made by ``mktemp -d``)
for its sockets, pidfile, logs and console. The supervisor (see ``supervisor.py``) writes
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
from pytest_dtsvirt.session.base import Session

log = logging.getLogger("pytest_dtsvirt")

RUN_DIR_PREFIX = "dtsvirt-"
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
    """Create a private run dir for one VM on the session's host; return its path."""
    safe_vm = _SAFE_NAME.sub("_", vm_name)[:20]
    session.run(["mkdir", "-p", "-m", "0700", workdir], check=True, timeout=20)
    template = f"{workdir.rstrip('/')}/{RUN_DIR_PREFIX}{run_id}-{safe_vm}-XXXXXX"
    result = session.run(["mktemp", "-d", template], check=True, timeout=20)
    path = result.stdout.strip()
    if len(path) > 80:  # unix socket paths are limited to 107 bytes
        session.run(["rm", "-rf", "--", path], timeout=20)
        raise SessionError(f"DUT workdir {workdir!r} is too long for unix socket paths; "
                           "choose a shorter 'workdir' in the DUT config")
    return path


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


def _pids_naming(session: Session, run_dir: str) -> list[int]:
    """PIDs whose command line contains ``run_dir`` (the lookup's own processes excluded)."""
    res = session.run(["sh", "-c", 'grep -l -a -F -e "$0" /proc/[0-9]*/cmdline; echo "self $$"',
                       run_dir], timeout=20)
    lines = res.stdout.split("\n")
    me = {w.split()[1] for w in lines if w.startswith("self ")}
    pids = []
    for line in lines:
        parts = line.split("/")
        if len(parts) == 4 and parts[2].isdigit() and parts[2] not in me:
            pids.append(int(parts[2]))
    return [pid for pid in pids if _pid_alive(session, pid)]


def _age_seconds(session: Session, path: str) -> float:
    res = session.run(["sh", "-c", 'echo $(( $(date +%s) - $(stat -c %Y "$0") ))', path],
                      timeout=10)
    try:
        return float(res.stdout.strip())
    except ValueError:
        return 0.0


def reap(session: Session, workdir: str) -> list[str]:
    """Remove leftovers of crashed dtsvirt runs under ``workdir``; return what was reaped.

    A run dir is a leftover when its supervisor is dead (or, with no supervisor pidfile,
    when it is older than a few minutes). Its processes (qemu, the rest of the supervisor)
    are found by their command line naming that run dir, and killed by PID. Live runs
    (other workers, other sessions) are left alone.
    """
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
            if len(words) != 2 or not all(w.isdigit() for w in words):
                continue
            if _pid_alive(session, int(words[0])):
                continue  # a live run owns it
            # qemu and what is left of its supervisor: every process naming this run dir
            for pid in _pids_naming(session, run_dir):
                session.run(["kill", "-KILL", str(pid)], timeout=10)
                _wait_gone(session, pid)
                log.warning("reaped PID %d of a crashed run (%s)", pid, run_dir)
        elif _age_seconds(session, run_dir) < STALE_WITHOUT_PIDFILE_S:
            continue
        remove_run_dir(session, run_dir)
        reaped.append(run_dir)
    return reaped
