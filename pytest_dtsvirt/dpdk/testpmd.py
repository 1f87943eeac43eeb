"""``dpdk-testpmd`` driven interactively on a host or in a guest (pure driver, no policy).

:class:`Testpmd` starts ``dpdk-testpmd -i`` in a pty shell of a
:class:`~pytest_dtsvirt.session.base.Session` (``LocalSession``, SSH to a DUT, or SSH into a
guest), waits for its prompt, and drives its command line: forwarding mode (``set_fwd``),
``start``, ``start_tx_first``, ``stop``, verbose packet dumps, port statistics and port
summaries. :meth:`Testpmd.close` always ends the process by PID (checked against its start
time, so a reused PID is never signalled) and removes what it created.

Subclasses say what to start and what "ready" means: the host's vhost-user backend
(:class:`pytest_dtsvirt.dpdk.vhost.TestpmdBackend`) and testpmd inside a guest on its
virtio ports (:class:`pytest_dtsvirt.dpdk.guest.GuestTestpmd`).

A reader thread drains testpmd's output all the time: with ``set verbose`` on, testpmd's
forwarding core prints every packet, and once the pty buffer is full it blocks in ``printf``
and stops forwarding (measured: 30 % ping loss until this was done).
"""

from __future__ import annotations

import logging
import re
import shlex
import threading
import time
from collections.abc import Sequence
from typing import Protocol

from pytest_dtsvirt.dpdk.parse import (
    PacketRecord,
    PortStats,
    PortSummary,
    parse_packet_log,
    parse_port_stats,
    parse_port_summary,
)
from pytest_dtsvirt.errors import CommandTimeout, SessionError
from pytest_dtsvirt.session.base import CommandResult, ProcInfo, Shell

log = logging.getLogger("pytest_dtsvirt.dpdk")

TESTPMD_PROMPT = "testpmd> "
# DPDK's cmdline writes its prompt one character per write(), while the forwarding core's
# verbose dumps arrive as whole lines (stdio, line-buffered): with forwarding and verbose on,
# dump lines can land between the prompt's characters ("testp" + lines + "md> "; measured).
_GAP = r"(?:[^\n]*\n){0,40}?"
PROMPT_RE = _GAP.join(re.escape(c) for c in TESTPMD_PROMPT)
_RESCAN = 16384  # how far back a prompt split by dump lines can start
_POLL = 0.02  # seconds between reads of the shell by the reader thread


# ------------------------------------------------------------------------------ the host


class TestpmdHost(Protocol):
    """What the backend needs of a host: any :class:`~pytest_dtsvirt.session.base.Session`
    (``LocalSession``, SSH) satisfies it."""

    name: str

    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0,
            check: bool = False) -> CommandResult: ...

    def shell(self) -> Shell: ...

    def proc_info(self, pid: int) -> ProcInfo | None: ...


class _Reader:
    """Drains a shell in a thread into one growing transcript; waits for patterns in it."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.text = ""
        self.pos = 0  # end of what callers consumed
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testpmd-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                chunk = self.shell.flush()
            except BaseException as exc:
                with self._cond:
                    self.error = exc
                    self._cond.notify_all()
                return
            if chunk:
                with self._cond:
                    self.text += chunk
                    self._cond.notify_all()
            else:
                self._stop.wait(_POLL)

    def wait_for(self, pattern: str, deadline: float, what: str, poll: float = 0.5) -> str:
        """The text from :attr:`pos` up to the first match of ``pattern`` (the match is
        consumed); CommandTimeout at ``deadline``. Wakes at least every ``poll`` seconds."""
        regex = re.compile(pattern)
        timeout = max(deadline - time.monotonic(), 0.0)
        with self._cond:
            scan = self.pos
            while True:
                found = regex.search(self.text, scan)
                if found is not None:
                    before = self.text[self.pos:found.start()]
                    self.pos = found.end()
                    return before
                scan = max(self.pos, len(self.text) - _RESCAN)
                if self.error is not None:
                    raise SessionError(f"reading testpmd's output failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandTimeout(what, pattern, timeout, self.text[self.pos:])
                self._cond.wait(min(left, poll))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------------------- the driver


class Testpmd:
    """``dpdk-testpmd`` running interactively on ``host``.

    Use as a context manager, or call :meth:`launch` and, always, :meth:`close`. Subclasses
    implement :meth:`_prepare` (create what the run needs, return the argv) and may extend
    :meth:`_check_ready` (inspect the output up to the first prompt) and :meth:`_cleanup`.
    """

    __test__ = False  # not a pytest test class despite the name

    #: what an error message calls this testpmd
    role = "testpmd"

    def __init__(self, host: TestpmdHost, *, ready_timeout: float = 60.0) -> None:
        self.host = host
        self.ready_timeout = ready_timeout
        self._shell: Shell | None = None
        self._reader: _Reader | None = None
        self._lock = threading.Lock()  # one command at a time
        self._log_mark = 0
        self._started_at: int | None = None  # start time of self.pid (see _alive)
        #: PID of testpmd on its host (None when not running)
        self.pid: int | None = None
        #: the testpmd command line
        self.argv: list[str] = []
        #: seconds from launch to the first prompt (and whatever _check_ready waits for)
        self.ready_seconds: float | None = None
        #: testpmd's output up to its first prompt (EAL and port setup messages)
        self.startup_output = ""

    # --------------------------------------------------------------------------- life

    def _prepare(self) -> list[str]:
        """Create what the run needs on the host; return testpmd's argv."""
        raise NotImplementedError

    def _check_ready(self, output: str) -> None:
        """Raise SessionError when testpmd started but is not usable (``output``: what it
        printed up to its first prompt)."""

    def _cleanup(self) -> None:
        """Remove what :meth:`_prepare` created (runs after the process is gone)."""

    def launch(self) -> Testpmd:
        """Start testpmd and wait (bounded) until its prompt is there and
        :meth:`_check_ready` is content. On failure nothing is left running."""
        try:
            self._launch()
        except BaseException:
            self.close()
            raise
        return self

    def _launch(self) -> None:
        began = time.monotonic()
        self.argv = self._prepare()
        self._shell = self.host.shell()
        # The shell's PID (known after Session.shell()) becomes testpmd's with exec.
        if not self._shell.pid:
            raise SessionError(f"{self.host.name}: the shell did not report its PID")
        self.pid = self._shell.pid
        # `exec` keeps the PID and the start time: they identify testpmd from here on
        info = self.host.proc_info(self.pid)
        self._started_at = info.starttime if info is not None else None
        self._reader = _Reader(self._shell)
        self._shell.send(f"exec {shlex.join(self.argv)}\n")
        deadline = began + self.ready_timeout
        while True:  # the prompt, or testpmd's death, whichever comes first
            try:
                output = self._reader.wait_for(
                    PROMPT_RE, min(deadline, time.monotonic() + 0.5), "testpmd start")
                break
            except CommandTimeout as exc:
                if time.monotonic() >= deadline or not self._alive():
                    state = "did not start in time" if self._alive() else "exited"
                    raise SessionError(f"{self.role} on {self.host.name} {state}: "
                                       f"{shlex.join(self.argv)}\n{exc.output[-2000:]}")
        self.startup_output = output
        self._check_ready(output)
        self.ready_seconds = time.monotonic() - began
        log.info("%s (PID %s) on %s ready in %.2f s", self.role, self.pid, self.host.name,
                 self.ready_seconds)

    def __enter__(self) -> Testpmd:
        return self.launch()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        """True while this testpmd process runs."""
        return self._alive()

    def quit(self, timeout: float = 10.0) -> None:
        """``quit`` testpmd politely, then make sure it is gone (see :meth:`close`)."""
        if self._shell is not None and self.pid is not None:
            try:
                self._shell.send("quit\n")
            except (SessionError, OSError):
                pass  # close() escalates anyway
            else:
                self._wait_gone(timeout)
        self.close()

    def close(self) -> None:
        """End testpmd by PID (TERM, then KILL), remove what the run created; idempotent
        and safe after a failed launch or after the process was ended elsewhere (e.g. by
        ``kill_all``)."""
        try:
            if self.pid is not None and self._alive():
                self.host.run(["kill", "-TERM", str(self.pid)], timeout=10)
                if not self._wait_gone(10.0):
                    self.host.run(["kill", "-KILL", str(self.pid)], timeout=10)
                    self._wait_gone(10.0)
        finally:
            self.pid = None
            if self._reader is not None:
                self._reader.stop()
            if self._shell is not None:
                self._shell.close()
                self._shell = None
            self._cleanup()

    def _alive(self) -> bool:
        """True while our testpmd runs: the PID is alive, not a zombie, and has the start
        time it had at launch (so a reused PID is never signalled). One round trip."""
        if self.pid is None:
            return False
        info = self.host.proc_info(self.pid)
        return (info is not None and info.state not in ("Z", "X")
                and info.starttime == self._started_at)

    def _wait_gone(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = 0.02
        while self._alive():
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        return True

    # ----------------------------------------------------------------------- commands

    def command(self, cmd: str, timeout: float = 30.0) -> str:
        """Send one testpmd command; return its output up to the next prompt."""
        with self._lock:
            if self._shell is None or self._reader is None:
                raise SessionError(f"{self.role} on {self.host.name} is not running")
            self._shell.send(cmd + "\n")
            out = self._reader.wait_for(PROMPT_RE, time.monotonic() + timeout,
                                        f"testpmd {cmd!r}")
            log.debug("testpmd> %s\n%s", cmd, out)
            return out

    execute_cmd = command  # the legacy PmdOutput name

    def set_fwd(self, mode: str) -> None:
        """``set fwd MODE`` (io, mac, csum, rxonly, ...)."""
        out = self.command(f"set fwd {mode}")
        if "packet forwarding mode" not in out:
            raise SessionError(f"set fwd {mode}: {out.strip()}")

    def set_verbose(self, level: int) -> None:
        """``set verbose N``: 1 dumps received packets, 2 sent ones, 3 both."""
        self.command(f"set verbose {int(level)}")

    def csum_parse_tunnel(self, port: int, on: bool = True) -> None:
        """``csum parse-tunnel on|off PORT`` (makes ``csum`` forwarding see VXLAN)."""
        out = self.command(f"csum parse-tunnel {'on' if on else 'off'} {int(port)}")
        if "Parse tunnel is" not in out:
            raise SessionError(f"csum parse-tunnel: {out.strip()}")

    def start(self) -> None:
        """Start forwarding (``start``)."""
        self._start("start")

    def start_tx_first(self, bursts: int = 1) -> None:
        """Start forwarding after sending ``bursts`` bursts on every port
        (``start tx_first [N]``): the way to put packets into a loop with no generator."""
        self._start("start tx_first" if bursts == 1 else f"start tx_first {int(bursts)}")

    def _start(self, cmd: str) -> None:
        out = self.command(cmd)
        if "packet forwarding" not in out and "already started" not in out:
            raise SessionError(f"{cmd}: {out.strip()}")

    def stop(self) -> str:
        """Stop forwarding (``stop``; testpmd keeps running, see :meth:`quit`); returns
        testpmd's forward statistics text."""
        return self.command("stop")

    stop_fwd = stop

    def clear_port_stats(self) -> None:
        """``clear port stats all``."""
        self.command("clear port stats all")

    def port_stats(self, port: int) -> PortStats:
        """The counters of ``show port stats PORT``."""
        out = self.command(f"show port stats {int(port)}")
        try:
            return parse_port_stats(out)[port]
        except KeyError:
            raise SessionError(f"show port stats {port}: {out.strip()}")

    get_pmd_stats = port_stats  # the legacy PmdOutput name

    def port_summary(self) -> list[PortSummary]:
        """The rows of ``show port summary all`` (MAC, device, driver, link), port order."""
        return parse_port_summary(self.command("show port summary all"))

    def packet_log(self, clear: bool = False) -> list[PacketRecord]:
        """The verbose packet dumps printed since launch (or the last ``clear=True``)."""
        self.command("")  # a round trip: what was printed before it is in the transcript
        text = self.transcript()
        records = parse_packet_log(text, self._log_mark)
        if clear:
            self._log_mark = len(text)
        return records

    def transcript(self) -> str:
        """Everything testpmd printed so far (for diagnostics)."""
        return self._reader.text if self._reader is not None else ""
