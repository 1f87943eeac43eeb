"""Relay a paramiko channel to a local socketpair.

Callers of :meth:`Session.open_tcp` / :meth:`Session.open_unix` always get a real
:class:`socket.socket` (asyncio and ``qemu.qmp`` need one with a real file descriptor). Over
SSH the bytes travel in a paramiko channel; a :class:`Relay` owns one end of a
``socketpair`` and a thread that copies bytes both ways between it and the channel,
passing half-closes (EOF) through in each direction.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from typing import Protocol

log = logging.getLogger(__name__)

_CHUNK = 65536


class ChannelLike(Protocol):
    """What a relay needs from a paramiko ``Channel``."""

    def fileno(self) -> int: ...
    def recv(self, nbytes: int) -> bytes: ...
    def sendall(self, data: bytes) -> None: ...
    def shutdown_write(self) -> None: ...
    def close(self) -> None: ...


class Relay:
    """Copies bytes between ``channel`` and a local socket; :attr:`socket` is the caller's
    end. The relay ends (and closes the channel) when both directions reached EOF, when the
    caller closes its socket and the channel is drained, or on :meth:`close`."""

    def __init__(self, channel: ChannelLike, name: str) -> None:
        self._channel = channel
        self.name = name
        self.socket, self._inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._wake_r, self._wake_w = socket.socketpair()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._pump, name=f"relay {name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """True while the relay thread runs."""
        return self._thread.is_alive()

    def _pump(self) -> None:
        sel = selectors.DefaultSelector()
        try:
            sel.register(self._channel.fileno(), selectors.EVENT_READ, "chan")
            sel.register(self._inner, selectors.EVENT_READ, "sock")
            sel.register(self._wake_r, selectors.EVENT_READ, "wake")
            chan_eof = sock_eof = False
            while not (chan_eof and sock_eof) and not self._closed.is_set():
                for key, _ in sel.select():
                    if key.data == "wake":
                        return
                    if key.data == "chan":
                        data = self._channel.recv(_CHUNK)
                        if data:
                            self._inner.sendall(data)
                        else:
                            chan_eof = True
                            sel.unregister(key.fileobj)
                            with contextlib.suppress(OSError):
                                self._inner.shutdown(socket.SHUT_WR)
                    else:
                        try:
                            data = self._inner.recv(_CHUNK)
                        except OSError:
                            data = b""
                        if data:
                            self._channel.sendall(data)
                        else:
                            sock_eof = True
                            sel.unregister(key.fileobj)
                            with contextlib.suppress(Exception):
                                self._channel.shutdown_write()
        except Exception as exc:  # the transport died: the caller sees EOF on its socket
            log.debug("relay %s ended: %s", self.name, exc)
        finally:
            sel.close()
            with contextlib.suppress(Exception):
                self._channel.close()
            with contextlib.suppress(OSError):
                self._inner.close()

    def close(self, close_socket: bool = True) -> None:
        """Stop the relay, close the channel and the relay's own sockets; also the caller's
        socket unless ``close_socket`` is False (a finished relay is released that way, so
        the caller can still read what was relayed before EOF). Idempotent."""
        if not self._closed.is_set():
            self._closed.set()
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
            self._thread.join(timeout=5.0)
            for sock in (self._wake_r, self._wake_w):
                with contextlib.suppress(OSError):
                    sock.close()
            with contextlib.suppress(Exception):
                self._channel.close()
        if close_socket:
            with contextlib.suppress(OSError):
                self.socket.close()
