"""Transient channel failures of real SSH servers, replayed by a scripted paramiko server
over a socketpair: a refused channel open, and a channel closed before the server answers
the exec request (dropbear 2022.83 does this when another child of the connection exits at
that moment; seen in the guest as "Channel closed." on a write_file)."""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import paramiko
import pytest

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session import channel
from pytest_dtsvirt.session.ssh import SshSession


@dataclass
class Script:
    """What the scripted server does with the next channels."""

    refuse_opens: int = 0
    close_before_exec: int = 0
    refuse_exec: bool = False
    opens: int = 0
    executed: list[str] = field(default_factory=list)


class _Server(paramiko.ServerInterface):
    def __init__(self, script: Script) -> None:
        self.script = script

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        return paramiko.AUTH_SUCCESSFUL if password == "tester" else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        self.script.opens += 1
        if self.script.refuse_opens > 0:
            self.script.refuse_opens -= 1
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        if self.script.refuse_exec:
            return False  # CHANNEL_FAILURE
        if self.script.close_before_exec > 0:
            self.script.close_before_exec -= 1
            channel.close()  # EOF + CLOSE reach the client before any answer, as dropbear's
            return True
        self.script.executed.append(command.decode())
        threading.Thread(target=_answer, args=(channel, command), daemon=True).start()
        return True


def _answer(channel: paramiko.Channel, command: bytes) -> None:
    """Echo the command back once the client sent EOF (it does so only after it saw the
    exec succeed), then exit 0."""
    while not channel.eof_received and not channel.closed:
        channel.status_event.wait(0.01)
        if channel.recv_ready():
            channel.recv(65536)
    channel.sendall_stderr(b"4242\n")  # the run wrapper's PID line
    channel.sendall(command)
    channel.send_exit_status(0)
    channel.close()


@pytest.fixture
def scripted() -> Iterator[tuple[Script, socket.socket]]:
    script = Script()
    server_sock, client_sock = socket.socketpair()
    transport = paramiko.Transport(server_sock)
    transport.add_server_key(_host_key())
    transport.start_server(event=threading.Event(), server=_Server(script))  # not blocking
    try:
        yield script, client_sock
    finally:
        transport.close()
        server_sock.close()


@functools.cache
def _host_key() -> paramiko.PKey:
    """The scripted server's host key, made in memory once (nothing on disk)."""
    return paramiko.ECDSAKey.generate()


def _session(sock: socket.socket) -> SshSession:
    return SshSession.for_guest(name="vm0", sock=sock, user="root", password="tester")


def test_a_channel_closed_before_the_exec_answer_is_retried_once_and_runs_once(
        scripted: tuple[Script, socket.socket], caplog: pytest.LogCaptureFixture) -> None:
    script, sock = scripted
    script.close_before_exec = 1
    caplog.set_level(logging.INFO, "pytest_dtsvirt.session.channel")
    with _session(sock) as session:
        result = session.run(["echo", "a b"])
    assert result.ok and result.stderr == ""  # the PID line is the wrapper's, not output
    assert result.stdout == ("""sh -c 'IFS= read -r _ || exit 0; echo "$$" >&2; """
                             """exec "$@"' sh echo 'a b'""")
    assert len(script.executed) == 1 and script.opens == 2
    assert "closed a new channel before starting the command" in caplog.text


def test_many_channels_closed_in_a_row_are_retried(
        scripted: tuple[Script, socket.socket]) -> None:
    """A busy dropbear closes most new channels (each time another command ends): they are
    retried for a while, not given up after a few."""
    script, sock = scripted
    script.close_before_exec = 8
    with _session(sock) as session:
        assert session.run(["true"]).ok
    assert script.opens == 9 and len(script.executed) == 1


@pytest.mark.parametrize(("failure", "on", "off"), [("close_before_exec", 10**6, 0),
                                                     ("refuse_exec", True, False)])
def test_a_server_that_keeps_closing_or_refusing_channels_gets_a_clear_error(
        failure: str, on: int | bool, off: int | bool, scripted: tuple[Script, socket.socket],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels closed before the exec answer, or exec requests refused (paramiko words a
    refusal like an early close), are retried for the window, then named."""
    script, sock = scripted
    monkeypatch.setattr(channel, "EARLY_CLOSE_WINDOW_S", 0.5)
    setattr(script, failure, on)
    with _session(sock) as session:
        start = time.monotonic()
        with pytest.raises(SessionError, match=r"closed \(or refused\) \d+ new channels in a "
                                               "row, for 0.5 s, before starting the command"):
            session.run(["true"])
        assert 0.5 <= time.monotonic() - start < 5.0
        assert script.executed == [] and script.opens >= 2  # retried, never run
        setattr(script, failure, off)
        assert session.run(["true"]).ok  # the connection itself is fine


def test_a_refused_channel_open_is_retried_then_named(
        scripted: tuple[Script, socket.socket]) -> None:
    script, sock = scripted
    script.refuse_opens = 1
    with _session(sock) as session:
        assert session.run(["true"]).ok
        assert script.opens == 2 and len(script.executed) == 1
        script.refuse_opens = 3
        with pytest.raises(SessionError, match="refused another session channel"):
            session.run(["true"])
        assert len(script.executed) == 1
