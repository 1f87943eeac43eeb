"""``dpdk-testpmd`` as the host's vhost-user backend (the reference's ``tep_termination``).

:class:`TestpmdBackend` starts ``dpdk-testpmd`` interactively on a host (a pty shell of a
:class:`~pytest_dtsvirt.session.base.Session`: ``LocalSession`` or SSH), with one
``net_vhost`` port per vhost-user socket in a private run directory, waits until every
socket is bound, and drives testpmd's command line: forwarding mode, verbose packet dumps,
port statistics. :meth:`TestpmdBackend.close` always ends the process by PID and removes its
sockets and run directory.

A reader thread drains testpmd's output all the time: with ``set verbose`` on, testpmd's
forwarding core prints every packet, and once the pty buffer is full it blocks in ``printf``
and stops forwarding (measured: 30 % ping loss until this was done).

Measured on DPDK 22.11 (Debian 12): the vhost PMD sets no hardware packet type, so in ``io``
forwarding the verbose dump of a VXLAN packet only shows ``sw ptype: L2_ETHER L3_IPV4
L4_UDP`` (``rte_net_get_ptype`` does not parse UDP tunnels) and ``port config N
udp_tunnel_port add vxlan 4789`` answers "Operation not supported". ``csum`` forwarding with
``csum parse-tunnel on N`` does recognise UDP port 4789: the dump of every packet it sends
carries ``RTE_MBUF_F_TX_TUNNEL_VXLAN`` (verbose level 2 or 3). ``csum`` forwarding rewrites
the Ethernet addresses (source: the testpmd port, destination: ``--eth-peer``), so pass the
guest MACs as ``eth_peers``.
"""

from __future__ import annotations

import logging
import re
import secrets
import shlex
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

from pytest_dtsvirt.errors import CommandTimeout, SessionError
from pytest_dtsvirt.session.base import CommandResult, ProcInfo, Shell
from pytest_dtsvirt.vhost.parse import PacketRecord, PortStats, parse_packet_log, parse_port_stats

log = logging.getLogger("pytest_dtsvirt.vhost")

TESTPMD_PROMPT = "testpmd> "
# DPDK's cmdline writes its prompt one character per write(), while the forwarding core's
# verbose dumps arrive as whole lines (stdio, line-buffered): with forwarding and verbose on,
# dump lines can land between the prompt's characters ("testp" + lines + "md> "; measured).
_GAP = r"(?:[^\n]*\n){0,40}?"
PROMPT_RE = _GAP.join(re.escape(c) for c in TESTPMD_PROMPT)
_RESCAN = 16384  # how far back a prompt split by dump lines can start
_BOUND = re.compile(r"VHOST_CONFIG: \((?P<path>[^)]+)\) binding succeeded")
_POLL = 0.02  # seconds between reads of the shell by the reader thread


def build_testpmd_argv(binary: str, sockets: Sequence[str], *, file_prefix: str,
                       mem_mb: int = 512, nb_mbufs: int = 16384, queues: int = 1,
                       eth_peers: Mapping[int, str] | None = None,
                       eal_args: Sequence[str] = (), app_args: Sequence[str] = ()) -> list[str]:
    """The ``dpdk-testpmd`` command line: no hugepages, no PCI, one ``net_vhost`` per socket,
    interactive. ``--no-shconf`` and a unique ``file_prefix`` keep parallel runs apart."""
    argv = [binary, "--no-huge", "-m", str(mem_mb), "--no-pci", "--no-shconf",
            f"--file-prefix={file_prefix}"]
    for index, path in enumerate(sockets):
        if "," in path:
            raise ValueError(f"vhost-user socket path must not contain ',': {path!r}")
        argv += ["--vdev", f"net_vhost{index},iface={path},queues={queues}"]
    argv += [*eal_args, "--", "-i", f"--total-num-mbufs={nb_mbufs}"]
    for port, mac in sorted((eth_peers or {}).items()):
        argv.append(f"--eth-peer={port},{mac}")
    argv += list(app_args)
    return argv


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


# --------------------------------------------------------------------------- the backend


class TestpmdBackend:
    """``dpdk-testpmd`` serving ``ports`` vhost-user sockets on ``host``.

    Use as a context manager, or call :meth:`launch` and, always, :meth:`close`::

        with TestpmdBackend(dut.session, ports=2) as pmd:
            vm.set_vm_device(driver="vhost-user", opt_path=pmd.socket_paths[0], ...)
            pmd.set_fwd("io"); pmd.start()
            ...; pmd.port_stats(0).rx_packets
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, host: TestpmdHost, ports: int = 2, *, binary: str = "dpdk-testpmd",
                 mem_mb: int = 512, nb_mbufs: int = 16384,
                 eth_peers: Mapping[int, str] | None = None, eal_args: Sequence[str] = (),
                 app_args: Sequence[str] = (), ready_timeout: float = 60.0,
                 socket_name: str = "vhost-net{index}") -> None:
        if ports < 1:
            raise ValueError("ports must be >= 1")
        self.host = host
        self.ports = ports
        self.ready_timeout = ready_timeout
        self.file_prefix = f"dtsvirt-vhost-{secrets.token_hex(4)}"
        self._binary, self._mem_mb, self._nb_mbufs = binary, mem_mb, nb_mbufs
        self._eth_peers = dict(eth_peers or {})
        self._eal_args, self._app_args = tuple(eal_args), tuple(app_args)
        self._socket_name = socket_name
        self._shell: Shell | None = None
        self._reader: _Reader | None = None
        self._lock = threading.Lock()  # one command at a time
        self._log_mark = 0
        #: PID of testpmd on the host (None when not running)
        self._started_at: int | None = None  # start time of self.pid (see _alive)
        self.pid: int | None = None
        #: the private run directory (mode 0700) holding the sockets
        self.run_dir: str | None = None
        #: the vhost-user socket paths, port order
        self.socket_paths: list[str] = []
        #: the testpmd command line
        self.argv: list[str] = []
        #: seconds from launch to all sockets bound
        self.ready_seconds: float | None = None

    # --------------------------------------------------------------------------- life

    def launch(self) -> TestpmdBackend:
        """Start testpmd and wait (bounded) until every socket reports ``binding
        succeeded`` and the prompt is there. On failure nothing is left running."""
        try:
            self._launch()
        except BaseException:
            self.close()
            raise
        return self

    def _launch(self) -> None:
        began = time.monotonic()
        made = self.host.run(["mktemp", "-d", "/tmp/dtsvirt-vhost.XXXXXXXX"], check=True)
        self.run_dir = made.stdout.strip()
        self.socket_paths = [f"{self.run_dir}/{self._socket_name.format(index=i)}"
                             for i in range(self.ports)]
        self.argv = build_testpmd_argv(
            self._binary, self.socket_paths, file_prefix=self.file_prefix, mem_mb=self._mem_mb,
            nb_mbufs=self._nb_mbufs, eth_peers=self._eth_peers, eal_args=self._eal_args,
            app_args=self._app_args)
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
                    raise SessionError(f"testpmd on {self.host.name} {state}: "
                                       f"{shlex.join(self.argv)}\n{exc.output[-2000:]}")
        bound = {m.group("path") for m in _BOUND.finditer(output)}
        missing = [p for p in self.socket_paths if p not in bound]
        if missing:
            raise SessionError(f"testpmd on {self.host.name} did not bind {missing}:\n"
                               f"{output[-2000:]}")
        self.ready_seconds = time.monotonic() - began
        log.info("testpmd (PID %s) on %s serves %s (ready in %.2f s)", self.pid,
                 self.host.name, " ".join(self.socket_paths), self.ready_seconds)

    def __enter__(self) -> TestpmdBackend:
        return self.launch()

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        """End testpmd by PID (TERM, then KILL), remove sockets and run directory;
        idempotent and safe after a failed launch."""
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
            if self.run_dir is not None:
                self.host.run(["rm", "-rf", "--", self.run_dir], timeout=30)
                self.run_dir = None
            # EAL's runtime directory of this prefix (empty with --no-shconf, but present).
            self.host.run(["sh", "-c", 'rm -rf -- "/var/run/dpdk/$1" '
                           '"${XDG_RUNTIME_DIR:-/tmp}/dpdk/$1"', "sh", self.file_prefix],
                          timeout=30)

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
                raise SessionError("testpmd is not running")
            self._shell.send(cmd + "\n")
            out = self._reader.wait_for(PROMPT_RE, time.monotonic() + timeout,
                                        f"testpmd {cmd!r}")
            log.debug("testpmd> %s\n%s", cmd, out)
            return out

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
        out = self.command("start")
        if "packet forwarding" not in out and "already started" not in out:
            raise SessionError(f"start: {out.strip()}")

    def stop_fwd(self) -> str:
        """Stop forwarding (``stop``); returns testpmd's forward statistics text."""
        return self.command("stop")

    def port_stats(self, port: int) -> PortStats:
        """The counters of ``show port stats PORT``."""
        out = self.command(f"show port stats {int(port)}")
        try:
            return parse_port_stats(out)[port]
        except KeyError:
            raise SessionError(f"show port stats {port}: {out.strip()}")

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
