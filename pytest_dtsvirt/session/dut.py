"""The DUT API of DTS (``send_expect``, ``kill_all``, ...) on top of a :class:`Session`.

:class:`Dut` is a host reached through a session; :class:`VmDut` is a guest (reached over
SSH through the host) with the same API plus its VM. ``kill_all`` ends, by PID, every process
started through the DUT's shells and :meth:`Dut.spawn` -- never by name, never the shells
themselves, never anything else on the host. Those processes are found by parent links and
by a random tag (:data:`TAG_VARIABLE`) in their environment, which daemons that double-fork
and ``setsid`` away from their parent keep.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Self, overload

from pytest_dtsvirt.dpdk.guest import DpdkGuestMixin
from pytest_dtsvirt.errors import CommandTimeout, SessionError
from pytest_dtsvirt.session.base import (
    PROMPT,
    PROMPT_RE,
    CommandResult,
    ProcInfo,
    Session,
    Shell,
    descendants_of,
)
from pytest_dtsvirt.session.dtsapi import DtsDutApi, new_base_dir_name
from pytest_dtsvirt.session.dutconfig import DutConfig

log = logging.getLogger(__name__)

#: the environment variable that marks the processes a :class:`Dut` started
TAG_VARIABLE = "DTSVIRT_DUT_TAG"

_PROMPT_STEM = PROMPT.rstrip("# ")  # what is left of the prompt when "# " is the match
_NEVER = r"(?!)"  # a regex that never matches: wait out a timeout, collecting output


def control_char(cmd: str) -> str | None:
    """The control character a legacy ``"^c"``/``"^C"``-style command stands for (pure):
    ``"^c"`` -> ``"\\x03"``; None for any other command."""
    if len(cmd) == 2 and cmd[0] == "^" and ("@" <= cmd[1].upper() <= "_"):
        return chr(ord(cmd[1].upper()) & 0x1F)
    return None


def clean_output(before: str, command: str) -> str:
    """DTS-style output of ``send_expect`` (pure): ``\\r\\n`` -> ``\\n``, an echoed copy of
    the command and a trailing prompt stem (when the match was ``# ``) removed."""
    text = before.replace("\r\n", "\n").replace("\r", "")
    cmd = command.strip()
    if cmd and text.startswith(cmd + "\n"):
        text = text[len(cmd) + 1:]
    if text.endswith(_PROMPT_STEM):
        text = text[: -len(_PROMPT_STEM)]
    return text.rstrip("\n")


class DutShell:
    """One interactive shell on a DUT with the DTS ``send_expect`` API (what
    :meth:`Dut.alt_session` returns)."""

    def __init__(self, shell: Shell, name: str, timeout_scale: float = 1.0) -> None:
        self._shell = shell
        self.name = name
        self.closed = False
        #: factor on every ``send_expect`` timeout (see :meth:`Dut.set_timeout_scale`)
        self.timeout_scale = timeout_scale

    @property
    def pid(self) -> int:
        """The PID of the shell process on its host."""
        return self._shell.pid

    @overload
    def send_expect(self, cmd: str, expected: str, timeout: float = 15,
                    verify: Literal[False] = False) -> str: ...

    @overload
    def send_expect(self, cmd: str, expected: str, timeout: float = 15,
                    verify: bool = False) -> str | int: ...

    def send_expect(self, cmd: str, expected: str, timeout: float = 15,
                    verify: bool = False) -> str | int:
        """Type ``cmd`` and a newline, wait for regex ``expected``; return the output before
        the match. CommandTimeout (with the output so far) if it does not appear; that
        output stays readable with :meth:`get_session_before`.

        As in DTS, output still pending from earlier commands (text after an earlier match,
        job notices, stale prompts) is discarded before ``cmd`` is sent. A two-character
        ``cmd`` ``"^X"`` is sent as the control character Ctrl-X (``"^c"`` interrupts the
        running program), without a newline. ``verify=True`` also asks the shell for the
        exit status (``echo $?``) and returns it as an int when it is not 0 (legacy)."""
        if self.closed:
            raise SessionError(f"{self.name}: the shell is closed")
        self._shell.flush()
        control = control_char(cmd)
        self._shell.send(control if control is not None else cmd + "\n")
        timeout *= self.timeout_scale
        try:
            out = clean_output(self._shell.expect(expected, timeout), cmd)
        except CommandTimeout as exc:
            raise CommandTimeout(cmd, expected, timeout, exc.output, exc.hint) from None
        log.debug("%s: %r -> %r", self.name, cmd, out[-2000:])
        if verify:
            status = self.send_expect("echo $?", expected, timeout).strip()
            if status != "0":
                log.error("%s: %r failed (status %s): %s", self.name, cmd, status, out)
                return int(status) if status.isdigit() else 1
        return out

    def get_session_before(self, timeout: float = 15) -> str:
        """Everything the shell printed that no ``send_expect`` consumed, after waiting
        ``timeout`` seconds for more (legacy: output of a timed-out command, of a program
        still running); the buffer is emptied."""
        if self.closed:
            raise SessionError(f"{self.name}: the shell is closed")
        if timeout > 0:
            with contextlib.suppress(CommandTimeout):
                self._shell.expect(_NEVER, timeout)
        return self._shell.flush().replace("\r\n", "\n")

    def get_session_output(self, timeout: float = 1) -> str:
        """Legacy name of :meth:`get_session_before` with a 1 s default."""
        return self.get_session_before(timeout)

    def send_command(self, cmd: str, timeout: float = 1.0) -> str:
        """Type ``cmd``; return its output once the prompt is back, or whatever arrived
        within ``timeout`` seconds if it is not (the command keeps running). ``"^X"`` is
        sent as the control character, as in :meth:`send_expect` (legacy: ``"^a"``,
        ``"^d"`` detach a ``screen``)."""
        if self.closed:
            raise SessionError(f"{self.name}: the shell is closed")
        self._shell.flush()
        control = control_char(cmd)
        self._shell.send(control if control is not None else cmd + "\n")
        try:
            before = self._shell.expect(PROMPT_RE, timeout)
        except CommandTimeout:
            before = self._shell.flush()
        return clean_output(before, cmd)

    def sync(self, timeout: float = 10.0) -> None:
        """Get a clean prompt back (echo off, known prompt, no pending output)."""
        self._shell.sync(timeout)

    def close(self) -> None:
        """Close the shell; idempotent."""
        self.closed = True
        self._shell.close()


class Dut(DtsDutApi):
    """A device under test reached through ``session``; the API of DTS's ``Dut`` (the
    legacy CPU/EAL/app names: :class:`~pytest_dtsvirt.session.dtsapi.DtsDutApi`)."""

    def __init__(self, session: Session, config: DutConfig) -> None:
        self.session = session
        self.config = config
        self.name = config.name
        self._shells: list[DutShell] = []
        self._main: DutShell | None = None
        self._alt: DutShell | None = None  # send_expect(..., alt_session=True)
        self.timeout_scale = 1.0
        self._base_dir: str | None = None  # see DtsDutApi.base_dir
        self._spawned: dict[int, int] = {}  # pid -> start time (tells a reused PID apart)
        self._tag = f"{TAG_VARIABLE}={secrets.token_hex(8)}"  # in what its shells start

    # -- shells ----------------------------------------------------------------------------

    #: a guest's ``base_dir`` is made by its first shell (no keeper: it goes with the guest)
    _base_dir_by_shell = False

    def _new_shell(self) -> DutShell:
        # in base_dir, as the legacy DUT's shells (in its DPDK tree): apps_name is relative;
        # both in the round trip that sets the shell up
        made = None
        if self._base_dir is None and self._base_dir_by_shell:
            made = new_base_dir_name()
            goto = f"mkdir -m 0700 -- {shlex.quote(made)} && cd -- {shlex.quote(made)}"
        else:
            goto = f"cd -- {shlex.quote(self.base_dir)}"
        shell = DutShell(self.session.shell(init=f"export {self._tag} && {goto}"), self.name,
                         self.timeout_scale)
        self._shells.append(shell)
        if made is not None:
            self._base_dir = made
        return shell

    @property
    def shell(self) -> DutShell:
        """The main shell (opened on first use, in :attr:`base_dir`)."""
        if self._main is None or self._main.closed:
            self._main = self._new_shell()
        return self._main

    @overload
    def send_expect(self, cmd: str, expected: str, timeout: float = 15,
                    alt_session: bool = False, verify: Literal[False] = False) -> str: ...

    @overload
    def send_expect(self, cmd: str, expected: str, timeout: float = 15,
                    alt_session: bool = False, verify: bool = False) -> str | int: ...

    def send_expect(self, cmd: str, expected: str, timeout: float = 15,
                    alt_session: bool = False, verify: bool = False) -> str | int:
        """``send_expect`` in the main shell (``alt_session=True``: in a second shell
        kept for that, as the legacy DUT's ``alt_session``); see
        :meth:`DutShell.send_expect` for ``"^c"`` and ``verify``."""
        shell = self.shell
        if alt_session:
            if self._alt is None or self._alt.closed:
                self._alt = self._new_shell()
            shell = self._alt
        return shell.send_expect(cmd, expected, timeout, verify=verify)

    def set_timeout_scale(self, factor: float) -> None:
        """Multiply every later ``send_expect`` timeout of this DUT's shells by ``factor``
        (the compat layer sets it for guests under TCG, whose programs start several times
        slower than the legacy timeouts assume)."""
        self.timeout_scale = factor
        for shell in self._shells:
            shell.timeout_scale = factor

    def get_session_before(self, timeout: float = 15) -> str:
        """:meth:`DutShell.get_session_before` of the main shell."""
        return self.shell.get_session_before(timeout)

    def get_session_output(self, timeout: float = 1) -> str:
        """:meth:`DutShell.get_session_output` of the main shell."""
        return self.shell.get_session_output(timeout)

    def new_session(self, suite: str = "") -> DutShell:
        """Legacy name: a new shell on this DUT (see :meth:`alt_session`), in
        :attr:`base_dir` (as every shell of the DUT); close it with :meth:`close_session`."""
        return self._new_shell()

    def close_session(self, session: DutShell) -> None:
        """Legacy name: close a shell from :meth:`new_session`."""
        session.close()

    def send_command(self, cmd: str, timeout: float = 1.0) -> str:
        """``send_command`` in the main shell; see :meth:`DutShell.send_command`."""
        return self.shell.send_command(cmd, timeout)

    @property
    def process_tag(self) -> str:
        """``NAME=VALUE`` in the environment of what this DUT starts (see :meth:`kill_all`);
        a program started with ``env`` and this tag is ended by :meth:`kill_all` too."""
        return self._tag

    def alt_session(self) -> DutShell:
        """A second, independent shell on the same host, in :attr:`base_dir` (covered by
        :meth:`kill_all`)."""
        return self._new_shell()

    # -- commands, processes, files ----------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: bytes | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        """:meth:`Session.run` on this DUT (added convenience)."""
        return self.session.run(argv, timeout=timeout, check=check, input=input, env=env)

    def spawn(self, argv: Sequence[str], *, stdout_path: str, stderr_path: str,
              cwd: str | None = None) -> int:
        """:meth:`Session.spawn`, recorded so that :meth:`kill_all` ends it."""
        pid = self.session.spawn(["env", self._tag, *argv], stdout_path=stdout_path,
                                 stderr_path=stderr_path, cwd=cwd)
        info = self.session.proc_info(pid)
        if info is not None:
            self._spawned[pid] = info.starttime
        return pid

    def get_memory_channels(self) -> int:
        """The DUT's memory channels (DUT config ``memory_channels``, default 4)."""
        return self.config.memory_channels

    def copy_to(self, local_path: str, remote_path: str) -> None:
        """Copy a local file to the DUT."""
        self.session.put(local_path, remote_path)

    def copy_from(self, remote_path: str, local_path: str) -> None:
        """Copy a file from the DUT to the local machine."""
        self.session.get(remote_path, local_path)

    # -- kill_all ------------------------------------------------------------------------

    def _victims(self, procs: Mapping[int, ProcInfo], known: Mapping[int, int]
                 ) -> dict[int, int]:
        """``{pid: start time}`` of what :meth:`kill_all` ends: the spawned processes, the
        ``known`` ones that still run, and the descendants of these and of the shells."""
        shell_pids = {s.pid for s in self._shells if not s.closed}
        roots = {p: start for p, start in [*self._spawned.items(), *known.items()]
                 if p in procs and procs[p].starttime == start}
        found = dict(roots)
        for pid in descendants_of(procs, [*shell_pids, *roots]):
            found[pid] = procs[pid].starttime
        return {p: s for p, s in found.items()
                if p not in shell_pids and p > 1 and procs[p].state not in ("Z", "X")}

    def kill_all(self, timeout: float = 5.0) -> list[int]:
        """End every process started through this DUT's shells and :meth:`spawn`, by PID,
        daemons that left their parent included: SIGTERM, then SIGKILL for what is left
        after ``timeout`` s. The shells stay open and get a clean prompt back. Returns the
        PIDs that were signalled."""
        tagged = self.session.pids_with_env(self._tag)
        procs = self.session.processes()
        victims = self._victims(procs, {p: procs[p].starttime for p in tagged if p in procs})
        signalled = set(victims)
        if victims:
            log.info("%s: kill_all: SIGTERM %s", self.name, sorted(victims))
            self.session.kill_many(sorted(victims), signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while victims and time.monotonic() < deadline:
                time.sleep(0.05)
                procs = self.session.processes()
                victims = self._victims(procs, victims)
                if new := set(victims) - signalled:
                    self.session.kill_many(sorted(new), signal.SIGTERM)
                    signalled |= new
            for _ in range(3):
                if not victims:
                    break
                log.warning("%s: kill_all: SIGKILL %s", self.name, sorted(victims))
                self.session.kill_many(sorted(victims), signal.SIGKILL)
                signalled |= set(victims)
                time.sleep(0.05)
                victims = self._victims(self.session.processes(), victims)
            if victims:
                raise SessionError(f"{self.name}: kill_all: PIDs {sorted(victims)} survived "
                                   "SIGKILL")
        self._spawned.clear()
        for shell in self._shells:
            if not shell.closed:
                shell.sync()
        return sorted(signalled)

    def close(self) -> None:
        """End what this DUT started (:meth:`kill_all`, best effort), remove the EAL runtime
        directories of the file prefixes it handed out and its ``base_dir``, close its
        shells and the session; idempotent."""
        with contextlib.suppress(SessionError):
            if self._shells or self._spawned:  # a daemon may outlive a closed shell
                self.kill_all()
        with contextlib.suppress(SessionError):
            self._remove_eal_dirs()
        with contextlib.suppress(SessionError):
            self._remove_base_dir()
        for shell in self._shells:
            shell.close()
        self._shells, self._main, self._alt = [], None, None
        self.session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} via {self.session.name}>"


def connect(config: DutConfig) -> Dut:
    """Open a session to the DUT (local or SSH) and wrap it in a :class:`Dut`."""
    from pytest_dtsvirt.session.local import LocalSession
    from pytest_dtsvirt.session.ssh import SshSession

    if config.is_local:
        return Dut(LocalSession(config.name), config)
    session = SshSession(config.host, config.port, config.login, password=config.password,
                         key_filename=config.key, known_hosts=config.known_hosts,
                         host_key_check=config.host_key_check, name=config.name
                         if config.name != config.host else None)
    return Dut(session, config)


class VmDut(Dut, DpdkGuestMixin):
    """A guest as a DUT: the :class:`Dut` API inside the guest, plus its VM, plus the DPDK
    API of legacy suites (``ports_info``, ``get_ports``, ``bind_interfaces_linux``,
    ``testpmd()``: :class:`~pytest_dtsvirt.dpdk.guest.DpdkGuestMixin`).

    ``vm`` is the hypervisor object (typed loosely to avoid an import cycle); ``kill_all``
    ends processes *in the guest*, by the same PID mechanism.
    """

    _base_dir_by_shell = True

    def __init__(self, session: Session, config: DutConfig, vm: Any) -> None:
        super().__init__(session, config)
        self.vm = vm

    @property
    def vm_name(self) -> str:
        """The VM's name (section of the suite cfg)."""
        return str(getattr(self.vm, "vm_name", self.config.name))

    def _build_host(self) -> Any:
        """The VM's host DUT builds DPDK examples for a guest without a compiler."""
        return getattr(self.vm, "dut", None)

    @property
    def pci_maps(self) -> Any:
        """The host<->guest PCI address map of passed-through devices (from the VM)."""
        return self.vm.pci_maps

    @property
    def phase_timings(self) -> Mapping[str, float]:
        """Boot phase -> seconds (from the VM)."""
        timings: Mapping[str, float] = self.vm.phase_timings
        return timings
