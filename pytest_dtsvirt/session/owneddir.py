"""A private temporary directory on a host that goes away when we do.

:meth:`OwnedDir.make` runs a tiny POSIX ``sh`` on the host (the template is its positional
parameter, never pasted into the script): it makes the directory with ``mktemp -d`` (mode
0700), prints its path and waits on its stdin. Our end of that pipe (a local pipe, or the SSH
exec channel) closes when :meth:`OwnedDir.remove` is called, when this process ends in any
way (normal exit, Ctrl-C, SIGTERM, even SIGKILL) or when the link to the host drops; the
script then removes the directory. The same tie as the qemu supervisor's
(:mod:`pytest_dtsvirt.runtime.supervisor`), for a directory that has no qemu.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import PipedProcess, Session

# $0: the mktemp template. Prints "dir PATH", then "gone" once the directory is removed.
# SIGPIPE is ignored: if we die before reading the path, the echo must not end the script.
KEEPER_SCRIPT = r"""
trap '' PIPE
umask 077
d=$(mktemp -d -- "$0") || exit 1
echo "dir $d"
while read -r _; do :; done
rm -rf -- "$d"
echo gone
"""
#: how long :meth:`OwnedDir.remove` waits for the keeper to say the directory is gone
REMOVE_TIMEOUT_S = 30.0


class OwnedDir:
    """A directory made by :meth:`make`; :attr:`path` on the host until :meth:`remove`."""

    def __init__(self, process: PipedProcess, lines: Iterator[str], path: str,
                 host: str) -> None:
        self._process = process
        self._lines = lines  # the one reader of its stdout (it closes it when done)
        self.path = path
        self._host = host
        self._removed = False

    @classmethod
    def make(cls, session: Session, template: str) -> OwnedDir:
        """Make a directory from ``template`` (``mktemp -d``, ``XXXXXX`` at the end) on the
        session's host, removed when we are gone (see the module docstring)."""
        process = session.start_piped(["sh", "-c", KEEPER_SCRIPT, template])
        lines = process.lines()
        first = next(lines, "")
        word, _, path = first.partition(" ")
        if word != "dir" or not path.startswith("/"):
            process.close_stdin()
            raise SessionError(f"{session.name}: cannot make a directory like {template} "
                               f"(mktemp said {first!r})")
        return cls(process, lines, path, session.name)

    def remove(self, timeout: float = REMOVE_TIMEOUT_S) -> None:
        """Remove the directory now and wait (up to ``timeout`` s) until it is gone;
        idempotent. SessionError when the host did not confirm it in time."""
        if self._removed:
            return
        self._removed = True
        self._process.close_stdin()
        done = threading.Event()
        said: list[str] = []

        def drain() -> None:
            said.extend(self._lines)
            done.set()

        threading.Thread(target=drain, daemon=True, name="dtsvirt-owneddir").start()
        if not done.wait(timeout) or "gone" not in said:
            raise SessionError(f"{self._host}: removing {self.path} was not confirmed within "
                               f"{timeout:g} s")

    def __repr__(self) -> str:
        return f"<OwnedDir {self._host}:{self.path}>"


__all__ = ["KEEPER_SCRIPT", "OwnedDir"]
