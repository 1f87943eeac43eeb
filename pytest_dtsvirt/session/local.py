"""The local host as a :class:`Session`: subprocess, sockets, files, pexpect shells."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence

import pexpect

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import (
    BufferedShell,
    CommandResult,
    PipedProcess,
    ProcInfo,
    Session,
    Shell,
    parse_proc_stat,
    raise_on_failure,
)
from pytest_dtsvirt.unixsock import connect_unix


class LocalShell(BufferedShell):
    """``bash --norc --noprofile --noediting`` on a pty (spawned by pexpect)."""

    def __init__(self, timeout: float = 10.0, init: str = "") -> None:
        super().__init__("local")
        env = dict(os.environ, TERM="dumb", LC_ALL="C")
        try:
            self._child = pexpect.spawn(
                "bash", ["--norc", "--noprofile", "--noediting"], env=env, echo=False,
                encoding="utf-8", codec_errors="replace", dimensions=(50, 500),
            )
        except pexpect.ExceptionPexpect as exc:
            raise SessionError(f"local: cannot start bash: {exc}")
        try:
            self.sync(timeout, init)
        except Exception:
            self.close()
            raise

    def _recv(self, wait: float) -> str | None:
        try:
            return str(self._child.read_nonblocking(65536, timeout=wait))
        except pexpect.TIMEOUT:
            return ""
        except pexpect.EOF:
            return None

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self._child.child_fd, data):]
        except OSError as exc:
            raise SessionError(f"local: cannot write to the shell: {exc}")

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self._child.close(force=True)


class LocalPiped(PipedProcess):
    """A local child in its own session (a Ctrl-C in the terminal must not reach it)."""

    def __init__(self, argv: Sequence[str]) -> None:
        try:
            self._proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise SessionError(f"local: cannot start {list(argv)!r}: {exc}") from None

    def lines(self) -> Iterator[str]:
        assert self._proc.stdout is not None
        with self._proc.stdout:
            for raw in self._proc.stdout:
                yield raw.decode(errors="replace").rstrip("\n")

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.write(data)
            self._proc.stdin.flush()

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()

    def exit_status(self) -> int | None:
        return self._proc.wait()


class LocalSession(Session):
    """Commands, processes, streams and files on the machine running the tests."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self._shells: list[LocalShell] = []

    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: bytes | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        full_env = dict(os.environ, **env) if env else None
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                start_new_session=True,
            )
        except OSError as exc:
            raise SessionError(f"{self.name}: cannot run {argv!r}: {exc}")
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            # our own process group (start_new_session): kill it by PID, with its children
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SessionError(f"{self.name}: {argv!r} timed out after {timeout} s")
        result = CommandResult(tuple(argv), proc.returncode,
                               out.decode(errors="replace"), err.decode(errors="replace"))
        return raise_on_failure(self.name, result) if check else result

    def open_unix(self, path: str, timeout: float = 10.0) -> socket.socket:
        sock = connect_unix(path, timeout, SessionError, what=f"{self.name}: unix socket")
        sock.settimeout(None)
        return sock

    def open_tcp(self, host: str, port: int, timeout: float = 10.0) -> socket.socket:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise SessionError(f"{self.name}: cannot connect to {host}:{port}: {exc}")
        sock.settimeout(None)
        return sock

    def proc_info(self, pid: int) -> ProcInfo | None:
        """``/proc/<pid>/stat`` read in-process (no ``cat``: teardown asks for every VM)."""
        try:
            text = self.read_file(f"/proc/{int(pid)}/stat").decode(errors="replace")
        except SessionError:
            return None
        return parse_proc_stat(text).get(pid)

    def read_file(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as exc:
            raise SessionError(f"{self.name}: cannot read {path}: {exc}")

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), mode)
                f.write(data)
        except OSError as exc:
            raise SessionError(f"{self.name}: cannot write {path}: {exc}")

    def put(self, local_path: str, remote_path: str) -> None:
        try:
            shutil.copyfile(local_path, remote_path)
        except OSError as exc:
            raise SessionError(f"{self.name}: cannot copy {local_path} to {remote_path}: {exc}")

    def get(self, remote_path: str, local_path: str) -> None:
        try:
            shutil.copyfile(remote_path, local_path)
        except OSError as exc:
            raise SessionError(f"{self.name}: cannot copy {remote_path} to {local_path}: {exc}")

    def start_piped(self, argv: Sequence[str]) -> PipedProcess:
        return LocalPiped([str(a) for a in argv])

    def shell(self, init: str = "") -> Shell:
        shell = LocalShell(init=init)
        self._shells.append(shell)
        return shell

    def close(self) -> None:
        shells, self._shells = self._shells, []
        for shell in shells:
            shell.close()
