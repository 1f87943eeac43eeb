"""The error tree of pytest-dtsvirt.

Every error the framework raises on purpose derives from :class:`DtsvirtError`, so a caller
can catch one type. User mistakes (configs, markers, DUT specs) raise :class:`ConfigError`,
whose message names the file, line, section and key and what would be valid; the CLI and the
plugin print it without a traceback.

::

    DtsvirtError
     +-- ConfigError            a config, marker or option the user wrote is wrong
     +-- VerifyError            a legacy self.verify() failed (also an AssertionError)
     +-- SessionError           a DUT session failed (command, transport, copy)
     |    +-- CommandTimeout    send_expect did not see the expected output in time
     |    +-- GuestAuthError    the SSH server refused the login (retrying will not help)
     |    +-- UnsafeWorkdir     the DUT work dir is not ours alone (owner, mode, symlink)
     +-- GuestImageError        the test guest could not be built
     +-- AgentError             the qemu guest agent failed or answered with an error
     |    +-- AgentTimeout      the agent did not answer in time
     |    +-- AgentReplyError   the agent answered a command with an error reply
     +-- VmError                a VM could not be started, reached or stopped
          +-- QmpError          a QMP command failed, timed out or the monitor went away
          +-- VmStartError      start() failed; carries the diagnostics of the attempt
          |    +-- QemuExited    qemu exited while we waited for it
          |    +-- GuestPanic    the guest kernel panicked during the boot
          +-- VmDied            a running VM's qemu died or stopped responding, or the
          |                     link to its DUT dropped (named with the cause)
          +-- NotCheckable      the spec needs host resources a plain check cannot provide
          +-- NotYet            a readiness probe's "not yet" (retried until the deadline)
          +-- Fatal             a readiness probe's "this will never work" (not retried)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pytest_dtsvirt import secret


class DtsvirtError(Exception):
    """Base class of every error raised by pytest-dtsvirt. A registered secret (a password,
    see :mod:`pytest_dtsvirt.secret`) in the message is masked."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(secret.mask(a) if isinstance(a, str) else a for a in args))


@dataclass(frozen=True)
class Location:
    """Where a config item was written: file, line, section and key (each optional)."""

    file: str = "<string>"
    line: int | None = None
    section: str | None = None
    key: str | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where + ":"]
        if self.section is not None:
            parts.append(f"[{self.section}]")
        if self.key is not None:
            parts.append(self.key)
        return " ".join(parts).rstrip(":")


class ConfigError(DtsvirtError):
    """A config file, marker, option or DUT spec is wrong.

    ``str(error)`` is ``FILE:LINE: [section] key: message``, one line per problem when
    several problems were collected.
    """

    def __init__(self, message: str, location: Location | None = None,
                 problems: tuple[ConfigError, ...] = ()) -> None:
        self.message = secret.mask(message)
        self.location = location or Location()
        self.problems = problems or (self,)
        super().__init__(self._render())

    def _render(self) -> str:
        if len(self.problems) > 1 or self.problems[0] is not self:
            return "\n".join(str(p) for p in self.problems)
        return f"{self.location}: {self.message}"

    @classmethod
    def collect(cls, problems: list[ConfigError]) -> ConfigError:
        """One error that carries several problems (one line each)."""
        if len(problems) == 1:
            return problems[0]
        return cls(f"{len(problems)} problems", problems[0].location, tuple(problems))


@dataclass(frozen=True)
class ConfigWarning:
    """A config item that loads but does nothing here (legacy idioms), with where it is."""

    message: str
    location: Location

    def __post_init__(self) -> None:
        object.__setattr__(self, "message", secret.mask(self.message))

    def __str__(self) -> str:
        return f"{self.location}: warning: {self.message}"


class SessionError(DtsvirtError):
    """A command, transport or file copy on a DUT session failed."""


class GuestAuthError(SessionError):
    """The SSH server refused the login (wrong user, password or key). Retrying will not
    help, unlike a connection that is refused because the server is not up yet."""


class CommandTimeout(SessionError):
    """``send_expect`` timed out; ``output`` holds what the command printed so far."""

    def __init__(self, command: str, expected: str, timeout: float, output: str,
                 hint: str = "") -> None:
        self.command = command
        self.expected = expected
        self.timeout = timeout
        self.output = output
        self.hint = hint  # why the host may not answer (e.g. its VM is stopped), if known
        tail = output[-500:]
        why = f"\n{hint}" if hint else ""
        super().__init__(
            f"{command!r}: no match for {expected!r} within {timeout:g} s; output so far:\n{tail}"
            + why
        )


class UnsafeWorkdir(SessionError):
    """The DUT work dir (or a directory on the way to it) could be changed by another
    local user: wrong owner, group/other permission bits, or a symlink. ``path`` is the
    offending directory; the message says what is wrong and how to fix it."""

    def __init__(self, message: str, path: str) -> None:
        self.path = path
        super().__init__(message)


class GuestImageError(DtsvirtError):
    """The test guest image could not be built (apt missing, archive unreachable, ...)."""


class AgentError(DtsvirtError):
    """The qemu guest agent failed: socket missing, bad reply, or an error reply."""


class AgentTimeout(AgentError):
    """The guest agent did not answer within the timeout."""


class AgentReplyError(AgentError):
    """The agent answered ``command`` with ``{"error": {"class": ..., "desc": ...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"guest agent: {command} failed: {error_class}: {desc}")


class VmError(DtsvirtError):
    """A VM could not be started, reached or stopped."""


class QmpError(VmError):
    """A QMP command failed or timed out, or the QMP connection was lost.

    For an error reply of qemu, ``error_class`` and ``desc`` hold its class and text;
    both are empty for transport problems and timeouts."""

    def __init__(self, message: str, error_class: str = "", desc: str = "") -> None:
        self.error_class = error_class
        self.desc = desc
        super().__init__(message)


class MigrationError(QmpError):
    """A migration (live, or a snapshot save/restore) failed or did not finish in time.

    ``status`` is the last ``query-migrate`` status seen; ``desc`` holds qemu's own
    ``error-desc`` when it gave one."""

    def __init__(self, message: str, status: str = "", desc: str = "") -> None:
        self.status = status
        super().__init__(message, "", desc)


class VmStartError(VmError):
    """``start()`` failed. ``diagnostics`` maps a title to text (argv, log, console tail...)."""

    def __init__(self, message: str, diagnostics: Mapping[str, str] | None = None) -> None:
        self.diagnostics = dict(diagnostics or {})
        super().__init__(message)


class QemuExited(VmStartError):
    """qemu exited while the framework waited for it."""


class NotCheckable(VmError):
    """The spec needs host resources that a plain check cannot provide."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        super().__init__("not checkable on this host: " + "; ".join(reasons))


class NotYet(VmError):
    """A readiness probe's "not ready yet": the boot ladder retries it until the deadline
    and reports the last one if the deadline passes."""


class Fatal(VmError):
    """A readiness probe's "this will never work" (not retried): wrong password, refused
    config."""


class GuestPanic(VmStartError):
    """The guest kernel panicked during the boot (the console's panic line is the message)."""


class VmDied(VmError):
    """A VM that was running died (qemu exited or was killed), stopped responding (qemu
    stopped), or the link to its DUT dropped; the message says which, with qemu's exit
    status or signal and the console tail."""


class VerifyError(DtsvirtError, AssertionError):
    """A failed legacy ``self.verify(passed, description)`` (legacy ``VerifyFailure``); an
    AssertionError, so pytest reports it as a test failure."""


class CompatWarning(DtsvirtError, UserWarning):
    """A legacy argument or idiom the compat layer accepts but cannot honour (says why)."""
