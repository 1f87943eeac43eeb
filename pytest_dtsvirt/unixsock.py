"""Connecting to a local unix stream socket with a bounded wait and a clear error.

Used by the local :class:`~pytest_dtsvirt.session.base.Session` (``open_unix``) and by the
``open()`` class methods of the QMP, HMP and guest agent clients; each raises its own error
type.
"""

from __future__ import annotations

import socket

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
