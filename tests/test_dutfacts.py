"""A VM's config against its DUT's facts (online CPUs, free hugepages, files): reported as
``FILE:LINE: [section] key: message`` by ``dtsvirt check --dut`` and at every start, before
qemu runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.runtime import make_vm, write_cfg
from support.sshd import SshdHandle

from pytest_dtsvirt.cli import main
from pytest_dtsvirt.cli.command import EXIT_FAIL, EXIT_OK
from pytest_dtsvirt.config.load import VmParams, call_origin
from pytest_dtsvirt.errors import ConfigError, Location
from pytest_dtsvirt.qemu.dutfacts import DutFacts, parse_cpu_list, parse_meminfo, problems
from pytest_dtsvirt.session.dut import Dut

ONLINE = sorted(parse_cpu_list(Path("/sys/devices/system/cpu/online").read_text()) or [])
ABSENT = max(ONLINE) + 100


def test_parse_cpu_list_and_meminfo() -> None:
    assert parse_cpu_list("0-3,6\n") == frozenset({0, 1, 2, 3, 6})
    assert parse_cpu_list("0") == frozenset({0})
    assert parse_cpu_list("x-1") is None
    assert parse_meminfo("HugePages_Free:      12\nHugepagesize:       2048 kB\n") == (12, 2048)
    assert parse_meminfo("MemTotal: 1 kB\n") == (None, None)


@pytest.mark.parametrize(("add", "facts", "message", "key"), [
    (("cpu", {"number": "2", "cpupin": "1 9"}), DutFacts("d1", frozenset({0, 1}), "0-1"),
     "cpupin names CPU 9 that DUT d1 does not have online (online: 0-1)", "cpu"),
    (("mem", {"size": "1024", "hugepage": "yes"}),
     DutFacts("d1", None, hugepages_free=100, hugepage_kb=2048),
     "hugepage=yes with size=1024 needs 512 free 2048 kB hugepages; DUT d1 has 100 free", "mem"),
    (("disk", {"file": "/img/a.qcow2"}), DutFacts("d1", None,
                                                   missing_files=frozenset({"/img/a.qcow2"})),
     "file /img/a.qcow2 does not exist on DUT d1", "disk"),
])
def test_problems_name_the_entry(add: tuple[str, dict[str, str]], facts: DutFacts,
                                 message: str, key: str) -> None:
    params = VmParams("vm0")
    params.add(add[0], add[1], call_origin(add[0]))
    spec, _ = params.build()
    (problem,) = problems(spec, facts, lambda k, i: params.origins(k)[i])
    assert message in problem.message
    assert problem.location == params.origins(key)[0] and problem.location.key == key
    fits = DutFacts("d1", frozenset(range(16)), "0-15", hugepages_free=10_000,
                    hugepage_kb=2048)
    assert problems(spec, fits, lambda k, i: Location(key=k)) == []


def _cfg(tmp_path: Path, extra: str) -> Path:
    return write_cfg(tmp_path, "[vm0]\nlogin =\n    user=root,password=tester;\n" + extra)


def test_check_reports_dut_problems_with_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such.img"
    cfg = _cfg(tmp_path, f"cpu =\n    number=1,cpupin={ABSENT};\nmem =\n    size=64,"
                         f"hugepage=yes;\ndisk =\n    file={missing};\n")
    assert main(["check", str(cfg), "vm0", "--dut", "local", "--accel", "tcg"]) == EXIT_FAIL
    out = capsys.readouterr().out.splitlines()
    want = [f"{cfg}:5: [vm0] cpu: cpupin names CPU {ABSENT} that DUT local does not have "
            f"online (online: ",
            f"{cfg}:9: [vm0] disk: file {missing} does not exist on DUT local"]
    for w in want:
        assert any(line.startswith(w) for line in out), (w, out)
    free, _ = parse_meminfo(Path("/proc/meminfo").read_text())
    if free is not None and free < 32:  # this machine reserves no hugepages (the usual)
        assert any(line.startswith(f"{cfg}:7: [vm0] mem: hugepage=yes with size=64 needs 32 "
                                   "free") for line in out), out


def test_check_passes_the_facts_of_a_fitting_config(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _cfg(tmp_path, f"cpu =\n    number=1,cpupin={ONLINE[0]};\n")
    assert main(["check", str(cfg), "vm0", "--dut", "local", "--accel", "tcg"]) == EXIT_OK
    assert "CPUs, hugepages and files are there" in capsys.readouterr().err


def test_start_refuses_an_absent_cpu_before_qemu_runs(dut: Dut, tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, f"cpu =\n    number=1,cpupin={ABSENT};\n")
    vm = make_vm(dut, cfg)
    with pytest.raises(ConfigError) as info:
        vm.start()
    assert str(info.value).startswith(f"{cfg}:5: [vm0] cpu: cpupin names CPU {ABSENT}")
    assert vm.run_dir is None  # checked before anything was made: no qemu, no run dir


def test_check_on_an_ssh_dut_reads_that_duts_facts(
        sshd: SshdHandle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Over SSH: the facts come from the DUT (a file that exists there passes, one that
    does not is named with its cfg line); qemu's own check is left to a local DUT."""
    here = tmp_path / "there.img"
    here.write_bytes(b"")  # the SSH DUT is this machine: the file is there
    duts = tmp_path / "duts.cfg"
    duts.write_text(f"[far]\nhost = {sshd.host}\nport = {sshd.port}\nuser = {sshd.user}\n"
                    f"key = {sshd.key_path}\nknown_hosts = {sshd.known_hosts}\n")
    fits = _cfg(tmp_path, f"disk =\n    file={here};\n")
    assert main(["check", str(fits), "vm0", "--duts", str(duts)]) == EXIT_OK
    assert "DUT far: the config fits" in capsys.readouterr().out
    gone = tmp_path / "gone.img"
    bad = write_cfg(tmp_path, f"[vm0]\ndisk =\n    file={gone};\n", suite="bad")
    assert main(["check", str(bad), "vm0", "--duts", str(duts), "--dut", "far"]) == EXIT_FAIL
    assert capsys.readouterr().out.strip() == \
        f"{bad}:3: [vm0] disk: file {gone} does not exist on DUT far"
