"""Start a command, a shell or a subsystem on a new SSH session channel.

Transient failures of real servers are retried on a new channel:

* a refused channel open (``ChannelException``): 3 attempts;
* a channel the server closes right after opening it, before it answers the request: retried
  for up to :data:`EARLY_CLOSE_WINDOW_S` seconds. Dropbear 2022.83 (Debian 12's, the test
  guest's) does this whenever a child process of the same connection exits between the
  channel open and the request: its close check takes the fresh channel, which has no
  process yet, for a finished one and sends EOF and CLOSE. On a busy session (commands
  ending every few milliseconds) most opens can hit this in a row. Dropbear then still starts
  the requested command, unconfirmed, and exits (dropping the connection) if that command
  prints before the client's CLOSE arrives. :class:`SshSession` commands, shells and socket
  relays therefore wait for a go line that is sent only after the confirmation, so such a
  command never runs (``ssh.py``, ``_RUN_WRAPPER``), which makes the retries harmless.

paramiko words a refused request (CHANNEL_FAILURE) and an early close alike ("Channel
closed."), and the server's EOF cannot tell them apart reliably (after a refusal the server
answers the client's close with EOF too), so a refused request is retried the same way: a
server that refuses for good gets its clear error after the window.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

import paramiko

from pytest_dtsvirt.errors import SessionError

log = logging.getLogger(__name__)

#: attempts for a refused channel open (one try plus two retries)
ATTEMPTS = 3
#: seconds during which channels the server closes (or refuses) before answering are retried
EARLY_CLOSE_WINDOW_S = 10.0


@dataclass(frozen=True)
class Pty:
    """A pseudo-terminal request: terminal type and size."""

    term: str = "dumb"
    width: int = 500
    height: int = 50


def start_channel(transport: paramiko.Transport, command: str | None, *, name: str,
                  timeout: float, pty: Pty | None = None,
                  subsystem: str | None = None) -> paramiko.Channel:
    """A session channel running ``command`` (a login shell when None; the ``subsystem``,
    e.g. ``sftp``, when given), with a pty if asked.

    ``name`` names the host in log lines and errors. Raises paramiko's exception when the
    connection fails, or :class:`SessionError` when the server refuses channels for good or
    keeps closing (or refusing) them before starting the command.
    """
    retry = _Retry(transport, name)
    while True:
        try:
            chan = transport.open_session(timeout=timeout)
        except paramiko.ChannelException as exc:
            retry.refused_open(exc)
            continue
        except paramiko.SSHException as exc:
            # closed right after the open confirmation: paramiko finds no channel to return
            retry.closed_early(exc)
            continue
        try:
            if pty is not None:
                chan.get_pty(term=pty.term, width=pty.width, height=pty.height)
            if subsystem is not None:
                chan.invoke_subsystem(subsystem)
            elif command is None:
                chan.invoke_shell()
            else:
                chan.exec_command(command)
            return chan
        except paramiko.SSHException as exc:
            chan.close()
            retry.closed_early(exc)


class _Retry:
    """The retry budget of one :func:`start_channel` call: each method returns after a
    pause when another attempt is due, and raises otherwise."""

    def __init__(self, transport: paramiko.Transport, name: str) -> None:
        self.transport, self.name = transport, name
        self.refusals = 0
        self.early_closes = 0
        self.window_ends = time.monotonic() + EARLY_CLOSE_WINDOW_S

    def refused_open(self, exc: paramiko.ChannelException) -> None:
        self.refusals += 1
        if self.refusals >= ATTEMPTS or not self.transport.is_active():
            if "prohibited" in str(exc).lower():
                raise SessionError(
                    f"{self.name}: the SSH server refused another session channel ({exc}); "
                    "its MaxSessions limit may be too low") from exc
            raise exc
        log.info("%s: channel open refused (%s); retrying", self.name, exc)
        time.sleep(0.1 * self.refusals)

    def closed_early(self, exc: paramiko.SSHException) -> None:
        """After a channel the server closed (or refused) before starting the command."""
        if not self.transport.is_active() or str(exc) not in _EARLY_CLOSE:
            raise exc
        self.early_closes += 1
        if time.monotonic() >= self.window_ends:
            raise SessionError(
                f"{self.name}: the SSH server closed (or refused) {self.early_closes} new "
                f"channels in a row, for {EARLY_CLOSE_WINDOW_S:g} s, before starting the "
                "command") from None
        log.info("%s: the SSH server closed a new channel before starting the command; "
                 "retrying on a new channel", self.name)
        # short, jittered pauses: the closes follow other commands' exits, which come in bursts
        time.sleep(random.uniform(0.5, 1.5) * min(0.005 * 2 ** self.early_closes, 0.2))


# paramiko's words for a channel closed before its open returned / before a request's answer
_EARLY_CLOSE = ("Unable to open channel.", "Channel is not open", "Channel closed.")
