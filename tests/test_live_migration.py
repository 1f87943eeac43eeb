"""Live migration on one DUT (legacy vhost_user_live_migration): a target waiting with
``-incoming`` on the loopback, start_migration / wait_migration_done, then the migrated
guest usable on the target; vhost-user backends on both sides; a failed migration names
qemu's reason and leaves nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from support.runtime import assert_nothing_left, make_vm, write_cfg

from pytest_dtsvirt.dpdk.vhost import TestpmdBackend
from pytest_dtsvirt.errors import ConfigError, MigrationError
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.qemu.livemig import LiveMigration, listening_port
from pytest_dtsvirt.session.dut import Dut, VmDut

MAC = "00:00:20:00:00:40"
CFG = """\
[host]
login =
    user=root,password=tester;
[backup]
login =
    user=root,password=tester;
migration =
    enable=yes,port=0;
"""


def test_listening_port_from_query_migrate() -> None:
    assert listening_port({"status": "setup", "socket-address": [
        {"type": "inet", "host": "127.0.0.1", "port": "40123"}]}) == 40123
    with pytest.raises(MigrationError, match="did not report its port"):
        listening_port({"status": "setup"})


def _vhost_rx(vm_dut: VmDut, pmd: TestpmdBackend) -> int:
    """ARP requests from the guest's vhost-user NIC until ``pmd`` counts some (bounded)."""
    nic = vm_dut.send_expect(
        f"for n in /sys/class/net/*; do [ $(cat $n/address) = {MAC} ] && basename $n; done",
        "# ").split()[-1]
    vm_dut.send_expect(f"ip link set {nic} up; ip addr add 10.78.0.1/24 dev {nic} 2>/dev/null;"
                       " true", "# ")
    deadline = time.monotonic() + 30
    while True:
        vm_dut.send_expect("ping -c 2 -W 1 10.78.0.2 >/dev/null 2>&1; true", "# ", timeout=20)
        rx = pmd.port_stats(0).rx_packets
        if rx > 0 or time.monotonic() > deadline:
            return rx
        time.sleep(0.5)


def _pair(dut: Dut, tmp_path: Path) -> tuple[QEMUKvm, QEMUKvm]:
    cfg = write_cfg(tmp_path, CFG, suite="migr")
    return make_vm(dut, cfg, "host"), make_vm(dut, cfg, "backup")


def test_live_migration_of_a_real_guest_with_vhost_user(dut: Dut, tmp_path: Path) -> None:
    if shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed (Debian package dpdk-dev)")
    source, target = _pair(dut, tmp_path)
    with TestpmdBackend(dut.session, ports=1) as pmd_src, \
            TestpmdBackend(dut.session, ports=1) as pmd_dst:
        source.set_vm_device(driver="vhost-user", opt_path=pmd_src.socket_paths[0],
                             opt_mac=MAC)
        target.set_vm_device(driver="vhost-user", opt_path=pmd_dst.socket_paths[0],
                             opt_mac=MAC)
        for pmd in (pmd_src, pmd_dst):
            pmd.set_fwd("rxonly")
            pmd.start()
        try:
            vm_dut = source.start()
            vm_dut.send_expect("echo before-migration > /tmp/mark", "# ")
            assert _vhost_rx(vm_dut, pmd_src) > 0
            target.start_incoming()
            assert target.migrate_port is not None and target.migrate_port > 0
            assert any(a == "tcp:127.0.0.1:0" for a in target.argv)  # loopback only
            assert source.start_migration("127.0.0.1", target.migrate_port) is True
            assert source.wait_migration_done() is True
            assert source.qmp.query_status() == "postmigrate"
            moved = target.migrated_start()
            assert moved.send_expect("cat /tmp/mark", "# ").splitlines()[-1].strip() == \
                "before-migration"
            rx_src = pmd_src.port_stats(0).rx_packets
            assert _vhost_rx(moved, pmd_dst) > 0, "no packet reached the target's backend"
            assert pmd_src.port_stats(0).rx_packets == rx_src  # the source's guest is gone
            source.stop()  # independent of the target: it runs on
            assert moved.send_expect("echo still", "# ").splitlines()[-1].strip() == "still"
        finally:
            source.stop()
            target.stop()
    assert_nothing_left(source)
    assert_nothing_left(target)


def test_failed_migration_names_qemus_reason_and_leaves_nothing(dut: Dut,
                                                                 tmp_path: Path) -> None:
    source, target = _pair(dut, tmp_path)
    try:
        vm_dut = source.start()
        target.start_incoming()
        port = target.migrate_port
        assert port is not None
        target.stop()  # nothing listens there any more
        with pytest.raises(MigrationError) as info:
            source.start_migration("127.0.0.1", port)
            source.wait_migration_done(timeout=30)
        assert "Connection refused" in str(info.value), str(info.value)
        assert info.value.status == "failed"
        # the source guest runs on, untouched
        assert source.qmp.query_status() == "running"
        assert vm_dut.send_expect("echo alive", "# ").splitlines()[-1].strip() == "alive"
    finally:
        source.stop()
        target.stop()
    assert_nothing_left(source)
    assert_nothing_left(target)


def test_a_target_started_like_a_normal_vm_is_a_clear_error(dut: Dut, tmp_path: Path) -> None:
    _, target = _pair(dut, tmp_path)
    with pytest.raises(ConfigError, match="start_incoming"):
        target.start()
    assert_nothing_left(target)


def test_a_target_that_cannot_load_the_stream_is_stopped_with_qemus_reason(
        dut: Dut, tmp_path: Path) -> None:
    """The target's memory differs from the source's: its qemu refuses the stream. The
    source's qemu may report the migration failed (the target hung up) or completed (all
    sent before the target read it); either way wait_migration_done() raises with the
    target's reason in qemu's words, the source guest runs on, migrated_start() raises the
    same, and the target is gone."""
    source, target = _pair(dut, tmp_path)
    target.set_vm_param("mem", size="384")
    try:
        vm_dut = source.start()
        target.start_incoming()
        assert target.migrate_port is not None
        with pytest.raises(MigrationError) as src:
            source.start_migration("127.0.0.1", target.migrate_port)
            source.wait_migration_done(timeout=60)
        assert src.value.status == "failed", src.value
        assert "the target backup could not load it" in str(src.value), src.value
        assert "Size mismatch: pc.ram" in str(src.value), src.value
        assert source.qmp.query_status() == "running"
        with pytest.raises(Exception) as dst:
            target.migrated_start(timeout=120)
        text = str(dst.value)
        assert "backup" in text and "load of migration failed" in text, text  # qemu said it
        assert "Size mismatch: pc.ram" in text, text
        assert vm_dut.send_expect("echo alive", "# ").splitlines()[-1].strip() == "alive"
    finally:
        source.stop()
        target.stop()
    assert_nothing_left(source)
    assert_nothing_left(target)


class _FakeQmp:
    """query-migrate answers ``status``; records the other commands."""

    def __init__(self, status: str) -> None:
        self.status, self.calls = status, []  # type: list[str]

    def execute(self, name: str, args: object = None, timeout: float | None = None) -> object:
        self.calls.append(name)
        return {"status": self.status} if name == "query-migrate" else {}

    def cont(self) -> None:
        self.calls.append("cont")


class _Vm(LiveMigration):
    def __init__(self, name: str, qmp: _FakeQmp) -> None:
        self.vm_name, self._fake = name, qmp
        self._vm_dut = self._agent = self._qmp = self._proc = None

    @property
    def qmp(self) -> Any:
        return self._fake


def test_a_completed_send_to_a_target_that_failed_resumes_the_source() -> None:
    """qemu's "completed" on the source only means all was sent: when the target of this
    process failed to load it, the source guest is resumed and the error names why."""
    import threading

    from pytest_dtsvirt.qemu import livemig

    source, target = _Vm("host", _FakeQmp("completed")), _Vm("backup", _FakeQmp("setup"))
    target._loaded = threading.Event()
    target._loaded.set()
    target._load_error = "incoming migration: qemu said: Size mismatch"
    livemig._TARGETS[45000] = target
    try:
        assert source.start_migration("127.0.0.1", 45000) is True
    finally:
        livemig._TARGETS.pop(45000)
    with pytest.raises(MigrationError) as info:
        source.wait_migration_done(timeout=1)
    assert str(info.value) == ("host: migration: the target backup could not load it: "
                               "incoming migration: qemu said: Size mismatch; this VM's guest "
                               "runs on")
    assert source.qmp.calls[-1] == "cont" and not source.migration_done
    target._load_error = None  # loaded: the migration is done
    assert source.wait_migration_done(timeout=1) is True and source.migration_done
