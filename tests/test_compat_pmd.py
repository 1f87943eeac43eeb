"""compat.PmdOutput and VhostUserPmd with the real dpdk-testpmd on the local DUT (no guest):
start in a session, legacy readers, a failed start, quit leaving nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_dtsvirt.compat import PmdOutput, VhostUserPmd
from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.dut import Dut

pytestmark = pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                                reason="dpdk-testpmd missing (Debian package dpdk-dev)")


def test_pmd_output_in_a_session(dut: Dut) -> None:
    session = dut.new_session("pmd")
    pmd = PmdOutput(dut, session)
    out = pmd.start_testpmd(param="--nb-cores=1", no_pci=True, vdevs=["net_null0", "net_null1"],
                            prefix="compat-pmd", fixed_prefix=True)
    assert "--file-prefix=compat-pmd" in pmd.get_pmd_cmd() and "--no-pci" in pmd.command
    assert "Configuring Port 0" in out
    assert "Set io packet forwarding mode" in pmd.execute_cmd("set fwd io")
    pmd.execute_cmd("start")
    stats = pmd.get_pmd_stats(0)
    assert stats["RX-packets"] is not None and stats["RX-packets"] > 0  # net_null makes traffic
    assert stats["Bad-ipcsum"] is None  # not printed outside csum forwarding, as legacy
    assert pmd.port_stats(1).tx_packets > 0
    assert pmd.get_port_link_status(0) == "up"
    assert len(pmd.get_port_mac(0)) == 17
    # the legacy session keeps talking to testpmd, as suites do
    assert "NIC statistics for port 1" in session.send_expect("show port stats 1", "testpmd> ")
    session.send_expect("stop", "testpmd> ")
    pmd.quit()
    assert session.send_expect("pwd", "# ") == dut.base_dir  # back in the shell
    assert not Path("/var/run/dpdk/compat-pmd").exists()


def test_pmd_output_failed_start(dut: Dut) -> None:
    pmd = PmdOutput(dut)
    with pytest.raises(SessionError, match="testpmd exited"):
        pmd.start_testpmd(param="--no-such-option", no_pci=True, vdevs=["net_null0"])
    assert dut.send_expect("echo shell", "# ") == "shell"


def test_vhost_user_pmd_binds_its_sockets(dut: Dut) -> None:
    pmd = VhostUserPmd(dut, dut.new_session("vhost"))
    out = pmd.start(["vhost-net0", "vhost-net1"], queues=2, devargs={"tso": 1},
                    param="--nb-cores=1 --rxq=2 --txq=2")
    assert "net_vhost0,iface=vhost-net0,queues=2,tso=1" in pmd.command
    assert (Path(dut.base_dir) / "vhost-net0").is_socket()
    assert (Path(dut.base_dir) / "vhost-net1").is_socket()
    assert "--log-level=lib.vhost.config:notice" in pmd.command  # see start_testpmd
    assert "Configuring Port 1" in out
    pmd.quit()
    # client=1: testpmd connects later (qemu is the server); nothing to wait for
    client = VhostUserPmd(dut)
    client.start([f"{dut.base_dir}/vhost-c0"], devargs=[{"client": 1}])
    assert "client=1" in client.command
    dut.kill_all()  # ends testpmd by PID (it carries the DUT's tag), as tear_down does
    assert dut.send_expect("echo after", "# ") == "after"
