"""One session API over local and SSH transports.

A :class:`Session` runs commands on one host (the DUT, or a guest), starts detached
processes, opens byte streams to unix sockets and TCP ports *on that host* (so QMP, QGA and
guest SSH ride on it and a remote DUT works exactly like localhost), copies files and opens
interactive shells for ``send_expect``.

Commands are always argv lists. Over SSH they are joined with :func:`shlex.join`, so no value
ever reaches a shell unquoted.
"""

from __future__ import annotations

import abc
import re
import secrets
import signal
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

from pytest_dtsvirt.errors import CommandTimeout, SessionError

#: The prompt every shell of this package is given. It ends in ``# `` for every user, so
#: DTS-style ``send_expect(cmd, "# ")`` works for root and non-root logins alike.
PROMPT = "[DTSVIRT]# "
#: A regex that matches :data:`PROMPT`.
PROMPT_RE = re.escape(PROMPT)

# Starts argv detached: its own session (setsid), stdin from /dev/null, stdout/stderr to
# files, and prints its PID. The script text is constant; the working directory, the two
# output paths and every argv element arrive as positional parameters ("$1".."$3", "$@"),
# which the shell expands as single words and never parses again -- so no value can inject
# shell syntax whatever characters it contains. In a non-interactive sh a background job
# stays in the shell's process group, so it is no group leader and setsid(1) calls setsid()
# without forking: the PID printed by ``$!`` is the PID of the program itself.
_SPAWN_SCRIPT = (
    'cd -- "$1" || exit 126; out=$2; err=$3; shift 3; '
    'setsid "$@" </dev/null >"$out" 2>"$err" & echo "$!"'
)

# Prints every /proc/<pid>/stat line of the host (the glob is constant text).
_PROC_STAT_SCRIPT = "cat /proc/[0-9]*/stat 2>/dev/null; exit 0"

# Prints /proc/<pid>/environ of every process whose environment holds "$1" (GNU and busybox
# grep; status 2 when some files were unreadable, which is expected).
_ENV_SCAN_SCRIPT = 'grep -l -s -z -x -F -e "$1" /proc/[0-9]*/environ; exit 0'


@dataclass(frozen=True)
class CommandResult:
    """The outcome of :meth:`Session.run`."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        """True when the command exited with status 0."""
        return self.exit_status == 0


@dataclass(frozen=True)
class ProcInfo:
    """One process from ``/proc/<pid>/stat``: pid, parent pid, state letter, process group,
    start time (clock ticks since boot; tells a reused PID from the original process)."""

    pid: int
    ppid: int
    state: str
    starttime: int
    pgrp: int = 0


def parse_proc_stat(text: str) -> dict[int, ProcInfo]:
    """Parse concatenated ``/proc/<pid>/stat`` lines (pure). The command name may hold
    spaces and parentheses, so fields are counted from the *last* ``)``."""
    procs: dict[int, ProcInfo] = {}
    for line in text.splitlines():
        head, sep, tail = line.rpartition(") ")
        pid_text = head.split(" (", 1)[0]
        fields = tail.split()
        if not sep or not pid_text.isdigit() or len(fields) < 20:
            continue
        try:
            procs[int(pid_text)] = ProcInfo(int(pid_text), int(fields[1]), fields[0],
                                            int(fields[19]), int(fields[2]))
        except ValueError:
            continue
    return procs


def descendants_of(procs: Mapping[int, ProcInfo], roots: Iterable[int]) -> list[int]:
    """Every descendant of ``roots`` by parent links (pure; the roots excluded)."""
    children: dict[int, list[int]] = {}
    for info in procs.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: list[int] = []
    seen = set(roots)
    stack = list(seen)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                found.append(child)
                stack.append(child)
    return found


class Shell(abc.ABC):
    """An interactive shell on a host (bash locally, a pty shell over SSH).

    After :meth:`Session.shell` returns, the prompt is :data:`PROMPT`, terminal echo is off
    and :attr:`pid` is the PID of the shell process on its host.
    """

    #: the PID of the shell process on its host (``echo $$``)
    pid: int = 0

    @abc.abstractmethod
    def send(self, text: str) -> None:
        """Write ``text`` as is (no newline added)."""

    @abc.abstractmethod
    def expect(self, pattern: str, timeout: float) -> str:
        """Wait for regex ``pattern``; return the output before the match (the match is
        consumed). Raises CommandTimeout (with the output so far) on timeout; the output
        stays buffered."""

    @abc.abstractmethod
    def flush(self) -> str:
        """Return and discard everything received but not yet consumed (added API)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the shell; idempotent."""

    def sync(self, timeout: float = 10.0, init: str = "") -> int:
        """Bring the shell to a known state (added API): echo off, :data:`PROMPT`, no
        pending output. Returns the shell's PID. Also used after a program that changed the
        terminal mode (or was killed mid-way) to get a clean prompt back. ``init`` (shell
        text) runs in the same round trip; SessionError if its status is not 0."""
        nonce = secrets.token_hex(4)
        # The marker is computed by the shell ($((...))), so an echoed copy of the command
        # line can never match it.
        # Each option on a line of its own: a shell that lacks one aborts the rest of the
        # line. ignoreeof: busybox ash (1.35, the test guest) reads an EOF when SIGCHLD
        # interrupts its line editor -- i.e. whenever a background job ends -- and would
        # exit; with ignoreeof it prints a notice and a new prompt instead.
        self.send("set +o vi +o emacs 2>/dev/null\n")
        self.send("set -o ignoreeof 2>/dev/null\n")
        # no job control: no "[1]+ Done" notices mixed into the next command's output
        self.send("set +m 2>/dev/null\n")
        # init's status is $? of the marker's echo: init is the last command before it
        self.send(
            "stty -echo 2>/dev/null; unset PROMPT_COMMAND; "
            f"PS1='{PROMPT}'; PS2=''; {init or ':'}; echo \"DTSVIRT_{nonce}_$((6*7)) $$ $?\"\n"
        )
        self.expect(rf"DTSVIRT_{nonce}_42 ", timeout)
        said = self.expect(r"\r?\n", timeout).split()
        self.expect(PROMPT_RE, timeout)
        if len(said) != 2 or not all(w.isdigit() for w in said):
            raise SessionError(f"shell did not report its PID: {' '.join(said)!r}")
        self.pid = int(said[0])
        if said[1] != "0":
            raise SessionError(f"the shell's first command failed (status "
                               f"{said[1]}): {init}")
        return self.pid


class BufferedShell(Shell):
    """A Shell whose expect loop works on its own text buffer; a transport only provides
    :meth:`_recv` (and :meth:`_on_eof`). Shared by the local and the SSH shell."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._buf = ""
        self._closed = False

    @abc.abstractmethod
    def _recv(self, wait: float) -> str | None:
        """Wait up to ``wait`` s for output: the text ("" if none came), None on EOF."""

    @abc.abstractmethod
    def _write(self, data: bytes) -> None:
        """Write bytes to the shell's terminal."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the transport."""

    def _on_eof(self) -> SessionError:
        """The error to raise when the shell's output ended."""
        return SessionError(f"{self._name}: the shell (PID {self.pid}) exited; output: "
                            f"{self._buf[-500:]}")

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"{self._name}: the shell is closed")

    def send(self, text: str) -> None:
        self._check_open()
        self._write(text.encode())

    def expect(self, pattern: str, timeout: float) -> str:
        self._check_open()
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = rx.search(self._buf)
            if match:
                before = self._buf[: match.start()]
                self._buf = self._buf[match.end():]
                return before
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timeout_error(pattern, timeout, self._buf)
            data = self._recv(remaining)
            if data is None:
                raise self._on_eof()
            self._buf += data

    def flush(self) -> str:
        if self._closed:
            return ""
        while data := self._recv(0):
            self._buf += data
        data, self._buf = self._buf, ""
        return data

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._close()


class PipedProcess(abc.ABC):
    """A process started by :meth:`Session.start_piped` (added API): our end of its stdin
    and its stdout as lines. Closing stdin (or this process dying, or the link to the host
    dropping) gives the process EOF on its stdin; that is how a supervisor learns we are
    gone. The transport (a local pipe, an SSH exec channel) is hidden behind this class."""

    @abc.abstractmethod
    def lines(self) -> Iterator[str]:
        """The process's stdout, line by line (without the newline), until it ends."""

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Write to the process's stdin (best effort: a gone process is no error)."""

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """Close our end of its stdin (best effort, idempotent)."""

    @abc.abstractmethod
    def exit_status(self) -> int | None:
        """Once :meth:`lines` ended: the exit status, or None when it is unknown because the
        link to the host dropped."""


class Session(abc.ABC):
    """Commands, processes, streams and files on one host."""

    #: a short name for logs and errors, e.g. ``local`` or ``root@10.0.0.5:22``
    name: str

    @abc.abstractmethod
    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: bytes | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        """Run argv to completion. ``check=True`` raises SessionError on a non-zero status,
        with stderr in the message. A timeout raises SessionError and ends the command."""

    @abc.abstractmethod
    def open_unix(self, path: str, timeout: float = 10.0) -> socket.socket:
        """A connected stream socket to the unix socket ``path`` on this host.

        Over SSH this is a local socket relayed to the remote one (no TCP port is opened
        on the DUT). Raises SessionError if the socket is missing or refuses."""

    @abc.abstractmethod
    def open_tcp(self, host: str, port: int, timeout: float = 10.0) -> socket.socket:
        """A connected stream socket to ``host:port`` as seen from this host (over SSH: a
        ``direct-tcpip`` channel, relayed to a local socket). Raises SessionError."""

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes:
        """The contents of a file on this host; SessionError if it cannot be read."""

    @abc.abstractmethod
    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        """Create or replace a file on this host with the given mode."""

    @abc.abstractmethod
    def put(self, local_path: str, remote_path: str) -> None:
        """Copy a local file to this host."""

    @abc.abstractmethod
    def get(self, remote_path: str, local_path: str) -> None:
        """Copy a file from this host to the local machine."""

    @abc.abstractmethod
    def shell(self, init: str = "") -> Shell:
        """A new interactive shell on this host; ``init`` (shell text, e.g. ``cd DIR``)
        runs first, in the round trip that sets the shell up (SessionError if it fails)."""

    @abc.abstractmethod
    def start_piped(self, argv: Sequence[str]) -> PipedProcess:
        """Start ``argv`` on this host with its stdin and stdout piped to us (stderr is
        dropped); no shell parses any element. SessionError if it cannot be started."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the transport and every stream and shell it opened; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- processes (concrete, built on run) -------------------------------------------

    def spawn(self, argv: Sequence[str], *, stdout_path: str, stderr_path: str,
              cwd: str | None = None) -> int:
        """Start ``argv`` detached on this host and return its PID.

        The process runs in its own session and process group (``setsid``), stdin is
        ``/dev/null``, stdout and stderr go to the given files *on this host*. No shell
        parses any argv element or path: they are positional parameters of a constant
        ``sh -c`` script. If the program cannot be executed the PID is that of a process
        that has already exited (see ``stderr_path``)."""
        if not argv:
            raise SessionError("spawn: empty argv")
        result = self.run(["sh", "-c", _SPAWN_SCRIPT, "sh", cwd or ".", stdout_path,
                           stderr_path, *argv], timeout=30.0)
        text = result.stdout.strip()
        if not result.ok or not text.isdigit():
            raise SessionError(f"{self.name}: could not spawn {list(argv)!r} "
                               f"(status {result.exit_status}): {result.stderr.strip()}")
        return int(text)

    def processes(self) -> dict[int, ProcInfo]:
        """A snapshot of the host's process table from ``/proc/*/stat`` (added API; works
        with busybox, no pgrep needed)."""
        return parse_proc_stat(self.run(["sh", "-c", _PROC_STAT_SCRIPT], timeout=30.0).stdout)

    def pids_with_env(self, assignment: str) -> set[int]:
        """PIDs of the processes on this host started with ``NAME=VALUE`` in their
        environment (added API; from ``/proc/<pid>/environ``, readable for one's own
        processes). It survives ``setsid``, double forks and changes to the environment
        after start, so it finds daemons that left their parent."""
        out = self.run(["sh", "-c", _ENV_SCAN_SCRIPT, "sh", assignment], timeout=30.0).stdout
        return {int(m) for m in re.findall(r"^/proc/(\d+)/environ$", out, re.MULTILINE)}

    def proc_info(self, pid: int) -> ProcInfo | None:
        """``/proc/<pid>/stat`` of one process, or None if there is none (added API)."""
        result = self.run(["cat", f"/proc/{int(pid)}/stat"], timeout=30.0)
        return parse_proc_stat(result.stdout).get(pid) if result.ok else None

    def pid_alive(self, pid: int) -> bool:
        """True if process ``pid`` exists on this host and is not a zombie."""
        info = self.proc_info(pid)
        return info is not None and info.state not in ("Z", "X")

    def kill(self, pid: int, sig: int = signal.SIGTERM, group: bool = False) -> bool:
        """Send ``sig`` to ``pid`` (to its process group with ``group=True``); False if
        there was no such process."""
        return self.kill_many([pid], sig, group=group)

    def kill_many(self, pids: Sequence[int], sig: int = signal.SIGTERM,
                  group: bool = False) -> bool:
        """Send ``sig`` to several PIDs in one command (added API); True if every one of
        them (with ``group``: at least one member of every group) got it.

        Groups are resolved to their members' PIDs from ``/proc`` rather than passed as
        negative PIDs: procps ``kill`` needs ``--`` before a negative PID and busybox
        ``kill`` rejects ``--`` after ``-s SIG``, while positive PIDs work in both."""
        if not pids:
            return True
        if any(int(p) <= 1 for p in pids):
            raise SessionError(f"refusing to signal PID(s) {list(pids)!r}")
        targets = [int(p) for p in pids]
        if group:
            groups = set(targets)
            members = [p for p in self.processes().values()
                       if p.pgrp in groups and p.state not in ("Z", "X")]
            if not members:
                return False
            ok = {p.pgrp for p in members} == groups
            targets = [p.pid for p in members]
            return self._signal(targets, sig) and ok
        return self._signal(targets, sig)

    def kill_tree(self, pid: int, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to ``pid``, its descendants and the members of its process group
        (added API; for a command that must end with everything it started). Returns the
        PIDs signalled."""
        procs = self.processes()
        if pid not in procs:
            return []
        targets = {pid, *descendants_of(procs, [pid])}
        targets |= {p.pid for p in procs.values() if p.pgrp == pid}
        pids = sorted(p for p in targets if p > 1 and procs[p].state not in ("Z", "X"))
        self._signal(pids, sig)
        return pids

    def _signal(self, pids: Sequence[int], sig: int) -> bool:
        name = signal.Signals(sig).name.removeprefix("SIG")
        return self.run(["kill", "-s", name, *(str(p) for p in pids)], timeout=30.0).ok


def raise_on_failure(session_name: str, result: CommandResult) -> CommandResult:
    """``check=True`` helper: SessionError with the stderr of a failed command."""
    if not result.ok:
        raise SessionError(
            f"{session_name}: {list(result.argv)!r} exited with status {result.exit_status}: "
            f"{result.stderr.strip()[-2000:]}"
        )
    return result


def timeout_error(pattern: str, timeout: float, output: str) -> CommandTimeout:
    """The CommandTimeout a Shell raises (the command is not known at that level)."""
    return CommandTimeout("", pattern, timeout, output)
