"""Live migration on one DUT (legacy vhost_user_live_migration): a target waiting with
``-incoming`` on the loopback, start_migration / wait_migration_done, then the migrated
guest usable on the target; vhost-user backends on both sides; a failed migration names
qemu's reason and leaves nothing."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from support.runtime import assert_nothing_left, make_vm, write_cfg

from pytest_dtsvirt.dpdk.vhost import TestpmdBackend
from pytest_dtsvirt.errors import ConfigError, MigrationError
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.qemu.livemig import listening_port
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
    """The target's memory differs from the source's: its qemu refuses the stream; the
    source's migration fails (the guest runs on there), migrated_start() raises the
    target's failure with what qemu said, and the target is gone."""
    source, target = _pair(dut, tmp_path)
    target.set_vm_param("mem", size="384")
    try:
        vm_dut = source.start()
        target.start_incoming()
        assert target.migrate_port is not None
        with pytest.raises(MigrationError) as src:
            source.start_migration("127.0.0.1", target.migrate_port)
            source.wait_migration_done(timeout=60)
        assert src.value.status == "failed" and str(src.value).strip(), src.value
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
