"""``build_dpdk_apps`` on a guest without a compiler: built on the VM's host DUT, installed in
the guest with the DPDK libraries it lacks (``session/appbuild.py``). The loader-trace parser
on captured output, and a real DPDK guest running the installed ``l3fwd-power``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.runtime import DPDK_VM, assert_nothing_left, make_vm, write_cfg

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.appbuild import parse_trace
from pytest_dtsvirt.session.dut import Dut, VmDut

# LD_TRACE_LOADED_OBJECTS=1 on l3fwd-power in the DPDK test guest before the install (glibc
# 2.36, Debian 12): the libraries dpdk-testpmd does not need are missing there
GUEST_TRACE = """\
\tlinux-vdso.so.1 (0x00007ffd4b5f2000)
\tlibrte_power.so.23 => not found
\tlibrte_lpm.so.23 => not found
\tlibrte_ethdev.so.23 => /usr/lib/x86_64-linux-gnu/librte_ethdev.so.23 (0x00007f0c5a1d2000)
\tlibrte_eal.so.23 => /usr/lib/x86_64-linux-gnu/librte_eal.so.23 (0x00007f0c5a0b7000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c59ed6000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c5a2f5000)
"""


def test_parse_trace_found_missing_and_errors() -> None:
    trace = parse_trace(GUEST_TRACE)
    assert trace.missing == ["librte_power.so.23", "librte_lpm.so.23"]
    assert trace.found["librte_eal.so.23"] == "/usr/lib/x86_64-linux-gnu/librte_eal.so.23"
    assert "linux-vdso.so.1" not in trace.found and trace.errors == []
    bad = parse_trace("./x: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found "
                      "(required by ./x)\n")
    assert bad.missing == [] and bad.errors and "GLIBC_2.38" in bad.errors[0]
    assert parse_trace("") == parse_trace("\n\n")


class _NoTools(Dut):
    """A DUT whose checks find no toolchain (the error path: nothing is made on the DUT)."""

    def __init__(self, base: Dut, host: Dut | None) -> None:
        self.__dict__.update(base.__dict__)
        self._host = host

    def _missing_build_tools(self, name: str) -> list[str]:
        return ["no make", "no cc"]

    def _build_host(self) -> Dut | None:
        return self._host


def test_build_errors_name_both_duts(dut: Dut) -> None:
    with pytest.raises(SessionError, match=r"cannot build examples/l3fwd-power: no make; no cc$"):
        _NoTools(dut, None).build_dpdk_apps("examples/l3fwd-power")
    with pytest.raises(SessionError, match=r"no make; no cc; nor on .*: no make; no cc"):
        _NoTools(dut, _NoTools(dut, None)).build_dpdk_apps("examples/l3fwd-power")


@pytest.fixture
def dpdk_vm_dut(dut: Dut, tmp_path: Path) -> Iterator[VmDut]:
    vm = make_vm(dut, write_cfg(tmp_path, DPDK_VM, suite="appbuild"), boot_timeout=180.0)
    try:
        yield vm.start()
    finally:
        vm.stop()
    assert_nothing_left(vm)


@pytest.mark.slow
def test_build_dpdk_apps_in_a_guest_without_compiler(dut: Dut, dpdk_vm_dut: VmDut) -> None:
    vm_dut = dpdk_vm_dut
    assert vm_dut.run(["sh", "-c", "command -v cc make"]).stdout.strip() == ""  # no toolchain
    out = vm_dut.build_dpdk_apps("examples/l3fwd-power")
    assert "l3fwd-power" in out
    app = vm_dut.apps_name["l3fwd-power"]
    assert app == "examples/l3fwd-power/build/l3fwd-power"  # relative to base_dir
    program = f"{vm_dut.base_dir}/{app}"
    libs = vm_dut.run(["ls", f"{vm_dut.base_dir}/examples/l3fwd-power/build/lib"]).stdout.split()
    assert "librte_power.so.23" in libs and "librte_eal.so.23" not in libs, libs
    # the host's build directory is gone (only the guest keeps the program)
    assert dut.run(["sh", "-c", f'ls -d "{dut.base_dir}"/build-* 2>/dev/null; exit 0']
                   ).stdout.strip() == ""
    # it really starts in the guest: EAL, then the example's own option parsing
    run = vm_dut.run(["sh", "-c", f'timeout 60 "{program}" --no-pci --no-huge -m 64 '
                      "--vdev net_null0 -- -p 1 --config '(0,0,0)' --no-numa 2>&1; exit 0"],
                     timeout=120)
    assert "EAL: Detected" in run.stdout, run.stdout
    assert "L3FWD_POWER: Selected operation mode" in run.stdout, run.stdout
    # the legacy idiom in the guest's shell (in base_dir): EAL's usage names the program
    cmd = "./%s -h 2>&1 | grep -m1 Usage:" % app  # noqa: UP031 (the legacy idiom)
    out = vm_dut.send_expect(cmd, "# ", 120)
    assert f"Usage: ./{app} [options]" in out, out
