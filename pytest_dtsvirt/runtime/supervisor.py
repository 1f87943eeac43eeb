"""Start qemu on a DUT under a tiny supervisor that ties its life to ours.

The supervisor is a POSIX ``sh`` script run on the DUT with qemu's argv as positional
arguments (``sh -c SCRIPT RUN_DIR [--stream FILE] ARGV...``): no shell ever parses an argv
element. It starts qemu in the background (with FILE open as its fd 4, else /dev/null there)
with stdout/stderr in the run dir, prints ``pid N``, and
watches its own stdin: our end of that pipe (a local pipe, or the SSH exec channel) closes
when this process dies or the DUT connection drops, and the supervisor then ends qemu
(SIGTERM, SIGKILL after 5 s) and removes the run dir. So a killed pytest worker or a lost
SSH link never leaves a qemu, a socket or a pidfile behind. Writing ``keep`` detaches qemu
from that watch (``--keep``, keep-on-failure).
When qemu exits the supervisor records its status and prints ``exit N``. It ignores SIGPIPE
once qemu runs: if we die before reading ``pid N``, that line must not kill the supervisor
and leave qemu unwatched.

The transport is the session's business (:meth:`Session.start_piped`): this module never
asks which kind of session it got, so it is tested against a fake session too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import PipedProcess, Session

#: the fd on which qemu finds the file given as ``stream`` (``-incoming fd:4``)
STREAM_FD = 4

SUPERVISOR_SCRIPT = r"""
in=/dev/null
if [ "$1" = --stream ]; then in=$2; shift 2; fi
exec 3<&0
"$@" 2>"$0/qemu.log" 3<&- 4<"$in" </dev/null >"$0/qemu.out" &
q=$!
trap '' PIPE
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


class Supervised:
    """A qemu started under the supervisor. Thread-safe status; ``pid`` is qemu's PID.

    ``exit_status`` is qemu's status as the shell's ``wait`` gives it (``128 + N`` for a
    signal N); ``link_lost`` is True when the supervisor's pipe ended without an ``exit``
    line and without an exit status: the link to the DUT dropped (the supervisor then ends
    qemu and removes the run dir on its own)."""

    def __init__(self, process: PipedProcess, argv: Sequence[str], run_dir: str) -> None:
        self.argv = list(argv)
        self.run_dir = run_dir
        self.pid: int | None = None
        self.exit_status: int | None = None
        self.link_lost = False
        self._process = process
        self._started = threading.Event()
        self._exited = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True, name="dtsvirt-supervisor").start()

    def _read(self) -> None:
        for line in self._process.lines():
            self._feed(line)
        if self.exit_status is None:
            status = self._process.exit_status()
            if status is None:
                self.link_lost = True
            self._set_exit(-1 if status is None else status)
        else:
            self._set_exit(self.exit_status)

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
        self._process.write(b"keep\n")
        self._process.close_stdin()

    def release(self) -> None:
        """Close our end: the supervisor ends qemu if it is still running."""
        self._process.close_stdin()


def start_supervised(session: Session, argv: Sequence[str], run_dir: str,
                     stream: str | None = None) -> Supervised:
    """Start ``argv`` on the session's host under the supervisor (see module docstring).

    ``stream``: a file on that host that qemu gets open for reading as fd
    :data:`STREAM_FD` (a snapshot to restore with ``-incoming fd:4``: qemu reads it itself,
    ~30 ms faster than through ``exec:cat``). If it cannot be opened, qemu does not start:
    the shell's message is in ``qemu.log`` and the supervisor reports an exit status."""
    extra = ["--stream", stream] if stream is not None else []
    process = session.start_piped(["sh", "-c", SUPERVISOR_SCRIPT, run_dir, *extra, *argv])
    return Supervised(process, argv, run_dir)


def describe_status(status: int | None) -> str:
    """``exit status 1`` or ``killed by signal 9 (SIGKILL)`` for a shell ``wait`` status."""
    if status is None or status < 0:
        return "exit status unknown"
    if status > 128:
        try:
            name = signal.Signals(status - 128).name
        except ValueError:
            name = "?"
        return f"killed by signal {status - 128} ({name})"
    return f"exit status {status}"
