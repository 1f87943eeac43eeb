"""SshSession against a real OpenSSH server on a loopback address (Session contract, host
keys, authentication, lost connections, jump through another session)."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from support.contract import (  # noqa: F401  (collected here)
    roundtrip,
    test_files,
    test_kill_group,
    test_open_tcp,
    test_open_unix,
    test_run_check_raises_with_stderr,
    test_run_passes_argv_verbatim,
    test_run_status_stderr_input_env,
    test_run_timeout_kills_the_command,
    test_shell_prompt_pid_and_timeout,
    test_spawn_detached_with_verbatim_argv,
)
from support.sshd import SshdHandle, start_sshd

from pytest_dtsvirt.errors import GuestAuthError, SessionError
from pytest_dtsvirt.session.ssh import SshSession


def connect(h: SshdHandle, **kw: object) -> SshSession:
    args: dict[str, object] = {"key_filename": h.key_path, "known_hosts": h.known_hosts}
    args.update(kw)
    return SshSession(h.host, h.port, h.user, **args)  # type: ignore[arg-type]


@pytest.fixture
def session(sshd: SshdHandle) -> Iterator[SshSession]:
    s = connect(sshd)
    yield s
    s.close()


def test_name_and_close_is_idempotent(sshd: SshdHandle) -> None:
    s = connect(sshd)
    assert s.name == f"{sshd.user}@{sshd.host}:{sshd.port}"
    shell = s.shell()
    pid = shell.pid
    s.close()
    s.close()
    with pytest.raises(SessionError, match="closed"):
        s.run(["true"])
    with connect(sshd) as other:
        assert not other.pid_alive(pid)  # the pty shell got its hangup


def test_close_ends_relays(session: SshSession, tmp_path: Path) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        sock = session.open_tcp("127.0.0.1", server.getsockname()[1])
        conn, _ = server.accept()
        session.close()
        conn.settimeout(5)
        assert conn.recv(10) == b""  # the far end sees the channel close
        conn.close()
    assert sock.fileno() == -1


def test_host_key_mismatch(sshd: SshdHandle, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    kind, blob = Path(f"{other}.pub").read_text().split()[:2]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[{sshd.host}]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(SessionError, match=r"host key mismatch.*known_hosts"):
        connect(sshd, known_hosts=str(wrong))


def test_unknown_host_key_and_no_check(sshd: SshdHandle, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(SessionError, match="host key not found"):
        connect(sshd, known_hosts=str(empty))
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            with connect(sshd, known_hosts=str(empty), host_key_check=False) as s:
                assert s.run(["echo", "ok"]).stdout == "ok\n"
    warnings = [r for r in caplog.records if "host key not checked" in r.getMessage()]
    assert len(warnings) == 1


def test_authentication_failure_never_shows_the_password(
        sshd: SshdHandle, caplog: pytest.LogCaptureFixture) -> None:
    secret = "s3cr3t-Pa55word-dtsvirt"
    with caplog.at_level(logging.DEBUG), \
            pytest.raises(SessionError, match="authentication failed") as info:
        SshSession(sshd.host, sshd.port, sshd.user, password=secret,
                   known_hosts=sshd.known_hosts)
    assert secret not in str(info.value)
    assert secret not in caplog.text


def test_connection_refused(sshd: SshdHandle) -> None:
    with socket.socket() as s:
        s.bind((sshd.host, 0))
        port = s.getsockname()[1]
    with pytest.raises(SessionError, match="cannot connect"):
        SshSession(sshd.host, port, sshd.user, key_filename=sshd.key_path,
                   known_hosts=sshd.known_hosts, timeout=5)


def test_jump_through_another_session(session: SshSession, sshd: SshdHandle) -> None:
    sock = session.open_tcp(sshd.host, sshd.port)
    with SshSession(sshd.host, sshd.port, sshd.user, key_filename=sshd.key_path,
                    known_hosts=sshd.known_hosts, sock=sock) as inner:
        assert inner.run(["echo", "through", "the jump"]).stdout == "through the jump\n"
        # the inner session's own streams ride on the outer channel too
        with socket.socket() as server:
            server.bind(("127.0.0.1", 0))
            server.listen(1)
            with inner.open_tcp("127.0.0.1", server.getsockname()[1]) as s2:
                conn, _ = server.accept()
                with conn:
                    s2.sendall(b"ping")
                    conn.settimeout(5)
                    assert conn.recv(4) == b"ping"
        shell = inner.shell()
        shell.send("echo inner-shell\n")
        assert "inner-shell" in shell.expect(r"\[DTSVIRT\]# ", 10)


@pytest.fixture
def own_sshd(tmp_path: Path) -> Iterator[SshdHandle]:
    handle = start_sshd(tmp_path)
    yield handle
    handle.stop()


def test_connection_drop_is_a_clear_error(own_sshd: SshdHandle, tmp_path: Path) -> None:
    s = connect(own_sshd)
    try:
        shell = s.shell()
        tunnel = s.open_tcp(own_sshd.host, own_sshd.port)
        assert s.run(["true"]).ok
        own_sshd.stop()  # listener and per-connection children, by PID
        with pytest.raises(SessionError, match=f"connection to DUT {s.name} lost"):
            shell.send("echo hello\n")
            shell.expect("hello", 10)
        with pytest.raises(SessionError, match=f"connection to DUT {s.name} lost"):
            s.run(["true"])
        with pytest.raises(SessionError, match=f"connection to DUT {s.name} lost"):
            s.open_tcp("127.0.0.1", 22)
        with pytest.raises(SessionError, match=f"connection to DUT {s.name} lost"):
            s.read_file("/etc/hostname")
        tunnel.settimeout(5)
        received = b""
        while chunk := tunnel.recv(100):  # what was relayed before the drop, then EOF
            received += chunk
        assert received.startswith(b"SSH-2.0-") or received == b""
    finally:
        s.close()


def test_dropped_connection_reads_as_lost_while_paramiko_is_still_closing_it(
        own_sshd: SshdHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    """paramiko closes a dropped connection's channels (which marks them as having an exit
    status) a moment before it marks the transport inactive. A shell that reads its EOF in
    that moment must still report the lost connection, not an exited shell. The moment is
    widened here so the check does not depend on thread scheduling."""
    unlink = paramiko.Channel._unlink

    def slow_unlink(chan: paramiko.Channel) -> None:
        unlink(chan)
        time.sleep(0.5)

    monkeypatch.setattr(paramiko.Channel, "_unlink", slow_unlink)
    s = connect(own_sshd)
    try:
        shell = s.shell()
        assert own_sshd.kill_connections()
        with pytest.raises(SessionError, match=f"connection to DUT {s.name} lost"):
            shell.expect("never printed", 10)
    finally:
        s.close()


def test_shell_that_exits_is_named_as_such(session: SshSession) -> None:
    shell = session.shell()
    pid = shell.pid
    shell.send("exit 3\n")
    with pytest.raises(SessionError, match=rf"the shell \(PID {pid}\) exited"):
        shell.expect("never printed", 10)
    assert session.run(["true"]).ok


def test_open_unix_without_socat_on_the_host(tmp_path: Path) -> None:
    """A host whose PATH has no socat: a clear error, not a hang or a broken stream."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "sh").symlink_to("/bin/sh")
    handle = start_sshd(tmp_path, extra_config=[f"SetEnv PATH={bindir}"])
    try:
        with connect(handle) as s:
            assert str(bindir) in s.run(["sh", "-c", 'echo "$PATH"']).stdout
            assert not s.run(["sh", "-c", "command -v socat"]).ok
            with pytest.raises(SessionError, match="socat is not installed on that host"):
                s.open_unix(str(tmp_path / "any.sock"))
    finally:
        handle.stop()


def test_unix_socket_name_with_socat_syntax_is_refused(session: SshSession) -> None:
    with pytest.raises(SessionError, match="socat"):
        session.open_unix("/tmp/a,fork")


def test_unix_socket_in_a_dir_with_socat_syntax(session: SshSession, tmp_path: Path) -> None:
    directory = tmp_path / 'a b,c:d!e"f'
    directory.mkdir()
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(directory / "s.sock"))
        server.listen()
        client = session.open_unix(str(directory / "s.sock"), timeout=10)
        conn, _ = server.accept()
        with client, conn:
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"


def test_file_operations_from_several_threads_at_once(session: SshSession,
                                                     tmp_path: Path) -> None:
    """VM boot threads share their DUT's session: concurrent SFTP operations must neither
    lose a response (paramiko's client drops other threads' replies) nor stall."""
    failures: list[str] = []

    def worker(n: int) -> None:
        for i in range(15):
            data = f"{n}-{i}".encode() * 5000
            path = tmp_path / f"t{n}"
            try:
                if i % 2:
                    session.write_file(str(path), data)
                else:
                    path.write_bytes(data)
                if session.read_file(str(path)) != data:
                    failures.append(f"{n}-{i}: wrong content")
            except SessionError as exc:
                failures.append(f"{n}-{i}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(50)
    assert not any(t.is_alive() for t in threads), "SFTP stalled"
    assert failures == []
    assert time.monotonic() - start < 30


def test_cat_fallback_without_sftp(session: SshSession, tmp_path: Path) -> None:
    """Hosts without an SFTP server (dropbear guests) use cat over exec channels."""
    session._sftp_missing = True  # as if the subsystem request had failed
    data = bytes(range(256)) * 100
    path = tmp_path / "f"
    session.write_file(str(path), data, 0o604)
    assert path.read_bytes() == data and path.stat().st_mode & 0o777 == 0o604
    assert session.read_file(str(path)) == data
    session.get(str(path), str(tmp_path / "g"))
    assert (tmp_path / "g").read_bytes() == data
    with pytest.raises(SessionError, match="nonexistent"):
        session.read_file(str(tmp_path / "nonexistent"))


def test_relay_survives_large_two_way_traffic(session: SshSession) -> None:
    from support.contract import echo_server

    with echo_server(socket.AF_INET, ("127.0.0.1", 0)) as server:
        socks = [session.open_tcp("127.0.0.1", server.address[1]) for _ in range(4)]
        for i, sock in enumerate(socks):
            with sock:
                payload = bytes([i]) * 200_000
                assert roundtrip(sock, payload) == payload


def test_for_guest_through_a_tunnel(session: SshSession, sshd: SshdHandle) -> None:
    """How kvm.py reaches a guest: the DUT's open_tcp to the host forward, no host key."""
    sock = session.open_tcp(sshd.host, sshd.port)
    with SshSession.for_guest(name="vm0@dut", sock=sock, user=sshd.user,
                              key_filename=sshd.key_path) as guest:
        assert guest.name == "vm0@dut"
        assert guest.run(["echo", "guest"]).stdout == "guest\n"
    sock = session.open_tcp(sshd.host, sshd.port)
    with pytest.raises(GuestAuthError, match="vm0@dut: authentication failed"):
        SshSession.for_guest(name="vm0@dut", sock=sock, user=sshd.user, password="wrong")
    assert sock.fileno() == -1


def test_finished_stream_stays_readable_after_later_opens(session: SshSession) -> None:
    """Opening more streams releases finished relays but never closes a caller's socket
    with unread data in it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        first = session.open_tcp("127.0.0.1", server.getsockname()[1])
        conn, _ = server.accept()
        conn.sendall(b"last words")
        conn.close()  # the far end is gone: the relay finishes
        time.sleep(0.5)
        second = session.open_tcp("127.0.0.1", server.getsockname()[1])
        server.accept()[0].close()
        first.settimeout(5)
        received = b""
        while chunk := first.recv(100):
            received += chunk
        assert received == b"last words"
        first.close()
        second.close()


def test_nagle_is_off_before_the_handshake(sshd: SshdHandle,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The handshake sends some messages back to back (NEWKEYS, SERVICE_REQUEST): with
    Nagle on, each such pair waited for a delayed ACK (~40 ms per login)."""
    seen: list[int] = []
    real_connect = paramiko.SSHClient.connect

    def spy(self: paramiko.SSHClient, *args: object, **kw: object) -> None:
        sock = kw["sock"]
        assert isinstance(sock, socket.socket)
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        real_connect(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(paramiko.SSHClient, "connect", spy)
    with connect(sshd) as s:  # paramiko no longer makes the socket: we do
        assert s.run(["echo", "ok"]).stdout == "ok\n"
    guest_sock = socket.create_connection((sshd.host, sshd.port))
    with SshSession.for_guest(name="guest", sock=guest_sock, user=sshd.user,
                              key_filename=sshd.key_path) as g:  # a guest's forwarded port
        assert g.run(["echo", "ok"]).stdout == "ok\n"
    assert seen and all(seen), seen


def test_a_refused_connection_leaves_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[socket.socket] = []
    real = socket.create_connection

    def spy(*args: object, **kw: object) -> socket.socket:
        made.append(real(*args, **kw))  # type: ignore[arg-type]
        return made[-1]

    with socket.socket() as listener:  # a port that accepts, then closes at once
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        closer = threading.Thread(target=lambda: listener.accept()[0].close(), daemon=True)
        closer.start()
        monkeypatch.setattr(socket, "create_connection", spy)
        with pytest.raises(SessionError, match=r"127\.0\.0\.1"):
            SshSession("127.0.0.1", port, "root", password="x", host_key_check=False,
                       timeout=5)
        closer.join(5)
    assert len(made) == 1 and made[0].fileno() == -1
