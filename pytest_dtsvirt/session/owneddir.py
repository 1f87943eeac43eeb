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
#: how long :meth:`OwnedDir.make` and :meth:`OwnedDir.remove` wait for the keeper's answer
ANSWER_TIMEOUT_S = 30.0


class _Keeper:
    """Reads the keeper's stdout in a thread: its lines, the first one, the end."""

    def __init__(self, process: PipedProcess) -> None:
        self.process = process
        self.said: list[str] = []
        self.first = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True, name="dtsvirt-owneddir").start()

    def _read(self) -> None:
        for line in self.process.lines():
            self.said.append(line)
            self.first.set()
        self.first.set()
        self.ended.set()


class OwnedDir:
    """A directory made by :meth:`make`; :attr:`path` on the host until :meth:`remove`."""

    def __init__(self, keeper: _Keeper, path: str, host: str) -> None:
        self._keeper = keeper
        self.path = path
        self._host = host
        self._removed = False

    @classmethod
    def make(cls, session: Session, template: str,
             timeout: float = ANSWER_TIMEOUT_S) -> OwnedDir:
        """Make a directory from ``template`` (``mktemp -d``, ``XXXXXX`` at the end) on the
        session's host, removed when we are gone (see the module docstring)."""
        keeper = _Keeper(session.start_piped(["sh", "-c", KEEPER_SCRIPT, template]))
        keeper.first.wait(timeout)
        first = keeper.said[0] if keeper.said else ""
        word, _, path = first.partition(" ")
        if word != "dir" or not path.startswith("/"):
            keeper.process.close_stdin()
            said = f"mktemp said {first!r}" if keeper.ended.is_set() or first else \
                f"no answer within {timeout:g} s"
            raise SessionError(f"{session.name}: cannot make a directory like {template} "
                               f"({said})")
        return cls(keeper, path, session.name)

    def remove(self, timeout: float = ANSWER_TIMEOUT_S) -> None:
        """Remove the directory now and wait (up to ``timeout`` s) until it is gone;
        idempotent. SessionError when the host did not confirm it in time."""
        if self._removed:
            return
        self._removed = True
        self._keeper.process.close_stdin()
        if not self._keeper.ended.wait(timeout) or "gone" not in self._keeper.said:
            raise SessionError(f"{self._host}: removing {self.path} was not confirmed within "
                               f"{timeout:g} s")

    def __repr__(self) -> str:
        return f"<OwnedDir {self._host}:{self.path}>"


__all__ = ["KEEPER_SCRIPT", "OwnedDir"]
