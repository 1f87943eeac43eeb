"""LocalSession against the Session contract (real processes, sockets, files)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.contract import (  # noqa: F401  (collected here)
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

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import PROMPT_RE
from pytest_dtsvirt.session.local import LocalSession


@pytest.fixture
def session() -> Iterator[LocalSession]:
    s = LocalSession()
    yield s
    s.close()


def test_run_missing_program_is_a_session_error(session: LocalSession) -> None:
    with pytest.raises(SessionError, match="no-such-program"):
        session.run(["no-such-program-dtsvirt"])


def test_close_ends_shells(session: LocalSession) -> None:
    shell = session.shell()
    pid = shell.pid
    assert session.pid_alive(pid)
    session.close()
    assert not session.pid_alive(pid)
    with pytest.raises(SessionError, match="closed"):
        shell.send("echo\n")
    session.close()


def test_a_shells_init_runs_in_its_setup_and_a_failure_is_an_error(
        session: LocalSession) -> None:
    shell = session.shell(init="export DTSVIRT_T=1 && cd /")
    shell.send("echo $PWD:$DTSVIRT_T\n")
    assert shell.expect(PROMPT_RE, 10).strip() == "/:1"
    with pytest.raises(SessionError, match=r"first command failed \(status 1\): cd /nonexist"):
        session.shell(init="cd /nonexist")
