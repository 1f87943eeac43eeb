"""QEMUKvm on a DUT reached over SSH: a real OpenSSH server on a loopback address.

qemu runs "on the DUT" through the SSH session (supervised in an exec channel), QMP and the
agent are reached through socat relays over SSH, and the guest's SSH through a
``direct-tcpip`` channel to the DUT-loopback hostfwd port: nothing is opened on the DUT's
network for any of them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.runtime import (
    assert_nothing_left,
    make_vm,
    start_in_thread,
    wait_for_qemu_pid,
    write_cfg,
)
from support.sshd import SshdHandle, start_sshd

from pytest_dtsvirt.errors import VmDied, VmStartError
from pytest_dtsvirt.session.dut import Dut, connect
from pytest_dtsvirt.session.dutconfig import DutConfig
from pytest_dtsvirt.vmfactory import Settings, VmFactory

pytestmark = pytest.mark.slow


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshdHandle]:
    handle = start_sshd(tmp_path, address="127.0.0.3")
    yield handle
    handle.stop()


@pytest.fixture
def workdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="dts-ssh-", dir="/tmp")  # short: unix socket paths
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def ssh_dut(sshd: SshdHandle, workdir: str) -> Iterator[Dut]:
    config = DutConfig(name="dut-ssh", host=sshd.host, port=sshd.port, user=sshd.user,
                       key=sshd.key_path, known_hosts=sshd.known_hosts, workdir=workdir)
    dut = connect(config)
    yield dut
    dut.close()


def test_boot_on_an_ssh_dut(ssh_dut: Dut, tmp_path: Path) -> None:
    vm = make_vm(ssh_dut, write_cfg(tmp_path))
    try:
        vm_dut = vm.start()
        assert "10.0.2.15" in vm_dut.send_expect("ip -4 addr show host_connect", "# ")
        # qemu is a child of the DUT's sshd session, not of this process
        assert vm._proc is not None and vm._proc.pid is not None
        ppid_chain = Path(f"/proc/{vm._proc.pid}/status").read_text()
        assert f"PPid:\t{os.getpid()}\n" not in ppid_chain
        vm_dut.send_expect("sleep 1001 &", "# ")
        vm_dut.kill_all()
        assert "sleep 1001" not in vm_dut.send_expect("ps", "# ")
    finally:
        vm.stop()
    assert_nothing_left(vm)


def test_restore_on_an_ssh_dut(ssh_dut: Dut, tmp_path: Path, workdir: str) -> None:
    """The snapshot is saved in the DUT's work dir and read there by the restored qemu (the
    supervisor on the DUT opens it as qemu's fd 4); at the end nothing is left."""
    write_cfg(tmp_path, suite="bench")
    factory = VmFactory.for_dut(ssh_dut, Settings(
        conf_dir=str(tmp_path), duts_file=None, accel="tcg", boot_timeout=180.0,
        keep_vm="never", hypervisor="kvm", cache_dir=None, run_id=uuid.uuid4().hex[:12],
        worker=None, conf_dir_given=True, fresh="restore"))
    vms = []
    try:
        for _ in range(2):
            child = factory.child(default_suite="bench")
            try:
                vm = child.start("vm0")
                vms.append(vm)
                assert "10.0.2.15" in child.guest(vm).send_expect(
                    "ip -4 addr show host_connect", "# ", 30)
                snaps = list(Path(workdir).glob("dtsnap-*/*.snap"))
            finally:
                child.close()
        assert [vm.restored for vm in vms] == [False, True]
        assert vms[1].restored_from == vms[0].fingerprint and snaps
        assert "-incoming fd:4" in " ".join(vms[1].argv)
    finally:
        factory.close()
    for vm in vms:
        assert_nothing_left(vm)
    assert not list(Path(workdir).glob("dtsnap-*"))


def test_work_dir_with_socat_special_characters(sshd: SshdHandle, workdir: str,
                                                tmp_path: Path) -> None:
    """socat parses its address: a work dir with a space, ',', ':', '!' or '"' must still
    reach QMP and the agent (it used to wait out the whole boot budget)."""
    special = os.path.join(workdir, 'w d,c:x!"q')
    config = DutConfig(name="dut-special", host=sshd.host, port=sshd.port, user=sshd.user,
                       key=sshd.key_path, known_hosts=sshd.known_hosts, workdir=special)
    dut = connect(config)
    vm = make_vm(dut, write_cfg(tmp_path), boot_timeout=60.0)
    try:
        vm_dut = vm.start()
        assert vm.run_dir is not None and vm.run_dir.startswith(special + "/")
        assert "10.0.2.15" in vm_dut.send_expect("ip -4 addr show host_connect", "# ")
    finally:
        vm.stop()
        dut.close()
    assert_nothing_left(vm)


def test_dut_connection_dropped_during_boot(ssh_dut: Dut, sshd: SshdHandle,
                                            tmp_path: Path) -> None:
    vm = make_vm(ssh_dut, write_cfg(tmp_path))
    thread, errors = start_in_thread(vm)
    wait_for_qemu_pid(vm)
    time.sleep(0.5)
    sshd.kill_connections()  # the DUT link drops: every per-connection sshd dies
    thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], VmStartError), errors
    assert "lost" in str(errors[0]) or "exited" in str(errors[0]), str(errors[0])
    # the supervisor on the DUT saw its channel close: qemu and its run dir are gone
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and vm.run_dir and os.path.exists(vm.run_dir):
        time.sleep(0.1)
    assert_nothing_left(vm)


def test_dut_link_dropped_during_a_test(ssh_dut: Dut, sshd: SshdHandle,
                                        tmp_path: Path) -> None:
    """The DUT's sshd dies mid-test: teardown says once that the link died and what the
    DUT side did about it; qemu and the run dir are gone."""
    vm = make_vm(ssh_dut, write_cfg(tmp_path))
    vm.start()
    sshd.kill_connections()
    assert vm._proc is not None and vm._proc.wait_exit(20)
    with pytest.raises(VmDied) as info:
        vm.stop()
    message = str(info.value)
    assert message.startswith("vm0: the link to DUT dut-ssh dropped while the VM ran; "
                              "the supervisor on the DUT ended qemu and removed the run dir")
    assert "teardown problems" not in message and message.count("dropped") == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and vm.run_dir and os.path.exists(vm.run_dir):
        time.sleep(0.1)
    assert_nothing_left(vm)


def test_three_vms_on_a_dut_with_default_max_sessions(tmp_path: Path, workdir: str) -> None:
    """OpenSSH allows 10 session channels per connection by default; each VM holds three for
    its whole life (supervisor, QMP, agent), so VMs get their own connections."""
    handle = start_sshd(tmp_path, address="127.0.0.6", max_sessions=10)
    config = DutConfig(name="dut-default", host=handle.host, port=handle.port,
                       user=handle.user, key=handle.key_path, known_hosts=handle.known_hosts,
                       workdir=workdir)
    dut = connect(config)
    cfg = write_cfg(tmp_path, "".join(
        f"[vm{i}]\nlogin =\n    user=root,password=tester;\n" for i in range(3)))
    vms = [make_vm(dut, cfg, f"vm{i}") for i in range(3)]
    try:
        dut.send_expect("echo ready", "# ")  # the DUT's own shell, on the shared connection
        booting = [start_in_thread(vm) for vm in vms]
        for thread, errors in booting:
            thread.join(180)
            assert not errors, errors
        for vm in vms:
            assert vm.vm_dut is not None
            assert "10.0.2.15" in vm.vm_dut.send_expect("ip -4 addr show host_connect", "# ")
        alt = dut.alt_session()  # more channels on the DUT still work
        assert "ok" in alt.send_expect("echo ok", "# ")
    finally:
        for vm in vms:
            vm.stop()
        dut.close()
        handle.stop()
    for vm in vms:
        assert_nothing_left(vm)
