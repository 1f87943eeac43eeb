"""Shared settings of the test suite."""

import os
import re
import tempfile
from collections.abc import Iterator

import pytest
from support.runtime import local_dut
from support.sshd import SshdHandle, start_sshd

from pytest_dtsvirt.guest import default_cache_dir
from pytest_dtsvirt.session.dutconfig import local_dut_config

# pytester runs inner pytest sessions with HOME moved into a temp dir; pin the test guest
# cache to the real one so those sessions reuse the built guest instead of rebuilding it.
os.environ.setdefault("DTSVIRT_CACHE_DIR", default_cache_dir())


#: this host as a DUT, one per test (see support.runtime.local_dut)
dut = pytest.fixture(name="dut")(local_dut)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshdHandle]:
    """A real OpenSSH server on a loopback address for the module's tests (a second DUT)."""
    handle = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield handle
    handle.stop()


# Temp names the project and its tests choose (tests/support, tempfile prefixes); anything
# with these names that a run leaves behind fails the run. The DUT work dir is kept on purpose.
_OURS = re.compile(r"^(dtsvirt-|dts-ssh-|dx-|dtr-|dtk-)")
_KEPT = os.path.basename(local_dut_config().workdir)
_BEFORE: set[str] = set()
_LEFT: list[str] = []


def _ours_in_tmp() -> set[str]:
    found = set()
    for base in {"/tmp", tempfile.gettempdir()}:
        try:
            names = os.listdir(base)
        except OSError:
            continue
        found |= {os.path.join(base, n) for n in names if _OURS.match(n) and n != _KEPT}
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    _BEFORE.update(_ours_in_tmp())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _LEFT.extend(sorted(_ours_in_tmp() - _BEFORE))
    if _LEFT:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _LEFT:
        terminalreporter.write_sep("=", "dtsvirt: the run left files behind", red=True)
        for path in _LEFT:
            terminalreporter.write_line(path)
