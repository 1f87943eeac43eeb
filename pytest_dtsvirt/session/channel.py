"""Start a command, a shell or a subsystem on a new SSH session channel.

Two transient failures of real servers are retried on a new channel (3 attempts):

* a refused channel open (``ChannelException``);
* a channel the server closes right after opening it, before it answers the request.
  Dropbear 2022.83 (Debian 12's, the test guest's) does this whenever a child process of the
  same connection exits between the channel open and the request: its close check takes the
  fresh channel, which has no process yet, for a finished one and sends EOF and CLOSE. It
  then still starts the requested command, unconfirmed, and exits (dropping the connection)
  if that command prints before the client's CLOSE arrives. :class:`SshSession` commands
  therefore wait for a go line that is sent only after the confirmation, so such a command
  never runs (``ssh.py``, ``_RUN_WRAPPER``).

paramiko words a refused request (CHANNEL_FAILURE) like the early close, so a refused
request is retried too before its error is raised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import paramiko

from pytest_dtsvirt.errors import SessionError

log = logging.getLogger(__name__)

#: attempts per channel (one try plus two retries)
ATTEMPTS = 3


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

    ``name`` names the host in log lines and errors. Raises paramiko's exception of the last
    attempt, or :class:`SessionError` when the server refuses channels for good.
    """
    for attempt in range(1, ATTEMPTS + 1):
        try:
            chan = transport.open_session(timeout=timeout)
        except paramiko.ChannelException as exc:
            if attempt == ATTEMPTS or not transport.is_active():
                if "prohibited" in str(exc).lower():
                    raise SessionError(
                        f"{name}: the SSH server refused another session channel ({exc}); "
                        "its MaxSessions limit may be too low") from exc
                raise
            log.info("%s: channel open refused (%s); retrying", name, exc)
            time.sleep(0.1 * attempt)
            continue
        except paramiko.SSHException as exc:
            # closed right after the open confirmation: paramiko finds no channel to return
            if not _closed_early(transport, exc, attempt, name):
                raise
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
            # paramiko reports a refused request (CHANNEL_FAILURE) in the same words: it is
            # retried too, harmlessly (nothing ran)
            if not _closed_early(transport, exc, attempt, name):
                raise
    raise AssertionError("unreachable")


def _closed_early(transport: paramiko.Transport, exc: paramiko.SSHException, attempt: int,
                  name: str) -> bool:
    """True (after a log line) when ``exc`` says the server closed a new channel while the
    connection lives on, and attempts are left; SessionError when none are left."""
    if not transport.is_active() or str(exc) not in _EARLY_CLOSE:
        return False
    if attempt == ATTEMPTS:
        raise SessionError(f"{name}: the SSH server closed {ATTEMPTS} new channels in a row "
                           "before starting the command (or refused to start it)") from None
    log.info("%s: the SSH server closed a new channel before starting the command; retrying "
             "on a new channel", name)
    return True


# paramiko's words for a channel closed before its open returned / before a request's answer
_EARLY_CLOSE = ("Unable to open channel.", "Channel is not open", "Channel closed.")
