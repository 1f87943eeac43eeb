"""The DUT work dir: created or accepted only when no other local user can touch it.

Run dirs live in the DUT's work dir (``/tmp/dtsvirt-<user>`` by default, a predictable name
in a world-writable directory). A work dir another user created first, or one reached through
a path another user can change, would let that user swap files under a root test run. So the
work dir must be a real directory (not a symlink) owned by the DUT user with no group or
other permission bits, and every directory on the way to it (as written and as resolved) must
be owned by root or the DUT user and, when others may write to it, sticky (like ``/tmp``).
Anything else is refused with :class:`~pytest_dtsvirt.errors.UnsafeWorkdir`; nothing is
repaired or removed, because what is there may be an attacker's.

The checks and the creation run on the DUT in one small POSIX ``sh`` script (paths are its
positional parameters, never pasted into it), so a local and an SSH DUT behave alike. The
script works on the resolved path once it is checked: no component of it can be swapped by
another user afterwards.
"""

from __future__ import annotations

import os
import stat
import tempfile

from pytest_dtsvirt.errors import SessionError, UnsafeWorkdir
from pytest_dtsvirt.session.base import Session

# $1: mode (check | make), $2: work dir, $3: mktemp template of a run dir (make only).
# Prints lines: "ok", UID, REALDIR[, RUNDIR]; or "absent" (check only); or "refuse", REASON,
# WHO, PATH (one per line: paths may contain spaces; the caller refuses newlines in them).
_SCRIPT = r"""
set -f  # no globbing of the words split below
umask 077
mode=$1 w=$2 t=$3
me=$(id -u) || exit 1
case $w in /*) ;; *) w=$PWD/$w ;; esac
w=${w%/}
# one lstat: owner (u), octal mode (m) and type (ty) of the entry itself, never followed
entry() {
    out=$(stat -c '%u %a %F' -- "$1") || exit 1
    set -- $out
    u=$1 m=$2
    shift 2
    ty="$*"
}
# every existing directory on the way up: owned by root or me; sticky if others may write
walk() {
    p=$1
    while :; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            entry "$p"
            if [ "$u" != 0 ] && [ "$u" != "$me" ]; then
                printf "refuse\nancestor-owner\n%s\n%s\n" "$u" "$p"; exit 0
            fi
            if [ "$ty" = directory ] && [ $((0$m & 022)) -ne 0 ] \
                    && [ $((0$m & 01000)) -eq 0 ]; then
                printf "refuse\nancestor-mode\n%s\n%s\n" "$m" "$p"; exit 0
            fi
        fi
        [ "$p" = / ] && return
        p=$(dirname -- "$p")
    done
}
parent=$(dirname -- "$w")
base=$(basename -- "$w")
walk "$parent"
if [ ! -e "$parent" ]; then
    [ "$mode" = make ] || { echo absent; exit 0; }
    mkdir -p -- "$parent" || exit 1
    walk "$parent"
fi
real=$(realpath -- "$parent") || exit 1
walk "$real"
w=${real%/}/$base
[ "$real" = / ] && w=/$base
if [ "$mode" = make ]; then
    mkdir -m 0700 -- "$w" 2>/dev/null
elif [ ! -e "$w" ] && [ ! -L "$w" ]; then
    echo absent; exit 0
fi
entry "$w"
if [ "$ty" != directory ]; then
    printf "refuse\ntype\n%s\n%s\n" "$ty" "$w"; exit 0
fi
[ "$u" = "$me" ] || { printf "refuse\nowner\n%s\n%s\n" "$u" "$w"; exit 0; }
[ $((0$m & 077)) -eq 0 ] || { printf "refuse\nmode\n%s\n%s\n" "$m" "$w"; exit 0; }
if [ "$mode" = make ] && [ -n "$t" ]; then
    r=$(mktemp -d -- "$w/$t") || exit 1
    printf "ok\n%s\n%s\n%s\n" "$me" "$w" "$r"
else
    printf "ok\n%s\n%s\n" "$me" "$w"
fi
"""

_FIX = ("remove it after checking what is in it (another user may have made it), or set "
        "'workdir' in the DUT config to a directory that only the DUT user can write")
_FIX_ANCESTOR = ("set 'workdir' in the DUT config to a directory whose parents only root or "
                 "the DUT user can change")


def _refusal(session: Session, workdir: str, reason: str, who: str, path: str) -> UnsafeWorkdir:
    what = {
        "type": f"is a {who}, not a directory",
        "owner": f"is owned by uid {who}, not by the DUT user",
        "mode": f"has mode {who}: group or other users may use it (it must be 0700)",
        "ancestor-owner": f"is owned by uid {who}, neither root nor the DUT user, who could "
                          "swap what is under it",
        "ancestor-mode": f"has mode {who}: other users may write to it and it is not sticky",
    }.get(reason, f"is unsafe ({reason} {who})")
    subject = (f"DUT workdir {path!r}" if reason in ("type", "owner", "mode")
               else f"{path!r} on the way to the DUT workdir {workdir!r}")
    fix = _FIX if reason in ("type", "owner", "mode") else _FIX_ANCESTOR
    return UnsafeWorkdir(f"{session.name}: refusing to use {subject}: it {what}; {fix}", path)


def _run(session: Session, mode: str, workdir: str, template: str = "") -> list[str]:
    if not workdir or any(c in workdir for c in "\n\0"):
        raise UnsafeWorkdir(f"{session.name}: DUT workdir {workdir!r} is empty or holds a "
                            "newline or NUL; set 'workdir' in the DUT config", workdir)
    res = session.run(["sh", "-c", _SCRIPT, "sh", mode, workdir, template], timeout=30)
    lines = res.stdout.split("\n")
    if not res.ok or lines[0] not in ("ok", "absent", "refuse") or (
            lines[0] != "absent" and len(lines) < 4):
        detail = (res.stderr or res.stdout).strip() or f"exit status {res.exit_status}"
        raise SessionError(f"{session.name}: cannot create or check the DUT workdir "
                           f"{workdir!r}: {detail}")
    if lines[0] == "refuse":
        raise _refusal(session, workdir, lines[1], lines[2], lines[3])
    return lines


def check_workdir(session: Session, workdir: str) -> str | None:
    """The resolved work dir if it exists and is safe, None if it does not exist;
    :class:`UnsafeWorkdir` when it (or a directory on the way to it) is not ours."""
    lines = _run(session, "check", workdir)
    return lines[2] if lines[0] == "ok" else None


def ensure_workdir(session: Session, workdir: str) -> str:
    """Create the work dir (mode 0700) or accept it if it is ours; return its resolved path.
    :class:`UnsafeWorkdir` when it (or a directory on the way to it) is not ours."""
    return _run(session, "make", workdir)[2]


#: work dirs the full check accepted in this process: (session, work dir) -> (our uid,
#: resolved path). The directories above a resolved, accepted work dir are root's or ours
#: and not writable by others (or sticky), so nobody else can swap them later; the work
#: dir itself is checked again by each quick run dir (:data:`_QUICK`).
_ACCEPTED: dict[tuple[str, str], tuple[str, str]] = {}
# the accepted work dir ("$1", resolved) is still ours, mode 0700, a directory (lstat):
# then a run dir in it; else nothing (and the full check runs)
_QUICK = ('[ "$(stat -c \'%u %a %F\' -- "$1")" = "$2 700 directory" ] || exit 3; '
          'exec mktemp -d -- "$1/$3"')


def _quick_run_dir(session: Session, uid: str, resolved: str, template: str) -> str | None:
    """A run dir in the accepted work dir ``resolved`` if it is still ours, 0700 and a
    directory (not followed); None otherwise. On the local host without a command."""
    from pytest_dtsvirt.session.local import LocalSession

    if isinstance(session, LocalSession):
        try:
            st = os.lstat(resolved)
            if (stat.S_ISDIR(st.st_mode) and str(st.st_uid) == uid
                    and stat.S_IMODE(st.st_mode) == 0o700):
                return tempfile.mkdtemp(prefix=template.removesuffix("XXXXXX"), dir=resolved)
        except OSError:
            pass
        return None
    res = session.run(["sh", "-c", _QUICK, "sh", resolved, uid, template], timeout=30)
    path = res.stdout.strip()
    if res.ok and path.startswith(f"{resolved.rstrip('/')}/") and "\n" not in path:
        return path
    return None


def make_run_dir_in(session: Session, workdir: str, name_template: str) -> str:
    """Check or create the work dir, then create a fresh run dir in it atomically
    (``mktemp -d``, mode 0700); return the run dir's path. Once a work dir passed the full
    check, later run dirs in it take one quick command (the work dir itself re-checked)."""
    if "/" in name_template or not name_template.endswith("XXXXXX"):
        raise ValueError(f"bad run dir template {name_template!r}")
    accepted = _ACCEPTED.get((session.name, workdir))
    if accepted is not None:
        uid, resolved = accepted
        path = _quick_run_dir(session, uid, resolved, name_template)
        if path is not None:
            return path
        _ACCEPTED.pop((session.name, workdir), None)
    lines = _run(session, "make", workdir, name_template)
    if len(lines) < 5 or not lines[3]:
        raise SessionError(f"{session.name}: mktemp in the DUT workdir {workdir!r} gave "
                           "no run dir")
    _ACCEPTED[(session.name, workdir)] = (lines[1], lines[2])
    return lines[3]


__all__ = ["check_workdir", "ensure_workdir", "make_run_dir_in"]
