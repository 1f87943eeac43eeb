"""The qemu supervisor: its protocol against a fake session (no qemu, no transport), and
its script with a real local session and a stand-in for qemu."""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.runtime.supervisor import (
    SUPERVISOR_SCRIPT,
    describe_status,
    start_supervised,
)
from pytest_dtsvirt.session.base import PipedProcess, Session
from pytest_dtsvirt.session.local import LocalSession


class FakePiped(PipedProcess):
    def __init__(self, status: int | None) -> None:
        self.out: queue.Queue[str | None] = queue.Queue()
        self.written = b""
        self.stdin_closed = False
        self.status = status

    def lines(self) -> Iterator[str]:
        while (line := self.out.get()) is not None:
            yield line

    def write(self, data: bytes) -> None:
        self.written += data

    def close_stdin(self) -> None:
        self.stdin_closed = True

    def exit_status(self) -> int | None:
        return self.status


class FakeSession(Session):
    """Only start_piped works: that is all the supervisor may use."""

    name = "fake"

    def __init__(self, status: int | None = None) -> None:
        self.started: list[list[str]] = []
        self.piped = FakePiped(status)

    def start_piped(self, argv: Sequence[str]) -> PipedProcess:
        self.started.append(list(argv))
        return self.piped

    def _unused(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the supervisor used more than start_piped")

    run = open_unix = open_tcp = read_file = write_file = put = get = shell = _unused
    close = _unused


def test_start_passes_argv_as_positional_parameters() -> None:
    session = FakeSession()
    proc = start_supervised(session, ["qemu", "-name", "a b;rm -rf /"], "/run/dir")
    assert session.started == [["sh", "-c", SUPERVISOR_SCRIPT, "/run/dir", "qemu", "-name",
                                "a b;rm -rf /"]]
    session.piped.out.put("pid 42")
    assert proc.wait_started(5) == 42
    assert not proc.exited
    session.piped.out.put("exit 137")
    assert proc.wait_exit(5)
    assert proc.exit_status == 137 and not proc.link_lost
    session.piped.out.put(None)


def test_a_pipe_that_ends_without_exit_line_or_status_is_a_lost_link() -> None:
    session = FakeSession(status=None)
    proc = start_supervised(session, ["qemu"], "/run/dir")
    session.piped.out.put("pid 7")
    session.piped.out.put(None)
    assert proc.wait_exit(5)
    assert proc.link_lost and proc.exit_status == -1


def test_a_pipe_that_ends_with_a_status_is_no_lost_link() -> None:
    session = FakeSession(status=2)
    proc = start_supervised(session, ["qemu"], "/run/dir")
    session.piped.out.put(None)
    assert proc.wait_exit(5)
    assert proc.exit_status == 2 and not proc.link_lost
    with pytest.raises(SessionError, match="did not start"):
        proc.wait_started(0.1)


def test_keep_and_release_talk_through_stdin() -> None:
    session = FakeSession()
    proc = start_supervised(session, ["qemu"], "/run/dir")
    proc.keep()
    assert session.piped.written == b"keep\n" and session.piped.stdin_closed
    session.piped.stdin_closed = False
    proc.release()
    assert session.piped.stdin_closed
    session.piped.out.put(None)


def test_no_start_without_pid_line() -> None:
    session = FakeSession()
    proc = start_supervised(session, ["qemu"], "/run/dir")
    with pytest.raises(SessionError, match=r"did not start within 0\.1 s"):
        proc.wait_started(0.1)
    session.piped.out.put(None)


@pytest.mark.parametrize("status, text", [(0, "exit status 0"), (1, "exit status 1"),
                                          (137, "killed by signal 9 (SIGKILL)"),
                                          (143, "killed by signal 15 (SIGTERM)"),
                                          (None, "exit status unknown")])
def test_describe_status(status: int | None, text: str) -> None:
    assert describe_status(status) == text


def test_the_script_ends_its_process_and_run_dir_when_we_let_go() -> None:
    """The real script on a local session with ``sleep`` standing in for qemu."""
    run_dir = tempfile.mkdtemp(prefix="dtsvirt-sup-")
    proc = start_supervised(LocalSession(), ["sleep", "300"], run_dir)
    pid = proc.wait_started(10)
    assert os.path.exists(f"/proc/{pid}")
    proc.release()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and os.path.exists(run_dir):
        time.sleep(0.05)
    assert not os.path.exists(run_dir)
    assert not LocalSession().pid_alive(pid)


def test_the_script_reports_the_exit_status() -> None:
    run_dir = tempfile.mkdtemp(prefix="dtsvirt-sup-")
    try:
        proc = start_supervised(LocalSession(), ["sh", "-c", "exit 3"], run_dir)
        assert proc.wait_exit(10)
        assert proc.exit_status == 3 and not proc.link_lost
        with open(f"{run_dir}/exit-status") as f:
            assert f.read().strip() == "3"
    finally:
        proc.release()
        for name in os.listdir(run_dir):
            os.unlink(os.path.join(run_dir, name))
        os.rmdir(run_dir)


@pytest.mark.parametrize("stream", [None, "stream.bin"])
def test_the_stream_file_is_fd_4_of_the_process_only(tmp_path: Any, stream: str | None) -> None:
    """``stream``: the process reads the file on fd 4 (``-incoming fd:4``); without it fd 4
    is /dev/null. The supervisor itself never holds the file open."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    path = tmp_path / "stream.bin"
    path.write_bytes(b"the snapshot\n")
    stand_in = ["sh", "-c", 'readlink /proc/$$/fd/4; cat <&4; '
                'readlink /proc/$PPID/fd/4 || echo "parent: none"']
    proc = start_supervised(LocalSession(), stand_in, str(run_dir),
                            stream=str(path) if stream else None)
    try:
        assert proc.wait_exit(10) and proc.exit_status == 0
        out = (run_dir / "qemu.out").read_text().splitlines()
        if stream:
            assert out == [str(path), "the snapshot", "parent: none"]
        else:
            assert out == ["/dev/null", "parent: none"]
    finally:
        proc.release()


def test_a_stream_that_cannot_be_opened_starts_nothing_and_says_why(tmp_path: Any) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    marker = tmp_path / "ran"
    proc = start_supervised(LocalSession(), ["touch", str(marker)], str(run_dir),
                            stream=str(tmp_path / "gone.snap"))
    try:
        assert proc.wait_exit(10)
        assert proc.exit_status not in (None, 0)
        assert not marker.exists()
        assert "gone.snap" in (run_dir / "qemu.log").read_text()
    finally:
        proc.release()


def test_the_script_ends_its_process_when_we_die_before_reading_the_pid_line() -> None:
    """Our end of its stdout is gone before it prints ``pid N`` (we died at once): the
    supervisor must not die of SIGPIPE there and leave qemu (here a stand-in) running."""
    run_dir = tempfile.mkdtemp(prefix="dtsvirt-sup-")
    side = tempfile.mkdtemp(prefix="dtsvirt-sup-side-")
    pidfile = os.path.join(side, "stand-in.pid")
    stand_in = ["sh", "-c", 'echo $$ >"$0"; exec sleep 300', pidfile]
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read the pid line
    proc = subprocess.Popen(["sh", "-c", SUPERVISOR_SCRIPT, run_dir, *stand_in],
                            stdin=subprocess.PIPE, stdout=write_end)
    os.close(write_end)
    pid = None
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and pid is None:
            time.sleep(0.05)
            with contextlib.suppress(OSError, ValueError), open(pidfile) as f:
                pid = int(f.read())
        assert pid is not None, "the stand-in for qemu never started"
        time.sleep(0.3)  # the supervisor has written (or died writing) its pid line
        assert proc.stdin is not None
        proc.stdin.close()  # then our end of its stdin closes, as when we die
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (LocalSession().pid_alive(pid)
                                               or os.path.exists(run_dir)):
            time.sleep(0.05)
        assert not LocalSession().pid_alive(pid), "the stand-in for qemu outlived us"
        assert not os.path.exists(run_dir)
    finally:
        if pid is not None and LocalSession().pid_alive(pid):
            os.kill(pid, 9)
        proc.wait(10)
        shutil.rmtree(side, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
