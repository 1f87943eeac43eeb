"""``dut.base_dir`` (and any :class:`OwnedDir`) is removed however the process that made it
ends: ``close()``, SIGTERM or Ctrl-C of a pytest run, SIGKILL, a dropped SSH link. No guest
boots here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sshd import SshdHandle

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import PipedProcess
from pytest_dtsvirt.session.local import LocalSession
from pytest_dtsvirt.session.owneddir import OwnedDir
from pytest_dtsvirt.session.ssh import SshSession

pytest_plugins = ["pytester"]


def _gone(path: str, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not os.path.exists(path)


def _wait_for(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_made_private_and_removed_on_request(tmp_path: Path) -> None:
    owned = OwnedDir.make(LocalSession(), f"{tmp_path}/dtsvirt-owned.XXXXXX")
    assert Path(owned.path).is_dir() and owned.path.startswith(f"{tmp_path}/dtsvirt-owned.")
    assert Path(owned.path).stat().st_mode & 0o777 == 0o700
    (Path(owned.path) / "file").write_text("x")
    owned.remove()
    assert not os.path.exists(owned.path)  # gone when remove() returns
    owned.remove()  # idempotent


def test_a_bad_template_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="cannot make a directory like"):
        OwnedDir.make(LocalSession(), f"{tmp_path}/no/such/dir/x.XXXXXX")


class _SilentKeeper(PipedProcess):
    """A keeper whose host never answers (a hung link) until our end is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()

    def lines(self) -> Iterator[str]:
        self.closed.wait(30)
        return iter(())

    def write(self, data: bytes) -> None:
        pass

    def close_stdin(self) -> None:
        self.closed.set()

    def exit_status(self) -> int | None:
        return None


def test_a_host_that_never_answers_is_a_bounded_error() -> None:
    keeper = _SilentKeeper()

    class Hung:
        name = "hung-dut"

        def start_piped(self, argv: list[str]) -> PipedProcess:
            return keeper

    began = time.monotonic()
    with pytest.raises(SessionError, match="hung-dut: cannot make a directory like "
                                           r"/tmp/x\.XXXXXX \(no answer within 0\.3 s\)"):
        OwnedDir.make(Hung(), "/tmp/x.XXXXXX", timeout=0.3)  # type: ignore[arg-type]
    assert time.monotonic() - began < 5
    assert keeper.closed.is_set()  # the keeper learns we gave up


def test_removed_when_its_maker_is_killed(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pytest_dtsvirt.session.owneddir import OwnedDir\n"
        "from pytest_dtsvirt.session.local import LocalSession\n"
        f"d = OwnedDir.make(LocalSession(), {str(tmp_path)!r} + '/dtsvirt-owned.XXXXXX')\n"
        "print(d.path, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    path = proc.stdout.readline().strip()
    assert path and os.path.isdir(path)
    proc.kill()  # SIGKILL: no Python cleanup at all
    proc.wait()
    assert _gone(path)


def test_removed_when_its_maker_dies_before_reading_the_path(tmp_path: Path) -> None:
    # the keeper's stdout has no reader (SIGPIPE on its echo) and its stdin is at EOF
    from pytest_dtsvirt.session.owneddir import KEEPER_SCRIPT

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        subprocess.run(["sh", "-c", KEEPER_SCRIPT, f"{tmp_path}/dtsvirt-owned.XXXXXX"],
                       stdin=subprocess.DEVNULL, stdout=write_end, timeout=30, check=False)
    finally:
        os.close(write_end)
    assert list(tmp_path.glob("dtsvirt-owned.*")) == []


def test_removed_when_the_ssh_link_drops(sshd: SshdHandle, tmp_path: Path) -> None:
    session = SshSession(sshd.host, sshd.port, sshd.user, key_filename=sshd.key_path,
                         known_hosts=sshd.known_hosts)
    try:
        owned = OwnedDir.make(session, f"{tmp_path}/dtsvirt-owned.XXXXXX")
        assert os.path.isdir(owned.path)
        assert sshd.kill_connections()
        assert _gone(owned.path)
    finally:
        session.close()


INNER = """
import json, os, time
OUT = {out!r}

def test_uses_base_dir(dut):
    with open(os.path.join(OUT, "base.tmp"), "w") as f:
        json.dump(dut.base_dir, f)
    os.rename(os.path.join(OUT, "base.tmp"), os.path.join(OUT, "base"))
    time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_pytest_run_killed_leaves_no_base_dir(pytester: pytest.Pytester, tmp_path: Path,
                                                sig: signal.Signals) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pytester.makepyfile(test_base=INNER.format(out=str(out)))
    proc = pytester.popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-p", "no:randomly"], stdin=subprocess.DEVNULL)
    base = ""
    try:
        _wait_for(out / "base")
        base = json.loads((out / "base").read_text())
        assert base.startswith("/tmp/dtsvirt-base.") and os.path.isdir(base)
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if base:
            _gone(base)
    assert base and not os.path.exists(base), f"{base} left behind after {sig.name}"
