"""Start qemu on a DUT under a tiny supervisor that ties its life to ours.

The supervisor is a POSIX ``sh`` script run on the DUT with qemu's argv as positional
arguments (``sh -c SCRIPT RUN_DIR ARGV...``): no shell ever parses an argv element. It
starts qemu in the background with stdout/stderr in the run dir, prints ``pid N``, and
watches its own stdin: our end of that pipe (a local pipe, or the SSH exec channel) closes
when this process dies or the DUT connection drops, and the supervisor then ends qemu
(SIGTERM, SIGKILL after 5 s) and removes the run dir. So a killed pytest worker or a lost
SSH link never leaves a qemu, a socket or a pidfile behind. Writing ``keep`` detaches qemu
from that watch (``--keep``, keep-on-failure).
When qemu exits the supervisor records its status and prints ``exit N``.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shlex
import subprocess
import threading
from collections.abc import Sequence
from typing import Any

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import Session
from pytest_dtsvirt.session.channel import start_channel

#: bound on opening the supervisor's SSH channel
OPEN_TIMEOUT_S = 30.0

SUPERVISOR_SCRIPT = r"""
exec 3<&0
"$@" 3<&- </dev/null >"$0/qemu.out" 2>"$0/qemu.log" &
q=$!
echo "pid $q"
( if read -r cmd <&3 && [ "$cmd" = keep ]; then exit 0; fi
  : >"$0/orphaned"
  kill -TERM "$q" 2>/dev/null; i=0
  while kill -0 "$q" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -0 "$q" 2>/dev/null && kill -KILL "$q" 2>/dev/null ) &
w=$!
echo "$$ $q $w" >"$0/supervisor.pid"
exec 3<&-
wait "$q"; st=$?
if [ -e "$0/orphaned" ]; then rm -rf -- "$0"; exit 0; fi
echo "$st" >"$0/exit-status"
kill "$w" 2>/dev/null
echo "exit $st"
"""


class Supervised(abc.ABC):
    """A qemu started under the supervisor. Thread-safe status; ``pid`` is qemu's PID."""

    def __init__(self, argv: Sequence[str], run_dir: str) -> None:
        self.argv = list(argv)
        self.run_dir = run_dir
        self.pid: int | None = None
        self.exit_status: int | None = None
        self._started = threading.Event()
        self._exited = threading.Event()
        self._lock = threading.Lock()

    # -- fed by the transport's reader thread -------------------------------------------
    def _feed(self, line: str) -> None:
        word, _, value = line.strip().partition(" ")
        if word == "pid" and value.isdigit():
            self.pid = int(value)
            self._started.set()
        elif word == "exit" and value.lstrip("-").isdigit():
            self._set_exit(int(value))

    def _set_exit(self, status: int) -> None:
        with self._lock:
            if self.exit_status is None:
                self.exit_status = status
        self._started.set()
        self._exited.set()

    # -- used by the runtime --------------------------------------------------------------
    def wait_started(self, timeout: float) -> int:
        """qemu's PID once the supervisor launched it; SessionError if it never did."""
        if not self._started.wait(timeout) or self.pid is None:
            raise SessionError(f"qemu supervisor did not start within {timeout:g} s")
        return self.pid

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait_exit(self, timeout: float) -> bool:
        """True when qemu has exited (within ``timeout`` seconds)."""
        return self._exited.wait(timeout)

    def keep(self) -> None:
        """Detach qemu from the watch: it keeps running after we are gone."""
        self._write(b"keep\n")
        self._close_stdin()

    def release(self) -> None:
        """Close our end: the supervisor ends qemu if it is still running."""
        self._close_stdin()

    @abc.abstractmethod
    def _write(self, data: bytes) -> None:
        """Write to the supervisor's stdin (best effort)."""

    @abc.abstractmethod
    def _close_stdin(self) -> None:
        """Close our end of the supervisor's stdin (best effort)."""


class _LocalSupervised(Supervised):
    def __init__(self, argv: Sequence[str], run_dir: str) -> None:
        super().__init__(argv, run_dir)
        self._proc = subprocess.Popen(
            ["sh", "-c", SUPERVISOR_SCRIPT, run_dir, *argv],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal must not hit qemu directly
        )
        threading.Thread(target=self._read, daemon=True, name="dtsvirt-supervisor").start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            self._feed(raw.decode(errors="replace"))
        self._proc.stdout.close()
        status = self._proc.wait()
        self._set_exit(self.exit_status if self.exit_status is not None else status)

    def _write(self, data: bytes) -> None:
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def _close_stdin(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass


class _ChannelSupervised(Supervised):
    """Over SSH: the supervisor runs in an exec channel; its stdin is the channel."""

    def __init__(self, argv: Sequence[str], run_dir: str, transport: Any) -> None:
        super().__init__(argv, run_dir)
        command = shlex.join(["sh", "-c", SUPERVISOR_SCRIPT, run_dir, *argv])
        try:
            self._chan = start_channel(transport, command, name="DUT", timeout=OPEN_TIMEOUT_S)
        except SessionError:
            raise
        except Exception as exc:  # paramiko raises several unrelated types here
            raise SessionError(f"cannot start qemu over SSH: {exc}") from exc
        threading.Thread(target=self._read, daemon=True, name="dtsvirt-supervisor").start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                data = self._chan.recv(4096)
            except Exception:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                self._feed(line.decode(errors="replace"))
        # channel closed: either qemu exited (we saw "exit N") or the link dropped
        self._set_exit(self.exit_status if self.exit_status is not None else -1)

    # a closed or dropped channel needs no more writes: the supervisor is ending qemu
    def _write(self, data: bytes) -> None:
        with contextlib.suppress(Exception):
            self._chan.sendall(data)

    def _close_stdin(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.shutdown_write()


def start_supervised(session: Session, argv: Sequence[str], run_dir: str) -> Supervised:
    """Start ``argv`` on the session's host under the supervisor (see module docstring)."""
    from pytest_dtsvirt.session.local import LocalSession
    from pytest_dtsvirt.session.ssh import SshSession

    if isinstance(session, SshSession):
        return _ChannelSupervised(argv, run_dir, session.transport)
    if isinstance(session, LocalSession):
        if not os.path.isdir(run_dir):
            raise SessionError(f"run dir {run_dir} does not exist")
        return _LocalSupervised(argv, run_dir)
    raise SessionError(f"cannot supervise qemu over a {type(session).__name__}")
