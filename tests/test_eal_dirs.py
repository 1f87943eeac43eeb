"""A Dut removes the EAL runtime directories of the file prefixes its
``create_eal_parameters`` handed out when it closes (after ``kill_all``), and only those:
real dpdk-testpmd on the local DUT (root: ``/var/run/dpdk/<prefix>``)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_dtsvirt.session.dut import Dut

pytestmark = [
    pytest.mark.skipif(shutil.which("dpdk-testpmd") is None,
                       reason="dpdk-testpmd missing (Debian package dpdk-dev)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="EAL's runtime directory of root is tested"),
]
RUN_DIR = Path("/var/run/dpdk")
#: a small testpmd: no NIC, no hugepages
EAL_EXTRA = "--no-huge -m 256"
APP_ARGS = "-- -i --total-num-mbufs=2048"


@pytest.fixture
def foreign_dirs() -> Iterator[list[Path]]:
    """Runtime directories of prefixes no Dut handed out (cleaned up by the test)."""
    made: list[Path] = []
    yield made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def make_foreign(made: list[Path], prefix: str) -> Path:
    path = RUN_DIR / prefix
    path.mkdir(parents=True, mode=0o700)
    (path / "config").write_text("someone else's")
    made.append(path)
    return path


def test_close_removes_the_runtime_dirs_of_its_prefixes(dut: Dut,
                                                        foreign_dirs: list[Path]) -> None:
    eal = dut.create_eal_parameters(prefix="evt", no_pci=True, vdevs=["net_null0"],
                                    other_eal_param=EAL_EXTRA)
    prefix = f"evt_{dut.prefix_subfix}"
    assert f"--file-prefix={prefix} " in eal and dut.eal_prefixes == (prefix,)
    # a suite's own command line, in its own shell (not PmdOutput, which removes its own)
    dut.send_expect(f"dpdk-testpmd {eal} {APP_ARGS}", "testpmd> ", 120)
    assert (RUN_DIR / prefix / "config").is_file()
    # same suffix, other prefix; and an unrelated one: neither was handed out
    same_suffix = make_foreign(foreign_dirs, f"other_{dut.prefix_subfix}")
    unrelated = make_foreign(foreign_dirs, f"dtsvirt-foreign-{secrets.token_hex(4)}")
    dut.close()  # kill_all ends testpmd (it leaves its directory), then the removal
    assert not (RUN_DIR / prefix).exists()
    assert (same_suffix / "config").read_text() == "someone else's"
    assert (unrelated / "config").read_text() == "someone else's"


def test_a_prefix_in_use_by_another_process_is_left(dut: Dut, tmp_path: Path) -> None:
    prefix = f"dtsvirt-evt-{secrets.token_hex(4)}"
    eal = dut.create_eal_parameters(prefix=prefix, fixed_prefix=True, no_pci=True,
                                    vdevs=["net_null0"], other_eal_param=EAL_EXTRA)
    # a testpmd this DUT did not start takes the (fixed) prefix
    out = tmp_path / "testpmd.out"
    with out.open("wb") as sink:
        other = subprocess.Popen(["dpdk-testpmd", *eal.split(), *APP_ARGS.split()],
                                 stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            if "testpmd> " in out.read_text(errors="replace") or other.poll() is not None:
                break
            time.sleep(0.1)
        assert "testpmd> " in out.read_text(errors="replace"), out.read_text()
        dut.close()
        assert (RUN_DIR / prefix / "config").is_file()  # in use: left in place
    finally:
        other.kill()
        other.wait()
        shutil.rmtree(RUN_DIR / prefix, ignore_errors=True)


def test_nothing_handed_out_runs_nothing(dut: Dut, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(dut.session, "run", lambda *a, **k: calls.append(a))
    dut._remove_eal_dirs()
    assert calls == []


@pytest.mark.parametrize("prefix", ["..", "../../etc", "a/b", "x y", "."])
def test_only_plain_prefixes_are_recorded(dut: Dut, prefix: str) -> None:
    dut.create_eal_parameters(cores=[0], no_pci=True, prefix=prefix, fixed_prefix=True)
    assert dut.eal_prefixes == ()
    dut.create_eal_parameters(cores=[0], no_pci=True, prefix="ok-1.x_2", fixed_prefix=True)
    assert dut.eal_prefixes == ("ok-1.x_2",)
