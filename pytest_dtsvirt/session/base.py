"""One session API over local and SSH transports (design section 2). INTERFACE STUB.

A :class:`Session` runs commands on one host (the DUT, or a guest), starts detached
processes, opens byte streams to unix sockets and TCP ports *on that host* (so QMP, QGA and
guest SSH ride on it and a remote DUT works exactly like localhost), copies files and opens
interactive shells for ``send_expect``.

Commands are always argv lists. Over SSH they are joined with :func:`shlex.join`, so no value
ever reaches a shell unquoted.
"""

from __future__ import annotations

import abc
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CommandResult:
    """The outcome of :meth:`Session.run`."""

    argv: tuple[str, ...]
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class Shell(abc.ABC):
    """An interactive shell on a host (bash locally, a pty shell over SSH)."""

    @abc.abstractmethod
    def send(self, text: str) -> None:
        """Write ``text`` as is (no newline added)."""

    @abc.abstractmethod
    def expect(self, pattern: str, timeout: float) -> str:
        """Wait for regex ``pattern``; return the output before the match (the match is
        consumed). Raises CommandTimeout (with the output so far) on timeout."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the shell; idempotent."""


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
    def shell(self) -> Shell:
        """A new interactive shell on this host."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the transport and every stream and shell it opened; idempotent."""

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
