"""The Session contract, as test functions run against every implementation.

A test module defines a ``session`` fixture (a connected Session on this machine, directly
or over SSH) and imports these functions; pytest collects them there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_dtsvirt.errors import CommandTimeout, SessionError
from pytest_dtsvirt.session.base import PROMPT_RE, Session


class EchoServer:
    """A thread that echoes every connection back (TCP on 127.0.0.1 or a unix socket)."""

    def __init__(self, family: int, address: str | tuple[str, int]) -> None:
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(address)
        self.sock.listen(8)
        self.address = self.sock.getsockname()
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)
        for t in self._threads:
            t.join(5)


@contextlib.contextmanager
def echo_server(family: int, address: str | tuple[str, int]) -> Iterator[EchoServer]:
    server = EchoServer(family, address)
    try:
        yield server
    finally:
        server.close()


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    """Send payload, half-close, read until EOF."""
    sock.settimeout(10)
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def wait_gone(session: Session, pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not session.pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def wait_file(path: Path, timeout: float = 5.0) -> str:
    """The content of ``path`` once it holds a complete line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = path.read_text()
            if text.endswith("\n"):
                return text
        time.sleep(0.02)
    raise AssertionError(f"{path} not written in {timeout} s")


# -- run ------------------------------------------------------------------------------------

def test_run_passes_argv_verbatim(session: Session, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    odd = ["a b", "c'd", '"e"', f"$(touch {marker})", "; echo no", "*", "$HOME", ""]
    result = session.run(["printf", "%s|", *odd])
    assert result.ok, result
    assert result.stdout == "|".join(odd) + "|"
    assert not marker.exists()


def test_run_status_stderr_input_env(session: Session) -> None:
    result = session.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok
    assert session.run(["cat"], input=b"some\x00bytes\n").stdout == "some\x00bytes\n"
    env = session.run(["sh", "-c", 'printf %s "$DTSVIRT_X"'], env={"DTSVIRT_X": "v a;l"})
    assert env.stdout == "v a;l"


def test_run_check_raises_with_stderr(session: Session) -> None:
    with pytest.raises(SessionError, match=r"status 4.*boom"):
        session.run(["sh", "-c", "echo boom >&2; exit 4"], check=True)


def test_run_timeout_kills_the_command(session: Session, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    with pytest.raises(SessionError, match="timed out"):
        # the grandchild (sleep) must die too: the whole process group is killed
        session.run(["sh", "-c", 'sleep 100 & echo $! > "$1"; wait', "sh", str(pidfile)],
                    timeout=1.0)
    assert time.monotonic() - start < 5
    pid = int(pidfile.read_text())
    assert wait_gone(session, pid)


# -- processes ------------------------------------------------------------------------------

def test_spawn_detached_with_verbatim_argv(session: Session, tmp_path: Path) -> None:
    out, err = tmp_path / "out file", tmp_path / "err;file"
    marker = tmp_path / "injected"
    pid = session.spawn(
        ["sh", "-c", 'printf "%s|" "$@"; pwd; echo e >&2; exec sleep 100', "sh",
         "a b", f"$(touch {marker})", "`id`"],
        stdout_path=str(out), stderr_path=str(err), cwd=str(tmp_path))
    try:
        assert session.pid_alive(pid)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not out.read_text().endswith("\n"):
            time.sleep(0.02)
        assert out.read_text() == f"a b|$(touch {marker})|`id`|{tmp_path}\n"
        assert err.read_text() == "e\n"
        assert not marker.exists()
        fields = session.read_file(f"/proc/{pid}/stat").decode().rpartition(") ")[2].split()
        assert int(fields[2]) == pid and int(fields[3]) == pid  # own group and session
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    finally:
        session.kill(pid, signal.SIGKILL)
    assert wait_gone(session, pid)
    assert not session.pid_alive(pid)
    reaped = int(session.run(["sh", "-c", "echo $$"]).stdout)  # exited and reaped already
    assert not session.pid_alive(reaped)
    assert session.kill(reaped, signal.SIGTERM) is False


def test_kill_group(session: Session, tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    pid = session.spawn(["sh", "-c", 'sleep 100 & echo $! > "$1"; wait', "sh", str(pidfile)],
                        stdout_path="/dev/null", stderr_path="/dev/null")
    child = int(wait_file(pidfile))
    assert session.pid_alive(child)
    assert session.kill(pid, signal.SIGTERM, group=True)
    assert wait_gone(session, pid) and wait_gone(session, child)


# -- streams --------------------------------------------------------------------------------

def test_open_tcp(session: Session) -> None:
    with echo_server(socket.AF_INET, ("127.0.0.1", 0)) as server:
        with session.open_tcp("127.0.0.1", server.address[1]) as sock:
            assert isinstance(sock, socket.socket) and sock.fileno() >= 0
            payload = os.urandom(300_000)
            assert roundtrip(sock, payload) == payload
        port = server.address[1]
    with pytest.raises(SessionError, match=f"127.0.0.1:{port}"):
        session.open_tcp("127.0.0.1", port)


def test_open_unix(session: Session, tmp_path: Path) -> None:
    path = str(tmp_path / "echo.sock")
    with echo_server(socket.AF_UNIX, path), session.open_unix(path) as sock:
        assert sock.family == socket.AF_UNIX
        assert roundtrip(sock, b"hello unix\n" * 1000) == b"hello unix\n" * 1000
    with pytest.raises(SessionError, match=r"echo\.sock"):
        session.open_unix(path)  # the file is there but nobody listens
    with pytest.raises(SessionError, match=r"missing\.sock"):
        session.open_unix(str(tmp_path / "missing.sock"))


# -- files ----------------------------------------------------------------------------------

def test_files(session: Session, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    path = tmp_path / "written"
    session.write_file(str(path), data, 0o640)
    assert path.read_bytes() == data
    assert path.stat().st_mode & 0o777 == 0o640
    assert session.read_file(str(path)) == data
    src, dst, back = tmp_path / "src", tmp_path / "dst", tmp_path / "back"
    src.write_bytes(data[::-1])
    session.put(str(src), str(dst))
    session.get(str(dst), str(back))
    assert back.read_bytes() == data[::-1]
    with pytest.raises(SessionError, match="nonexistent"):
        session.read_file(str(tmp_path / "nonexistent"))


# -- shells ---------------------------------------------------------------------------------

def test_shell_prompt_pid_and_timeout(session: Session) -> None:
    shell = session.shell()
    try:
        assert session.pid_alive(shell.pid)
        shell.send("echo one; echo two\n")
        assert shell.expect(PROMPT_RE, 10).replace("\r\n", "\n") == "one\ntwo\n"
        shell.send("echo partial-output; sleep 30\n")
        with pytest.raises(CommandTimeout) as info:
            shell.expect("never-printed", 0.5)
        assert "partial-output" in info.value.output
        shell.send("\x03")  # ctrl-c ends the sleep
        shell.sync()
        shell.send("echo $((1+2))\n")
        assert shell.expect(PROMPT_RE, 10).strip() == "3"
    finally:
        shell.close()
    shell.close()  # idempotent
