"""No other local user can attack a run through the DUT work dir (issue 9, deliverable 0).

The attacker is ``nobody`` (``setpriv``): it squats the predictable work dir name first, or
puts a symlink there or on the way to it. Every such run is refused with a message naming
the path and the fix, and nothing outside (the symlinks' targets) is touched. Works on the
local DUT and over SSH (the checks run on the DUT as one ``sh`` script).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sshd import SshdHandle

from pytest_dtsvirt.errors import UnsafeWorkdir
from pytest_dtsvirt.runtime import rundir, workdir
from pytest_dtsvirt.session.base import Session
from pytest_dtsvirt.session.dut import connect
from pytest_dtsvirt.session.dutconfig import DutConfig
from pytest_dtsvirt.session.local import LocalSession

pytest_plugins = ["pytester"]

if os.geteuid() != 0 or shutil.which("setpriv") is None:
    pytestmark = pytest.mark.skip(reason="needs root and setpriv to act as user nobody")

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def as_nobody(*argv: str) -> None:
    subprocess.run([*NOBODY, *argv], check=True, capture_output=True)


@pytest.fixture
def squat() -> Iterator[str]:
    """A predictable work dir name in /tmp, like the default ``/tmp/dtsvirt-<user>``."""
    path = f"/tmp/dtsvirt-squat-{secrets.token_hex(4)}"
    yield path
    subprocess.run(["rm", "-rf", "--", path, path + "-real"], check=False)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A root-owned directory with a file the attacker would like root to clobber."""
    path = tmp_path / "target"
    path.mkdir(mode=0o700)
    (path / "precious").write_text("root's data\n")
    return path


def snapshot(path: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry under ``path`` with mode, owner, mtime and content (nothing followed)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            data = Path(p).read_bytes() if os.path.isfile(p) else b""
            out[p] = (st.st_mode, st.st_uid, st.st_mtime_ns, data)
    return out


def refused(session: Session, path: str) -> UnsafeWorkdir:
    with pytest.raises(UnsafeWorkdir) as info:
        rundir.make_run_dir(session, path, "vm0", "squat")
    return info.value


def test_a_work_dir_squatted_by_another_user_is_refused(squat: str) -> None:
    as_nobody("mkdir", "-m", "0777", squat)
    err = refused(LocalSession(), squat)
    assert str(err).startswith(f"local: refusing to use DUT workdir {squat!r}: it is owned by "
                               "uid 65534, not by the DUT user; remove it")
    assert "'workdir' in the DUT config" in str(err) and err.path == squat
    assert os.listdir(squat) == []  # nothing was made in it
    # also when the squatter gives it mode 0700 (root could still enter it)
    subprocess.run(["chmod", "0700", squat], check=True)
    assert "owned by uid 65534" in str(refused(LocalSession(), squat))


def test_a_work_dir_of_ours_with_group_or_other_bits_is_refused(squat: str) -> None:
    os.mkdir(squat, 0o700)
    os.chmod(squat, 0o755)
    assert "has mode 755: group or other users may use it" in str(refused(LocalSession(),
                                                                           squat))
    os.chmod(squat, 0o700)
    run_dir = rundir.make_run_dir(LocalSession(), squat, "vm0", "squat")
    assert os.path.dirname(run_dir) == squat and os.stat(run_dir).st_mode & 0o777 == 0o700


def test_an_accepted_work_dir_is_checked_again_for_each_run_dir(squat: str) -> None:
    """Run dirs after the first take a quick path (the full check is remembered), which
    still sees the work dir's mode changed, or the work dir swapped by another user."""
    os.mkdir(squat, 0o700)
    session = LocalSession()
    first = rundir.make_run_dir(session, squat, "vm0", "squat")  # full check, remembered
    second = rundir.make_run_dir(session, squat, "vm0", "squat")  # quick
    assert first != second and {os.path.dirname(first), os.path.dirname(second)} == {squat}
    assert os.stat(second).st_mode & 0o777 == 0o700
    os.chmod(squat, 0o755)
    assert "has mode 755: group or other users may use it" in str(refused(session, squat))
    os.chmod(squat, 0o700)
    rundir.make_run_dir(session, squat, "vm0", "squat")  # accepted again
    shutil.rmtree(squat)
    as_nobody("mkdir", "-m", "0700", squat)  # another user takes the name meanwhile
    assert "owned by uid 65534" in str(refused(session, squat))
    assert os.listdir(squat) == []


def test_a_symlinked_work_dir_is_refused(squat: str, target: Path) -> None:
    before = snapshot(target)
    as_nobody("ln", "-s", str(target), squat)
    err = refused(LocalSession(), squat)
    assert f"refusing to use DUT workdir {squat!r}: it is a symbolic link" in str(err)
    assert snapshot(target) == before
    # a symlink of our own is refused too: never through a symlink
    os.unlink(squat)
    os.symlink(target, squat)
    assert "symbolic link" in str(refused(LocalSession(), squat))
    assert snapshot(target) == before


def test_a_symlinked_parent_of_the_run_dirs_is_refused(squat: str, target: Path) -> None:
    """The work dir's parent is another user's symlink: to its own directory, or to a
    directory of root's that it wants filled."""
    before = snapshot(target)
    as_nobody("ln", "-s", str(target), squat)
    err = refused(LocalSession(), f"{squat}/wd")
    assert (f"refusing to use {squat!r} on the way to the DUT workdir {squat + '/wd'!r}: it is "
            "owned by uid 65534, neither root nor the DUT user") in str(err)
    assert snapshot(target) == before
    os.unlink(squat)
    as_nobody("mkdir", "-m", "0755", squat + "-real")
    as_nobody("ln", "-s", squat + "-real", squat)
    assert "owned by uid 65534" in str(refused(LocalSession(), f"{squat}/wd"))
    assert os.listdir(squat + "-real") == []


def test_a_whole_run_on_a_squatted_work_dir_fails_clearly(pytester: pytest.Pytester,
                                                          squat: str) -> None:
    """The attack of the issue: another user owns the work dir before the (root) run."""
    as_nobody("mkdir", "-m", "0777", squat)
    as_nobody("touch", f"{squat}/bait")
    duts = pytester.path / "duts.cfg"
    duts.write_text(f"[dut0]\nhost = local\nworkdir = {squat}\n")
    pytester.makepyfile(test_inner="def test_boot(vm_dut):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--dtsvirt-accel", "tcg",
                                           f"--dtsvirt-duts={duts}", timeout=300)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*refusing to use DUT workdir '{squat}': it is owned by uid "
                                 "65534, not by the DUT user*"])
    assert "Traceback" not in result.stdout.str()
    assert os.listdir(squat) == ["bait"]


def test_over_ssh_the_same_checks_apply(sshd: SshdHandle, squat: str, target: Path) -> None:
    before = snapshot(target)
    dut = connect(DutConfig(name="dut-ssh", host=sshd.host, port=sshd.port, user=sshd.user,
                            key=sshd.key_path, known_hosts=sshd.known_hosts, workdir=squat))
    try:
        as_nobody("mkdir", "-m", "0777", squat)
        err = refused(dut.session, squat)
        assert "refusing to use DUT workdir" in str(err) and "owned by uid 65534" in str(err)
        os.rmdir(squat)
        as_nobody("ln", "-s", str(target), squat)
        assert "symbolic link" in str(refused(dut.session, squat))
        assert snapshot(target) == before
        os.unlink(squat)
        run_dir = rundir.make_run_dir(dut.session, squat, "vm0", "squat")
        assert os.stat(squat).st_mode & 0o777 == 0o700 and os.stat(squat).st_uid == 0
        assert os.path.dirname(run_dir) == squat
        assert workdir.check_workdir(dut.session, squat) == squat
    finally:
        dut.close()
