"""QEMUKvm on the local DUT: real TCG boots, the VM DUT API, faults, no leaks."""

from __future__ import annotations

import _thread
import contextlib
import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support.runtime import (
    BASE_VM,
    assert_nothing_left,
    local_dut,
    make_vm,
    qemu_pids_naming,
    start_in_thread,
    wait_for_qemu_pid,
    write_cfg,
)

from pytest_dtsvirt.errors import (
    AgentTimeout,
    CommandTimeout,
    GuestPanic,
    QemuExited,
    SessionError,
    VmDied,
    VmError,
    VmStartError,
)
from pytest_dtsvirt.guest import ensure_guest_image
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.session.dut import Dut, connect
from pytest_dtsvirt.session.dutconfig import local_dut_config

pytestmark = pytest.mark.slow


dut = pytest.fixture(scope="module", name="dut")(local_dut)  # one DUT for the module


@pytest.fixture
def started(dut: Dut, tmp_path: Path) -> Iterator[QEMUKvm]:
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.start()
    yield vm
    vm.stop()
    assert_nothing_left(vm)


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hexport = local.split(":")
        if state == "0A" and int(hexport, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_start_gives_a_vm_dut_with_the_host_dut_api(started: QEMUKvm) -> None:
    vm_dut = started.vm_dut
    assert vm_dut is not None and vm_dut.vm is started
    assert "dtsvirt-guest" in vm_dut.send_expect("uname -n", "# ")
    out = vm_dut.send_expect("ip -4 addr show host_connect", "# ")
    assert "10.0.2.15" in out
    assert list(started.phase_timings) == ["qemu", "qmp", "agent", "password", "host_connect",
                                           "ssh", "total"]
    # the guest's SSH is forwarded on the DUT's loopback only
    assert started.hostfwd_port is not None
    assert _listening_addresses(started.hostfwd_port) == {"127.0.0.1"}
    # the run dir is private and holds the sockets
    assert started.run_dir is not None
    assert os.stat(started.run_dir).st_mode & 0o777 == 0o700
    assert {"qmp.sock", "qga.sock", "monitor.sock", "console.log"} <= set(
        os.listdir(started.run_dir))


def test_kill_all_in_the_guest_ends_only_what_the_dut_started(started: QEMUKvm) -> None:
    vm_dut = started.vm_dut
    assert vm_dut is not None
    vm_dut.send_expect("sleep 1001 &", "# ")
    alt = vm_dut.alt_session()
    alt.send_expect("sleep 1002 &", "# ")
    # a process the framework did not start: through the agent, outside any DUT shell
    started.agent.exec(["/bin/sh", "-c", "sleep 1003 >/dev/null 2>&1 &"])
    ps = vm_dut.send_expect("ps", "# ")
    assert "sleep 1001" in ps and "sleep 1002" in ps and "sleep 1003" in ps
    vm_dut.kill_all()
    ps = vm_dut.send_expect("ps", "# ")
    assert "sleep 1001" not in ps and "sleep 1002" not in ps
    assert "sleep 1003" in ps


def test_an_agent_timeout_names_the_vm_and_the_dut(started: QEMUKvm) -> None:
    vm_dut = started.vm_dut
    assert vm_dut is not None
    vm_dut.send_expect("kill -STOP $(pidof qemu-ga)", "# ")
    try:
        with pytest.raises(AgentTimeout, match=r"^vm0 on DUT local: guest agent: "):
            started.agent.ping(timeout=1.0)
    finally:
        vm_dut.send_expect("kill -CONT $(pidof qemu-ga)", "# ")


def test_the_hmp_monitor_stays_usable_by_hand(started: QEMUKvm) -> None:
    assert started.monitor_socket is not None
    out = subprocess.run(["socat", "-", f"UNIX-CONNECT:{started.monitor_socket}"],
                         input=b"info status\n", capture_output=True, timeout=10).stdout
    assert b"VM status: running" in out


def test_stop_is_idempotent_and_leaves_nothing(dut: Dut, tmp_path: Path) -> None:
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.start()
    begin = time.monotonic()
    vm.stop()
    assert time.monotonic() - begin < 5
    vm.stop()
    assert_nothing_left(vm)


def test_function_scoped_boots_are_distinct_and_two_vms_run_at_once(
        dut: Dut, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, BASE_VM + BASE_VM.replace("[vm0]", "[vm1]"))
    vms = [make_vm(dut, cfg, "vm0"), make_vm(dut, cfg, "vm1")]
    errors: list[BaseException] = []

    def boot(vm: QEMUKvm) -> None:
        try:
            vm.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(vm,)) for vm in vms]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        ids = {vm.vm_dut.send_expect("cat /proc/sys/kernel/random/boot_id", "# ").strip()
               for vm in vms if vm.vm_dut}
        assert len(ids) == 2
        assert vms[0].hostfwd_port != vms[1].hostfwd_port
    finally:
        for vm in vms:
            vm.stop()
    for vm in vms:
        assert_nothing_left(vm)


def test_two_runs_at_once_share_the_dut(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path)
    cmd = [sys.executable, "-m", "pytest_dtsvirt", "boot", str(cfg), "vm0", "--accel",
           "tcg", "--exec", "cat /proc/sys/kernel/random/boot_id"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            for _ in range(2)]
    outs = [p.communicate(timeout=180) for p in runs]
    for p, (_, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    assert len({out.strip() for out, _ in outs}) == 2


def test_cpupin_pins_each_vcpu_thread(dut: Dut, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, BASE_VM + "cpu =\n    number=2,cpupin=1 0;\n")
    vm = make_vm(dut, cfg)
    try:
        vm.start()
        threads = vm.qmp.vcpu_threads()
        assert len(threads) == 2
        affinity = [os.sched_getaffinity(tid) for tid in threads]
        assert affinity == [{1}, {0}]
    finally:
        vm.stop()
    assert_nothing_left(vm)


# -- faults ------------------------------------------------------------------------------

def test_qemu_killed_during_boot_fails_at_once(dut: Dut, tmp_path: Path) -> None:
    vm = make_vm(dut, write_cfg(tmp_path))
    thread, errors = start_in_thread(vm)
    pid = wait_for_qemu_pid(vm)
    os.kill(pid, 9)
    killed = time.monotonic()
    thread.join(60)
    assert time.monotonic() - killed < 5, "the boot did not notice qemu's death at once"
    assert len(errors) == 1 and isinstance(errors[0], QemuExited), errors
    assert "qemu exited" in str(errors[0]) and "exit status" in str(errors[0])
    assert "qemu argv" in errors[0].diagnostics
    assert_nothing_left(vm)


def test_qemu_killed_during_a_test(dut: Dut, tmp_path: Path) -> None:
    """Every way the test touches the VM says qemu died (signal, console tail), and the
    teardown fails with that cause."""
    vm = make_vm(dut, write_cfg(tmp_path))
    vm_dut = vm.start()
    assert vm._proc is not None and vm._proc.pid is not None
    pid = vm._proc.pid
    os.kill(pid, 9)
    with pytest.raises(SessionError) as info:
        vm_dut.send_expect("sleep 30", "# ", timeout=10)
    died = f"qemu (PID {pid}) died while the VM was in use: killed by signal 9 (SIGKILL)"
    assert died in str(info.value) and "console tail:" in str(info.value)
    for touch in (lambda: vm.qmp, lambda: vm.agent):
        with pytest.raises(VmDied, match=re.escape(died)):
            touch()
    with pytest.raises(VmDied, match=re.escape(died)):
        vm.stop()
    vm.stop()  # idempotent: said once
    assert_nothing_left(vm)


def test_qemu_killed_while_the_test_does_not_touch_the_vm(dut: Dut, tmp_path: Path) -> None:
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.start()
    assert vm._proc is not None and vm._proc.pid is not None
    os.kill(vm._proc.pid, 9)
    vm._proc.wait_exit(10)
    with pytest.raises(VmDied) as info:
        vm.stop()
    assert "died while the VM was in use: killed by signal 9 (SIGKILL)" in str(info.value)
    assert "Linux version" in str(info.value) or "console tail" in str(info.value)
    assert_nothing_left(vm)


def test_qemu_stopped_during_a_test(dut: Dut, tmp_path: Path) -> None:
    """SIGSTOP: a command times out saying the VM is stopped; teardown is prompt."""
    vm = make_vm(dut, write_cfg(tmp_path))
    vm_dut = vm.start()
    assert vm._proc is not None and vm._proc.pid is not None
    vm_dut.send_expect("echo ready", "# ")
    os.kill(vm._proc.pid, signal.SIGSTOP)
    with pytest.raises(CommandTimeout) as info:
        vm_dut.send_expect("echo hi", "hi", timeout=3)
    stopped = f"the VM is not responding: qemu (PID {vm._proc.pid}) is stopped (SIGSTOP)"
    assert stopped in str(info.value)
    begin = time.monotonic()
    with pytest.raises(VmDied, match=re.escape(stopped)):
        vm.stop()
    assert time.monotonic() - begin < 10, "teardown of a stopped qemu was not prompt"
    assert_nothing_left(vm)


def test_agent_never_answering(dut: Dut, tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, BASE_VM + "kernel =\n    append=dtsvirt.noqga;\n")
    vm = make_vm(dut, cfg, boot_timeout=12.0)
    with pytest.raises(VmStartError) as info:
        vm.start()
    assert "phase 'agent' not reached within the boot budget of 12 s" in str(info.value)
    assert "console tail" in info.value.diagnostics
    assert_nothing_left(vm)


def test_guest_kernel_panic_ends_the_boot_at_once(dut: Dut, tmp_path: Path) -> None:
    """No init in the initramfs and no root: the kernel panics; the boot fails on the
    panic line, not after the budget."""
    cfg = write_cfg(tmp_path, BASE_VM + "kernel =\n    append=rdinit=/nonexistent;\n")
    vm = make_vm(dut, cfg, boot_timeout=90.0)
    begin = time.monotonic()
    with pytest.raises(GuestPanic) as info:
        vm.start()
    assert time.monotonic() - begin < 30, "the boot waited although the guest panicked"
    assert "the guest kernel panicked during phase" in str(info.value)
    assert "Kernel panic - not syncing:" in str(info.value)
    assert "console tail" in info.value.diagnostics
    assert_nothing_left(vm)


_FULL_DISK_RUN = """
import dataclasses, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from support.runtime import local_dut, make_vm, write_cfg
from pytest_dtsvirt.session.dut import connect
from pytest_dtsvirt.session.dutconfig import local_dut_config
dut = connect(dataclasses.replace(local_dut_config(), workdir=sys.argv[1]))
vm = make_vm(dut, write_cfg(Path(sys.argv[2])))
try:
    vm.start()
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
finally:
    vm.stop()
    dut.close()
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="mounting a tmpfs in a private mount namespace needs root")
def test_full_work_dir_filesystem_is_named(tmp_path: Path) -> None:
    """A DUT work dir on a full filesystem (a 64 KiB tmpfs filled up, mounted in a private
    mount namespace that ends with the run): the error names the cause."""
    short = tempfile.mkdtemp(prefix="dtr-", dir="/tmp")  # short: unix socket paths
    mnt = Path(short)
    workdir = mnt / "w"
    setup = (f"mount -t tmpfs -o size=64k tmpfs {shlex.quote(str(mnt))} && "
             f"mkdir -m 700 {shlex.quote(str(workdir))} && "
             f"{{ dd if=/dev/zero of={shlex.quote(str(mnt / 'fill'))} bs=4k 2>/dev/null; "
             'true; } && exec "$@"')
    out = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", setup, "sh",
         sys.executable, "-c", _FULL_DISK_RUN, str(workdir), str(tmp_path),
         str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=120).stdout
    shutil.rmtree(short)
    assert out.startswith("VmStartError: vm0: no space left on the DUT work dir's "
                          f"filesystem ({workdir}/dtsvirt-"), out
    assert "KiB free" in out and "choose another 'workdir'" in out
    assert qemu_pids_naming(str(workdir)) == []


def test_statfs_parsing() -> None:
    from pytest_dtsvirt.runtime.rundir import parse_statfs

    assert parse_statfs("10 4096 5 100\n") == (40960, 5)
    assert parse_statfs("10 4096 0 0") == (40960, -1)  # no inode counts (e.g. btrfs)
    assert parse_statfs("stat: cannot read") is None


def test_wrong_guest_password(dut: Dut, tmp_path: Path) -> None:
    """A guest that is not the framework's own test guest (here: its kernel named in the cfg,
    so nothing sets the password) refusing the cfg's password fails at once."""
    image = ensure_guest_image()
    cfg = write_cfg(tmp_path, f"[vm0]\nlogin =\n    user=root,password=Wr0ngPass;\n"
                    f"kernel =\n    file={image.kernel},initrd={image.initrd},"
                    f"append={image.append};\n")
    vm = make_vm(dut, cfg)
    begin = time.monotonic()
    with pytest.raises(VmStartError) as info:
        vm.start()
    assert "SSH login as 'root' refused" in str(info.value)
    assert "Wr0ngPass" not in str(info.value)  # the password is never shown
    assert time.monotonic() - begin < 45  # it fails on the refusal, not on the budget
    assert_nothing_left(vm)


def test_hostfwd_port_already_taken(dut: Dut, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_cfg(tmp_path, BASE_VM + "net =\n    type=nic,opt_vlan=1;\n"
                        f"    type=user,opt_vlan=1,opt_hostfwd=tcp:127.0.0.1:{port}-:2222;\n")
        vm = make_vm(dut, cfg)
        with pytest.raises(QemuExited) as info:
            vm.start()
    assert "host forwarding" in str(info.value)
    assert_nothing_left(vm)


def test_the_legacy_control_net_idiom_gives_one_control_nic(dut: Dut, tmp_path: Path) -> None:
    """``net = nic+user vlan 0; nic+user vlan 1`` (as in DTS suite configs) boots a guest
    with two NICs: the first pair is host_connect at 00:1f.0 and carries SSH."""
    cfg = write_cfg(tmp_path, BASE_VM + "net =\n    type=nic,opt_vlan=0;\n"
                    "    type=user,opt_vlan=0;\n    type=nic,opt_vlan=1;\n"
                    "    type=user,opt_vlan=1;\n")
    vm = make_vm(dut, cfg)
    try:
        vm_dut = vm.start()
        nics = vm_dut.send_expect("ls /sys/class/net", "# ").split()
        assert sorted(n for n in nics if n != "lo") == ["eth0", "host_connect"], nics
        slot = vm_dut.send_expect("basename $(readlink /sys/class/net/host_connect/device)",
                                  "# ")
        assert slot.strip() == "0000:00:1f.0"
    finally:
        vm.stop()
    assert_nothing_left(vm)


def test_keyboard_interrupt_during_start(dut: Dut, tmp_path: Path) -> None:
    vm = make_vm(dut, write_cfg(tmp_path))

    def interrupt_when_qemu_runs() -> None:
        wait_for_qemu_pid(vm)
        time.sleep(0.5)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_qemu_runs, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        vm.start()
    assert_nothing_left(vm)


@pytest.mark.parametrize(("stage", "presses"),
                         [("_stop_courtesy", 1), ("_stop_soft", 1), ("_stop_soft", 2)])
def test_ctrl_c_during_teardown_leaves_nothing(dut: Dut, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch, stage: str,
                                               presses: int) -> None:
    """A real SIGINT landing in stop() (the issue saw Ctrl-C 0.3-0.6 s into a teardown leave
    the run dir behind): the stop still ends qemu and removes the run dir, then the
    KeyboardInterrupt goes on. The SIGINT is sent as a stage begins (a fixed delay raced
    teardowns that finish in 0.3 s); with two presses the second lands in the hard stage,
    which holds it until qemu is gone and the run dir removed."""
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.start()

    def press_then(fn: Callable[..., None]) -> Callable[..., None]:
        def pressed(*args: object) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            fn(*args)
        return pressed

    monkeypatch.setattr(vm, stage, press_then(getattr(vm, stage)))
    if presses == 2:
        monkeypatch.setattr(vm, "_stop_hard", press_then(vm._stop_hard))
    with pytest.raises(KeyboardInterrupt):
        vm.stop()
    assert_nothing_left(vm)


def test_a_killed_controller_leaves_nothing(tmp_path: Path) -> None:
    """kill -9 of the process that started the VM: the supervisor ends qemu and its files."""
    cfg = write_cfg(tmp_path)
    script = (
        "import sys, time\n"
        "from pytest_dtsvirt.hypervisor import VmOptions\n"
        "from pytest_dtsvirt.qemu.kvm import QEMUKvm\n"
        "from pytest_dtsvirt.session.dut import connect\n"
        "from pytest_dtsvirt.session.dutconfig import local_dut_config\n"
        f"vm = QEMUKvm(connect(local_dut_config()), 'vm0', 'runtime', "
        f"VmOptions(cfg_path={str(cfg)!r}, accel='tcg'))\n"
        "vm.start()\n"
        "print(vm.run_dir, flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_dir = proc.stdout.readline().strip()
    assert run_dir and qemu_pids_naming(run_dir)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (qemu_pids_naming(run_dir) or os.path.exists(run_dir)):
        time.sleep(0.1)
    assert qemu_pids_naming(run_dir) == []
    assert not os.path.exists(run_dir)


def test_reaper_removes_only_crashed_runs(tmp_path: Path) -> None:
    from pytest_dtsvirt.runtime import rundir

    workdir = tempfile.mkdtemp(prefix="dtr-", dir="/tmp")  # short: unix socket paths
    wd_dut = connect(dataclasses.replace(local_dut_config(), workdir=workdir))
    crashed = make_vm(wd_dut, write_cfg(tmp_path))
    live = make_vm(wd_dut, write_cfg(tmp_path))
    crashed.start()
    live.start()
    assert crashed.run_dir and live.run_dir and crashed._proc and crashed._proc.pid
    # the crashed run: its supervisor (not qemu) dies, as if the machine lost the process
    sup_pid = int(Path(crashed.run_dir, "supervisor.pid").read_text().split()[0])
    os.kill(sup_pid, 9)
    time.sleep(0.2)
    assert qemu_pids_naming(crashed.run_dir), "qemu should outlive its supervisor here"
    innocent = subprocess.Popen(["sleep", "300"])  # not ours: must survive
    # a user following the crashed run's console: names the run dir, still not ours
    follower = subprocess.Popen(["tail", "-f", f"{crashed.run_dir}/console.log"],
                                stdout=subprocess.DEVNULL)
    try:
        reaped = rundir.reap(wd_dut.session, workdir)
        assert reaped == [crashed.run_dir]
        assert qemu_pids_naming(crashed.run_dir) == []
        assert not os.path.exists(crashed.run_dir)
        assert qemu_pids_naming(live.run_dir) and os.path.exists(live.run_dir)
        assert innocent.poll() is None
        assert follower.poll() is None
    finally:
        for proc in (innocent, follower):
            proc.kill()
            proc.wait()
        live.stop()
        with contextlib.suppress(VmError):
            crashed.stop()
        wd_dut.close()
        shutil.rmtree(workdir, ignore_errors=True)
    assert_nothing_left(live)


def test_diagnostics_show_the_guest_through_the_agent_when_ssh_is_gone(
        started: QEMUKvm) -> None:
    assert started.vm_dut is not None
    started.vm_dut.close()  # SSH gone
    diag = started.diagnostics()
    assert diag["qemu argv"].startswith("qemu-system-x86_64 ")
    assert "dtsvirt-guest: init start" in diag["console tail"]
    guest = diag["guest state (agent)"]
    assert "host_connect" in guest and "10.0.2.15" in guest
    assert "qemu-ga" in guest  # the process list, read through guest-exec
    assert diag["boot phases (s)"].startswith("qemu=")
    assert "ssh -p" in diag["reach"]


def test_reference_vxlan_flow_two_vhost_user_devices(dut: Dut, tmp_path: Path) -> None:
    """The reference's vxlan_sample shape: backend first, set_vm_device twice, start()."""
    from pytest_dtsvirt.vhost import TestpmdBackend

    macs = ["00:00:20:00:00:20", "00:00:20:00:00:21"]
    with TestpmdBackend(dut.session, ports=2) as backend:
        vm = make_vm(dut, write_cfg(tmp_path))
        for path, mac in zip(backend.socket_paths, macs, strict=True):
            vm.set_vm_device(driver="vhost-user", opt_path=path, opt_mac=mac)
        try:
            vm_dut = vm.start()
            # the guest brings its NICs up as they probe; the vhost-user link has carrier
            # once testpmd and the guest driver agreed on the device: poll, bounded
            show = ("for n in /sys/class/net/*; do "
                    "echo $(cat $n/address) $(cat $n/carrier 2>/dev/null || echo -); done")
            deadline = time.monotonic() + 20
            while True:
                links = vm_dut.send_expect(show, "# ")
                if all(f"{mac} 1" in links for mac in macs) or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            for mac in macs:
                assert f"{mac} 1" in links, links
        finally:
            vm.stop()
    assert_nothing_left(vm)


def test_a_hung_guest_ssh_does_not_stall_teardown(dut: Dut, tmp_path: Path) -> None:
    """The guest's SSH server stops answering while the link through slirp stays up: the
    courtesy steps give up after their budget and the VM is powered down anyway."""
    from pytest_dtsvirt.qemu import teardown

    vm = make_vm(dut, write_cfg(tmp_path))
    vm_dut = vm.start()
    vm_dut.send_expect("sleep 1000 &", "# ")  # something for kill_all to do
    stopped = vm.agent.exec(["/bin/sh", "-c", "kill -STOP $(pidof dropbear)"])
    assert stopped.exit_code == 0, stopped
    begin = time.monotonic()
    vm.stop()
    took = time.monotonic() - begin
    assert took < teardown.GUEST_COURTESY_S + 10, f"teardown took {took:.1f} s"
    assert_nothing_left(vm)


def test_openssh_guest_takes_many_commands_at_once(dut: Dut, tmp_path: Path) -> None:
    """The OpenSSH variant of the test guest (``guest_ssh``): SFTP for files, and one guest
    session serving commands from several threads at once (dropbear 2022.83 may drop the
    connection under this load; see session/channel.py)."""
    vm = make_vm(dut, write_cfg(tmp_path), guest_ssh="openssh")
    try:
        vm_dut = vm.start()
        session = vm_dut.session
        assert session.run(["sh", "-c", "pidof sshd && ! pidof dropbear"]).ok
        assert session.run(["test", "-x", "/usr/lib/openssh/sftp-server"]).ok
        data = os.urandom(300_000)
        session.write_file("/tmp/blob", data)
        assert session.read_file("/tmp/blob") == data
        failures: list[str] = []

        def worker(argv: list[str], expect: str) -> None:
            for _ in range(25):
                try:
                    result = session.run(argv, timeout=60)
                    if not result.ok or result.stdout != expect:
                        failures.append(repr(result))
                except SessionError as exc:
                    failures.append(str(exc))

        threads = [threading.Thread(target=worker, args=(argv, expect)) for argv, expect in
                   ((["echo", "a"], "a\n"), (["sh", "-c", "sleep 0.02; echo b"], "b\n"),
                    (["true"], ""))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert failures == []
    finally:
        vm.stop()
    assert_nothing_left(vm)
