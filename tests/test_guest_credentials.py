"""The test guest's login: no known password in the image, a fresh one per VM (issue 9).

Real guests: the documented old default ``tester`` no longer logs in, each VM's generated
password does and differs between VMs, a cfg ``login`` works as given, and a kept VM's
password is in a 0600 file of its run dir that the "how to reach it" text points at (the
text never holds the password itself). No password reaches the log.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import stat
import tempfile
import time
from pathlib import Path

import paramiko
import pytest
from support.runtime import assert_nothing_left, gone_or_zombie, local_dut, make_vm, write_cfg
from support.sshd import SshdHandle

from pytest_dtsvirt.errors import VmStartError
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.session.dut import Dut, connect
from pytest_dtsvirt.session.dutconfig import DutConfig

pytestmark = pytest.mark.slow

NO_LOGIN = """\
[vm0]
start =
    wait_seconds=180;
[vm1]
start =
    wait_seconds=180;
"""


dut = pytest.fixture(scope="module", name="dut")(local_dut)  # one DUT for the module


def login_works(vm: QEMUKvm, user: str, password: str) -> bool:
    """A fresh SSH login through the VM's loopback forward (as any local user could try)."""
    assert vm.hostfwd_port is not None
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    try:
        client.connect("127.0.0.1", vm.hostfwd_port, user, password, timeout=20,
                       banner_timeout=20, auth_timeout=20, allow_agent=False,
                       look_for_keys=False)
        _, out, _ = client.exec_command("id -u", timeout=20)
        return out.read().decode().strip() == "0"
    except paramiko.AuthenticationException:
        return False
    finally:
        client.close()


def end_kept(run_dir: str) -> None:
    """End a kept VM's qemu and supervisor (by PID, checked against the run dir) and remove
    its run dir."""
    words = Path(run_dir, "supervisor.pid").read_text().split()
    for pid in (int(words[1]), int(words[0])):
        try:
            if run_dir.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        deadline = time.monotonic() + 10
        while not gone_or_zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    shutil.rmtree(run_dir, ignore_errors=True)


def test_each_vm_gets_its_own_password_and_tester_is_refused(
        dut: Dut, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = write_cfg(tmp_path, NO_LOGIN)
    vms = [make_vm(dut, cfg, name, boot_timeout=180.0) for name in ("vm0", "vm1")]
    kept_run_dir = ""
    try:
        for vm in vms:
            vm.start()
        passwords = [vm._access.password for vm in vms]
        assert all(passwords) and passwords[0] != passwords[1]
        for vm, password in zip(vms, passwords, strict=True):
            assert vm.vm_dut is not None
            assert vm.vm_dut.send_expect("id -u", "# ").strip().endswith("0")
            assert not login_works(vm, "root", "tester")  # the old documented default
            assert not login_works(vm, "root", "")
            assert login_works(vm, "root", password)  # type: ignore[arg-type]
        assert not login_works(vms[0], "root", passwords[1])  # type: ignore[arg-type]
        reach = vms[1].reach()
        assert "generated for this run" in reach and passwords[1] not in reach

        # a kept VM: the password is in a 0600 file in the run dir, the text points at it
        kept_run_dir = vms[1].run_dir or ""
        text = vms[1].keep()
        password_file = os.path.join(kept_run_dir, "guest-password")
        assert f"password: in {password_file} (mode 0600)" in text
        assert passwords[1] not in text
        st = os.stat(password_file)
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
        assert stat.S_IMODE(os.stat(kept_run_dir).st_mode) == 0o700
        from_file = Path(password_file).read_text().strip()
        assert from_file == passwords[1] and login_works(vms[1], "root", from_file)
        logged = "\n".join(r.getMessage() for r in caplog.records)
        assert "ssh -p" in logged or "ready in" in logged  # the log was captured
        for password in passwords:
            assert password not in logged  # type: ignore[operator]
    finally:
        vms[0].stop()
        if kept_run_dir:
            end_kept(kept_run_dir)
        else:
            vms[1].stop()
    assert_nothing_left(vms[0])


def test_a_cfg_login_works_as_given(dut: Dut, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, """\
        [vm0]
        login =
            user=root,password=Given-Pass_42;
        start =
            wait_seconds=180;
        """)
    vm = make_vm(dut, cfg, boot_timeout=180.0)
    try:
        vm.start()
        assert login_works(vm, "root", "Given-Pass_42")
        assert not login_works(vm, "root", "tester")
        assert "password: the cfg's login" in vm.reach()
    finally:
        vm.stop()
    assert_nothing_left(vm)


def test_a_login_user_the_guest_lacks_fails_clearly(dut: Dut, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, """\
        [vm0]
        login =
            user=alice,password=whatever1;
        start =
            wait_seconds=180;
        """)
    vm = make_vm(dut, cfg, boot_timeout=180.0)
    with pytest.raises(VmStartError) as info:
        vm.start()
    assert "setting the password of 'alice' in the guest failed" in str(info.value)
    assert "whatever1" not in str(info.value)
    assert_nothing_left(vm)


def test_on_an_ssh_dut_the_password_and_its_file_work_too(sshd: SshdHandle) -> None:
    """The agent and the kept VM's password file go through the DUT's SSH link."""
    workdir = tempfile.mkdtemp(prefix="dts-ssh-", dir="/tmp")  # short: unix socket paths
    cfg_dir = tempfile.mkdtemp(prefix="dts-ssh-", dir="/tmp")
    ssh_dut = connect(DutConfig(name="dut-ssh", host=sshd.host, port=sshd.port, user=sshd.user,
                                key=sshd.key_path, known_hosts=sshd.known_hosts,
                                workdir=workdir))
    vm = make_vm(ssh_dut, write_cfg(Path(cfg_dir), NO_LOGIN), boot_timeout=180.0)
    run_dir = ""
    try:
        vm.start()
        password = vm._access.password
        assert password and vm._access.generated
        assert not login_works(vm, "root", "tester")  # the forward is on this host too
        run_dir = vm.run_dir or ""
        text = vm.keep()
        assert f"password: in {run_dir}/guest-password (mode 0600)" in text
        assert "(on the DUT dut-ssh)" in text and password not in text
        path = Path(run_dir, "guest-password")
        assert path.read_text().strip() == password
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        try:
            if run_dir:
                end_kept(run_dir)
            else:
                vm.stop()
        finally:  # also when ending the VM failed: no work dir of ours is left
            ssh_dut.close()
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(cfg_dir, ignore_errors=True)
