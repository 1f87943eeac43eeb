"""Connecting to a local unix stream socket with a bounded wait and a clear error, and the
common shape of the clients that talk over such a socket.

:func:`connect_unix` is used by the local :class:`~pytest_dtsvirt.session.base.Session`
(``open_unix``) and, through :class:`SocketClient`, by the QMP, HMP and guest agent clients;
each raises its own error type.
"""

from __future__ import annotations

import abc
import socket
from collections.abc import Callable
from typing import ClassVar, Self

from pytest_dtsvirt.errors import SessionError


def _reason(exc: OSError, timeout: float) -> str:
    """Why ``connect()`` failed, in words, with the OS error."""
    if isinstance(exc, FileNotFoundError):
        return f"the socket does not exist (is its process running?) ({exc})"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused: nobody listens on it ({exc})"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout} s"
    return str(exc)


def connect_unix(path: str, timeout: float, error: type[Exception] = SessionError, *,
                 what: str = "unix socket") -> socket.socket:
    """A stream socket connected to the local unix socket ``path`` within ``timeout``
    seconds; the socket keeps ``timeout`` as its timeout.

    Raises ``error("<what> <path>: cannot connect: <reason>")`` (chained to the OS error)
    when the socket is missing, refuses or does not answer in time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise error(f"{what} {path}: cannot connect: {_reason(exc, timeout)}") from exc
    return sock


class SocketClient(abc.ABC):
    """A protocol client built on an already connected socket (from a DUT session's
    ``open_unix``), usable as a context manager; :meth:`open` connects to a local path."""

    #: what :meth:`open` raises, and how it names the socket, when connecting fails
    connect_error: ClassVar[type[Exception]] = SessionError
    connect_what: ClassVar[str] = "unix socket"
    #: called with the error of a call that failed for want of an answer (connection lost:
    #: ``lost=True``; timeout: False) before it is raised; its owner may raise a better one
    #: (a running VM raises VmDied when qemu died, see :mod:`pytest_dtsvirt.qemu.kvm`)
    on_failure: Callable[[Exception, bool], None] | None = None

    def _failed(self, err: Exception, *, lost: bool) -> Exception:
        """``err``, after :attr:`on_failure` had its say (it raises instead, or returns)."""
        hook = self.on_failure
        if hook is not None:
            hook(err, lost)
        return err

    @abc.abstractmethod
    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        """Take ownership of ``sock``; ``timeout`` bounds each call by default."""

    @classmethod
    def open(cls, path: str, timeout: float = 10.0) -> Self:
        """Connect to the local unix socket ``path``."""
        return cls(connect_unix(path, timeout, cls.connect_error, what=cls.connect_what),
                   timeout)

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection (idempotent)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
