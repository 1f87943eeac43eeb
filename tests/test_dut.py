"""The Dut API (send_expect, alt_session, kill_all, ...) on the local host and over real SSH,
plus the DUT config file."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.sshd import SshdHandle

from pytest_dtsvirt.errors import CommandTimeout, ConfigError, SessionError
from pytest_dtsvirt.session.base import descendants_of
from pytest_dtsvirt.session.dut import Dut, VmDut, clean_output, connect
from pytest_dtsvirt.session.dutconfig import (
    DutConfig,
    guest_dut_config,
    load_dut_configs,
    local_dut_config,
    parse_dut_configs,
    parse_dut_spec,
)
from pytest_dtsvirt.session.local import LocalSession


def ssh_config(h: SshdHandle, **kw: object) -> DutConfig:
    return DutConfig(name="sshdut", host=h.host, port=h.port, user=h.user, key=h.key_path,
                     known_hosts=h.known_hosts, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "ssh"])
def dut(request: pytest.FixtureRequest) -> Iterator[Dut]:
    if request.param == "local":
        d = connect(local_dut_config())
    else:
        d = connect(ssh_config(request.getfixturevalue("sshd")))
    yield d
    d.close()


def wait_gone(dut: Dut, pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not dut.session.pid_alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_send_expect_returns_output_before_the_match(dut: Dut) -> None:
    assert dut.send_expect("echo hello; echo world", "# ") == "hello\nworld"
    # a regex; as in DTS what follows the match is discarded before the next command
    assert dut.send_expect("echo 'before id=42 rest'; sleep 0.2", r"id=\d+") == "before "
    time.sleep(0.5)
    assert dut.send_expect("echo next", "# ") == "next"
    assert dut.send_expect("printf 'testpmd> '", "testpmd> ") == ""
    # the shell's own prompt follows the match asynchronously: sync() waits it out (else
    # the next send_expect could match that late prompt, as in DTS)
    dut.shell.sync()
    assert dut.send_expect("echo $((6*7))", "# ", timeout=5) == "42"
    # a background job that ends between commands leaves nothing behind
    dut.send_expect("sleep 0.2 &", "# ")
    time.sleep(0.6)
    assert dut.send_expect("echo done", "# ") == "done"


def test_send_expect_timeout_carries_the_output(dut: Dut) -> None:
    with pytest.raises(CommandTimeout) as info:
        dut.send_expect("echo started-; sleep 30", "never-printed", timeout=1)
    assert info.value.command == "echo started-; sleep 30"
    assert info.value.expected == "never-printed"
    assert "started-" in info.value.output
    assert "started-" in str(info.value)
    killed = dut.kill_all()
    assert killed  # the sleep
    assert dut.send_expect("echo back", "# ") == "back"


def test_send_command(dut: Dut) -> None:
    assert dut.send_command("echo quick", timeout=5) == "quick"
    start = time.monotonic()
    out = dut.send_command("echo slow-start; sleep 30", timeout=0.5)
    assert time.monotonic() - start < 5
    assert "slow-start" in out
    dut.kill_all()


def test_alt_session_is_independent(dut: Dut, tmp_path: Path) -> None:
    dut.send_command("sleep 1000", timeout=0.2)  # the main shell is busy
    alt = dut.alt_session()
    assert alt.pid != dut.shell.pid
    assert alt.send_expect(f"cd {tmp_path} && pwd", "# ") == str(tmp_path)
    assert alt.send_expect("echo alt", "# ") == "alt"
    alt2 = dut.alt_session()
    assert alt2.send_expect("pwd", "# ") != str(tmp_path)
    dut.kill_all()
    assert dut.send_expect("echo main-free", "# ") == "main-free"
    alt.close()
    with pytest.raises(SessionError):
        alt.send_expect("echo", "# ")


def _child_of(dut: Dut, parent: int, timeout: float = 10.0) -> int:
    """The PID of a child of ``parent`` once there is one."""
    deadline = time.monotonic() + timeout
    while True:
        children = [p.pid for p in dut.session.processes().values() if p.ppid == parent]
        if children:
            return children[0]
        assert time.monotonic() < deadline, f"PID {parent} started no child in {timeout} s"
        time.sleep(0.05)


def test_kill_all_ends_only_what_the_dut_started(dut: Dut, tmp_path: Path) -> None:
    # an unrelated process on the same host, started outside this Dut
    unrelated = dut.session.spawn(["sleep", "1000"], stdout_path="/dev/null",
                                  stderr_path="/dev/null")
    try:
        dut.send_expect("sleep 1000 &", "# ")
        bg = int(dut.send_expect("echo $!", "# "))
        alt = dut.alt_session()
        alt.send_command("sleep 1001", timeout=0.2)  # foreground, never returns
        spawned = dut.spawn(["sh", "-c", "sleep 1002 & wait"], stdout_path="/dev/null",
                            stderr_path="/dev/null")
        # both children start a moment later (under load, after the calls returned)
        spawned_child = _child_of(dut, spawned)
        alt_child = _child_of(dut, alt.pid)
        for pid in (bg, alt_child, spawned, spawned_child, unrelated):
            assert dut.session.pid_alive(pid)
        shells = (dut.shell.pid, alt.pid)

        killed = dut.kill_all()

        assert {bg, alt_child, spawned, spawned_child} <= set(killed)
        for pid in (bg, alt_child, spawned, spawned_child):
            assert wait_gone(dut, pid), pid
        assert unrelated not in killed and dut.session.pid_alive(unrelated)
        for pid in shells:
            assert pid not in killed and dut.session.pid_alive(pid)
        # both shells are usable again with a clean prompt
        assert dut.send_expect("echo main", "# ") == "main"
        assert alt.send_expect("echo alt", "# ") == "alt"
        assert dut.kill_all() == []
    finally:
        dut.session.kill(unrelated, signal.SIGKILL)


def test_kill_all_ends_daemons_that_left_their_parent(dut: Dut, tmp_path: Path) -> None:
    """A double-forked, setsid daemon (no longer a descendant of anything the Dut knows)
    started from a shell, from a closed alt shell and from a spawned process is ended; the
    same daemon started outside the Dut is not."""
    daemon = "setsid sleep {} </dev/null >/dev/null 2>&1 & echo $!"

    def settled(pid: int) -> int:
        """``pid`` once it leads its own session and runs sleep (a hangup of the shell it
        came from no longer reaches it)."""
        deadline = time.monotonic() + 10
        while True:
            info = dut.session.proc_info(pid)
            cmdline = dut.session.run(["cat", f"/proc/{pid}/cmdline"]).stdout
            if info is not None and info.pgrp == pid and cmdline.startswith("sleep"):
                return pid
            assert time.monotonic() < deadline, (info, cmdline)
            time.sleep(0.02)

    from_shell = settled(int(dut.send_expect(f"sh -c '{daemon.format(1011)}'", "# ")))
    alt = dut.alt_session()
    from_alt = settled(int(alt.send_expect(f"sh -c '{daemon.format(1012)}'", "# ")))
    alt.close()
    out = tmp_path / "daemon.pid"
    dut.spawn(["sh", "-c", daemon.format(1013)], stdout_path=str(out), stderr_path="/dev/null")
    deadline = time.monotonic() + 10
    while not out.read_text().strip():
        assert time.monotonic() < deadline, "the spawned shell did not print the daemon's PID"
        time.sleep(0.05)
    from_spawn = settled(int(out.read_text()))
    outside = settled(int(dut.session.run(["sh", "-c", daemon.format(1014)]).stdout))
    try:
        daemons = (from_shell, from_alt, from_spawn)
        procs = dut.session.processes()
        for pid in (*daemons, outside):
            assert dut.session.pid_alive(pid), pid
            assert pid not in descendants_of(procs, [dut.shell.pid]), pid

        killed = dut.kill_all()

        assert set(daemons) <= set(killed) and outside not in killed
        for pid in daemons:
            assert wait_gone(dut, pid), pid
        assert dut.session.pid_alive(outside)
    finally:
        dut.session.kill(outside, signal.SIGKILL)


def test_kill_all_after_a_program_changed_the_terminal(dut: Dut) -> None:
    # raw mode with echo on, as an interactive program (testpmd) leaves it when killed
    dut.send_command("stty raw echo; sleep 1000", timeout=0.3)
    assert dut.kill_all()
    assert dut.send_expect("echo clean", "# ") == "clean"


def test_kill_all_spares_a_reused_pid(dut: Dut) -> None:
    """A spawned PID that ended is not signalled later, even if the PID were reused."""
    pid = dut.spawn(["true"], stdout_path="/dev/null", stderr_path="/dev/null")
    assert wait_gone(dut, pid)
    assert pid not in dut.kill_all()


def test_files_and_memory_channels(dut: Dut, tmp_path: Path) -> None:
    src, remote, back = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    src.write_bytes(b"\x00\x01 data")
    dut.copy_to(str(src), str(remote))
    dut.copy_from(str(remote), str(back))
    assert back.read_bytes() == b"\x00\x01 data"
    assert dut.get_memory_channels() == 4


def test_close_kills_and_is_idempotent(sshd: SshdHandle) -> None:
    for config in (local_dut_config(), ssh_config(sshd, memory_channels=2)):
        d = connect(config)
        assert d.get_memory_channels() == config.memory_channels
        d.send_expect("sleep 1000 &", "# ")
        bg = int(d.send_expect("echo $!", "# "))
        with LocalSession() as observer:
            d.close()
            d.close()
            assert not observer.pid_alive(bg)


def test_vm_dut_kill_all_and_vm_attributes(sshd: SshdHandle) -> None:
    class FakeVm:  # the hypervisor object; only its attributes are read here
        def __init__(self) -> None:
            self.vm_name = "vm0"
            self.pci_maps = [{"hostpci": "0000:81:02.0", "guestpci": "0000:00:04.0"}]
            self.phase_timings = {"qemu": 0.1, "ssh": 3.5}

    vm = FakeVm()
    from pytest_dtsvirt.session.ssh import SshSession

    session = SshSession(sshd.host, sshd.port, sshd.user, key_filename=sshd.key_path,
                         known_hosts=sshd.known_hosts)
    with VmDut(session, DutConfig(name="vm0-guest", host=sshd.host), vm) as vm_dut:
        assert isinstance(vm_dut, Dut)
        assert vm_dut.vm is vm and vm_dut.vm_name == "vm0"
        assert vm_dut.pci_maps == vm.pci_maps
        assert vm_dut.phase_timings == {"qemu": 0.1, "ssh": 3.5}
        vm_dut.send_expect("sleep 1000 &", "# ")
        bg = int(vm_dut.send_expect("echo $!", "# "))
        assert bg in vm_dut.kill_all()
        assert wait_gone(vm_dut, bg)


# -- pure helpers and the DUT config ----------------------------------------------------------

def test_clean_output() -> None:
    assert clean_output("a\r\nb\r\n[DTSVIRT]", "x") == "a\nb"
    assert clean_output("echo hi\r\nhi\r\n", "echo hi") == "hi"
    assert clean_output("", "x") == ""


GOOD = """\
# comment
[dut1]
host = 10.0.0.5
port: 2222
user = tester
key = ~/.ssh/id_ed25519
known_hosts = /etc/ssh/ssh_known_hosts
host_key_check = no
qemu = /opt/qemu/bin/qemu-system-x86_64
workdir = /var/tmp/dv
memory_channels = 6

[local]

[crb]
dut_ip = 10.0.0.6
dut_user = root
dut_passwd = pa;ss word
channels = 2
os = linux
tester_ip = 10.0.0.7
"""


def test_parse_dut_configs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        dut1, local, crb = parse_dut_configs(GOOD, "crbs.cfg")
    assert dut1.name == "dut1" and not dut1.is_local
    assert (dut1.host, dut1.port, dut1.user, dut1.host_key_check) == ("10.0.0.5", 2222,
                                                                      "tester", False)
    assert dut1.key is not None and dut1.key.endswith("/.ssh/id_ed25519")
    assert not dut1.key.startswith("~")
    assert (dut1.qemu, dut1.workdir, dut1.memory_channels) == (
        "/opt/qemu/bin/qemu-system-x86_64", "/var/tmp/dv", 6)
    assert local.is_local and local.memory_channels == 4 and local.qemu == "qemu-system-x86_64"
    assert local.workdir.startswith("/tmp/dtsvirt-")
    assert (crb.host, crb.user, crb.password, crb.memory_channels) == ("10.0.0.6", "root",
                                                                       "pa;ss word", 2)
    assert crb.workdir == "/tmp/dtsvirt-root"
    assert "pa;ss" not in repr(crb)
    assert "crbs.cfg:20: [crb] os" in caplog.text


@pytest.mark.parametrize(("text", "line", "section", "key", "message"), [
    ("[d]\nhostname = x\n", 2, "d", "hostname", r"unknown key; valid keys: host, port"),
    ("[d]\nport = 0\n", 2, "d", "port", r"must be a number 1-65535, not '0'"),
    ("[d]\nport = ssh\n", 2, "d", "port", r"must be a number"),
    ("[d]\nhost_key_check = maybe\n", 2, "d", "host_key_check", r"must be yes or no"),
    ("[d]\nmemory_channels = -1\n", 2, "d", "memory_channels", r"must be a positive"),
    ("[d]\nhost = a\nhost = b\n", 3, "d", "host", r"duplicate key \(first at line 2\)"),
    ("[d]\n[d]\n", 2, "d", None, r"duplicate section \(first at line 1\)"),
    ("host = a\n", 1, None, None, r"expected 'key = value' inside a \[section\]"),
    ("# nothing\n", None, None, None, r"no DUT section"),
    ("[d]\npassword = x\nkey = y\n", 1, "d", None, r"give either password or key"),
])
def test_dut_config_errors(text: str, line: int | None, section: str | None, key: str | None,
                           message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_dut_configs(text, "f.cfg")
    loc = info.value.location
    assert (loc.file, loc.line, loc.section, loc.key) == ("f.cfg", line, section, key)
    assert str(info.value).startswith(str(loc))


def test_dut_config_collects_every_problem() -> None:
    with pytest.raises(ConfigError) as info:
        parse_dut_configs("[a]\nbad = 1\nport = x\n", "f.cfg")
    assert str(info.value).splitlines() == [
        str(info.value.problems[0]), str(info.value.problems[1])]
    assert "f.cfg:2" in str(info.value) and "f.cfg:3" in str(info.value)


def test_guest_dut_config() -> None:
    cfg = guest_dut_config("vm0", "root", password="tester")
    assert (cfg.name, cfg.login, cfg.host_key_check, cfg.is_local) == ("vm0", "root", False,
                                                                       False)
    assert cfg.workdir == "/tmp/dtsvirt-root" and "tester" not in repr(cfg)


def test_load_dut_configs(tmp_path: Path) -> None:
    path = tmp_path / "duts.cfg"
    path.write_text(GOOD)
    assert [c.name for c in load_dut_configs(str(path))] == ["dut1", "local", "crb"]
    with pytest.raises(ConfigError, match=r"missing\.cfg: cannot read DUT config"):
        load_dut_configs(str(tmp_path / "missing.cfg"))


def test_parse_dut_spec() -> None:
    assert parse_dut_spec("local").is_local
    spec = parse_dut_spec("tester@dut5.lab:2200")
    assert (spec.user, spec.host, spec.port, spec.name) == ("tester", "dut5.lab", 2200,
                                                             "tester@dut5.lab:2200")
    assert (parse_dut_spec("10.1.2.3").port, parse_dut_spec("10.1.2.3").login) == (22, "root")
    assert parse_dut_spec("[fe80::1]:22").host == "fe80::1"
    for bad in ("a@b@c", "host:", "host:99999", "a b", "me@local"):
        with pytest.raises(ConfigError, match="--dut"):
            parse_dut_spec(bad)


def test_connect_over_ssh_with_config_file(sshd: SshdHandle, tmp_path: Path) -> None:
    path = tmp_path / "duts.cfg"
    path.write_text(f"[remote]\nhost = {sshd.host}\nport = {sshd.port}\nuser = {sshd.user}\n"
                    f"key = {sshd.key_path}\nknown_hosts = {sshd.known_hosts}\n")
    (config,) = load_dut_configs(str(path))
    with connect(config) as d:
        assert d.session.name == "remote"
        assert d.send_expect("echo remote-ok", "# ") == "remote-ok"
    bad = tmp_path / "bad_known_hosts"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True)
    kind, blob = (tmp_path / "k.pub").read_text().split()[:2]
    bad.write_text(f"[{sshd.host}]:{sshd.port} {kind} {blob}\n")
    with pytest.raises(SessionError, match="remote: host key mismatch"):
        connect(DutConfig(name="remote", host=sshd.host, port=sshd.port, user=sshd.user,
                          key=sshd.key_path, known_hosts=str(bad)))


# -- a real guest (busybox ash, dropbear without SFTP, no socat) -----------------------------

@pytest.fixture(scope="module")
def guest_dut() -> Iterator[VmDut]:
    from support.guest import booted, session_image, ssh

    from pytest_dtsvirt.session.ssh import SshSession

    with booted(session_image()) as vm, LocalSession() as host:
        ssh(vm).close()  # waits until the guest's SSH server answers
        session = SshSession.for_guest(name="vm0", sock=host.open_tcp("127.0.0.1", vm.ssh_port),
                                       user="root", password=vm.password)
        vm_dut = VmDut(session, guest_dut_config("vm0", "root", vm.password), vm)
        try:
            yield vm_dut
        finally:
            vm_dut.close()


@pytest.mark.slow
def test_guest_shell_survives_background_jobs(guest_dut: VmDut) -> None:
    """busybox ash exits when a background job ends while it reads input, unless the shell
    is set up with ignoreeof (Shell.sync does that)."""
    shell_pid = guest_dut.shell.pid
    guest_dut.send_expect("sleep 0.2 &", "# ")
    time.sleep(0.8)
    assert guest_dut.session.pid_alive(shell_pid)
    assert guest_dut.send_expect("echo still-here", "# ") == "still-here"


@pytest.mark.slow
def test_guest_kill_all(guest_dut: VmDut) -> None:
    session = guest_dut.session
    unrelated = session.spawn(["sleep", "1000"], stdout_path="/dev/null",
                              stderr_path="/dev/null")
    guest_dut.send_expect("sleep 1001 &", "# ")
    bg = int(guest_dut.send_expect("echo $!", "# "))
    alt = guest_dut.alt_session()
    alt.send_command("sleep 1002", timeout=0.3)
    spawned = guest_dut.spawn(["sleep", "1003"], stdout_path="/tmp/o", stderr_path="/tmp/e")
    daemon = int(guest_dut.send_expect(
        "sh -c 'setsid sleep 1004 </dev/null >/dev/null 2>&1 & echo $!'", "# "))
    assert session.proc_info(daemon) is not None
    killed = guest_dut.kill_all()
    assert {bg, spawned, daemon} <= set(killed)
    assert len(killed) == 4  # + alt's foreground sleep
    assert unrelated not in killed and session.pid_alive(unrelated)
    for pid in (bg, spawned, daemon):
        assert not session.pid_alive(pid), pid
    assert guest_dut.send_expect("echo main", "# ") == "main"
    assert alt.send_expect("echo alt", "# ") == "alt"
    assert session.kill(unrelated, signal.SIGKILL)


@pytest.mark.slow
def test_guest_files_timeouts_and_sockets(guest_dut: VmDut, tmp_path: Path) -> None:
    session = guest_dut.session
    data = bytes(range(256)) * 50
    session.write_file("/tmp/f", data, 0o640)  # no SFTP in the guest: cat over exec
    assert session.read_file("/tmp/f") == data
    assert session.run(["stat", "-c", "%a", "/tmp/f"]).stdout == "640\n"
    (tmp_path / "up").write_bytes(data[::-1])
    guest_dut.copy_to(str(tmp_path / "up"), "/tmp/up")
    guest_dut.copy_from("/tmp/up", str(tmp_path / "down"))
    assert (tmp_path / "down").read_bytes() == data[::-1]
    with pytest.raises(SessionError, match="timed out"):
        session.run(["sh", "-c", "echo $$ > /tmp/pid; exec sleep 100"], timeout=1)
    assert not session.pid_alive(int(session.read_file("/tmp/pid")))
    with pytest.raises(SessionError, match="socat is not installed"):
        session.open_unix("/tmp/any.sock")
