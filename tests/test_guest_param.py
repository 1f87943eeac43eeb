"""The ``guest`` VM parameter: cfg/marker/set_vm_guest vocabulary, its effect on the argv,
misuse errors, and a real DPDK guest started by the framework running testpmd."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.runtime import assert_nothing_left, local_dut, make_vm, write_cfg

from pytest_dtsvirt.config.cfgfile import parse_cfg
from pytest_dtsvirt.config.guestopt import runs_dpdk
from pytest_dtsvirt.config.load import VmParams, apply_overrides, params_for_section
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.guest import GuestImage
from pytest_dtsvirt.qemu.argv import build_argv
from pytest_dtsvirt.qemu.placement import Placement
from pytest_dtsvirt.session.dut import Dut, connect
from pytest_dtsvirt.session.dutconfig import local_dut_config

TCG = Placement(run_dir="/run/d", accel="tcg", hostfwd_port=2222, qemu="/usr/bin/qemu")
KVM = Placement(run_dir="/run/d", accel="kvm", hostfwd_port=2222, qemu="/usr/bin/qemu")
IMAGE = GuestImage(kernel="/g/vmlinuz", vmlinux="/g/vmlinux", initrd="/g/initrd.img",
                   append="console=ttyS0", disk=None, key="k", packages={})


def params(text: str) -> VmParams:
    cfg = parse_cfg(text, "t.cfg")
    return params_for_section(cfg.sections[0], "t.cfg")


def spec(text: str) -> VmSpec:
    return params(text).build()[0]


def argv(s: VmSpec, p: Placement = TCG) -> list[str]:
    return build_argv(s.with_guest(IMAGE), p)


def after(a: list[str], flag: str) -> str:
    return a[a.index(flag) + 1]


def test_dpdk_yes_defaults_cpu_smp_mem_and_hugepages() -> None:
    s = spec("[vm0]\nguest = dpdk=yes;\n")
    assert (s.guest.dpdk, s.guest.hugepages) == (True, 256)
    a = argv(s)
    assert after(a, "-cpu") == "max" and after(a, "-smp") == "2" and after(a, "-m") == "1024"
    assert after(a, "-append").endswith(" hugepages=256")
    assert after(argv(s, KVM), "-cpu") == "host"


def test_the_cfg_wins_over_the_dpdk_defaults() -> None:
    s = spec("[vm0]\nguest = dpdk=yes,hugepages=64;\ncpu = model=Nehalem,number=3;\n"
             "mem = size=2048;\n")
    a = argv(s)
    assert after(a, "-cpu") == "Nehalem" and after(a, "-smp") == "3" and after(a, "-m") == "2048"
    assert after(a, "-append").endswith(" hugepages=64")
    # an explicit number=1 is kept (the cfg says so)
    assert after(argv(spec("[vm0]\nguest = dpdk=yes;\ncpu = number=1;\n")), "-smp") == "1"


def test_base_guest_with_hugepages_and_default_no() -> None:
    s = spec("[vm0]\nguest = hugepages=32;\n")
    a = argv(s)
    assert not s.guest.dpdk and after(a, "-cpu") == "qemu64,+rdrand" and after(a, "-smp") == "1"
    # mem grows to 2 MB x 32 + 512 MB when the cfg leaves it open
    assert after(a, "-append").endswith(" hugepages=32") and after(a, "-m") == "576"
    plain = argv(spec("[vm0]\nlogin = user=root;\n"))
    assert "hugepages" not in after(plain, "-append")


def test_cpu_model_without_sse42_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        spec("[vm0]\nguest = dpdk=yes;\ncpu = model=qemu64,number=2;\n")
    msg = str(info.value)
    assert "vm0" in msg and "model=qemu64" in msg and "SSE4.2" in msg and "dpdk=yes" in msg
    assert "drop model=" in msg and "t.cfg" in msg, msg


def test_hugepages_larger_than_mem_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as info:
        spec("[vm0]\nguest = dpdk=yes;\nmem = size=512;\n")
    msg = str(info.value)
    assert "vm0" in msg and "size=512" in msg and "hugepages=256" in msg
    assert "size=768 or more" in msg, msg


def test_disk_yes_boots_the_test_guest_disk_without_a_kernel() -> None:
    s = spec("[vm0]\nguest = disk=yes;\n")
    assert s.guest.disk and s.uses_default_guest
    image = GuestImage(kernel="/g/vmlinuz", vmlinux="/g/vmlinux", initrd="/g/initrd.img",
                       append="console=ttyS0", disk="/g/disk.qcow2", key="k", packages={})
    g = s.with_guest(image)
    assert g.default_guest and g.uses_default_guest and g.kernel is None
    a = build_argv(g, TCG)
    assert "-kernel" not in a and "-append" not in a
    assert after(a, "-drive") == "file=/g/disk.qcow2,format=qcow2,if=virtio,snapshot=on"


@pytest.mark.parametrize(("text", "words"), [
    ("guest = disk=yes,hugepages=8;\n", ("disk=yes", "hugepages=8", "drop hugepages")),
    ("guest = disk=yes,dpdk=yes;\n", ("disk=yes", "hugepages=256", "drop hugepages")),
    ("guest = disk=yes;\ndisk = file=/x.img;\n", ("disk=yes", "its own disk or kernel")),
])
def test_disk_yes_misuse_is_a_clear_error(text: str, words: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        spec("[vm0]\n" + text)
    msg = str(info.value)
    assert "vm0" in msg and "t.cfg" in msg and all(w in msg for w in words), msg


def test_marker_and_set_vm_guest_vocabulary() -> None:
    p = params("[vm0]\nlogin = user=root;\n")
    apply_overrides(p, {"guest": {"dpdk": "yes", "hugepages": 128}}, "@pytest.mark.vm")
    s = p.build()[0]
    assert (s.guest.dpdk, s.guest.hugepages, s.cpu.number) == (True, 128, 2)
    p = params("[vm0]\nlogin = user=root;\n")
    with pytest.raises(ConfigError, match=r"dpdk.*yes or no"):
        apply_overrides(p, {"guest": {"dpdk": "maybe"}}, "@pytest.mark.vm")
        p.build()


def test_set_vm_guest_on_an_unstarted_vm(tmp_path: Path) -> None:
    dut = connect(local_dut_config())
    try:
        vm = make_vm(dut, write_cfg(tmp_path))
        vm.set_vm_guest(dpdk="yes", hugepages="300")
        s = vm.params.build()[0]
        assert (s.guest.dpdk, s.guest.hugepages, s.cpu.number, s.mem.size_mb) == (
            True, 300, 2, 1112)
    finally:
        dut.close()


def test_runs_dpdk_models() -> None:
    for model in ("max", "host", "Nehalem", "Skylake-Client-v4", "EPYC-Rome",
                  "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt"):
        assert runs_dpdk(model), model
    for model in ("qemu64", "qemu64,+rdrand", "kvm64", "Penryn", "max,-sse4.2",
                  "qemu64,+sse4.2"):
        assert not runs_dpdk(model), model


# ---- a real DPDK guest started by the framework ----------------------------------------------

DPDK_VM = """\
[vm0]
login =
    user=root,password=tester;
guest =
    dpdk=yes;
device =
    driver=virtio-net-pci,opt_mac=52:54:00:d1:00:01,opt_addr=4;
    driver=virtio-net-pci,opt_mac=52:54:00:d1:00:02,opt_addr=5;
"""
BIND = ("ok=0; for d in 0000:00:04.0 0000:00:05.0; do "
        "echo uio_pci_generic > /sys/bus/pci/devices/$d/driver_override && "
        "echo $d > /sys/bus/pci/devices/$d/driver/unbind && "
        "echo $d > /sys/bus/pci/drivers_probe && ok=$((ok + 1)); done; ")


dut = pytest.fixture(scope="module", name="dut")(local_dut)  # one DUT for the module


@pytest.mark.slow
def test_dpdk_guest_from_the_cfg_runs_testpmd_on_its_ports(dut: Dut, tmp_path: Path) -> None:
    vm = make_vm(dut, write_cfg(tmp_path, DPDK_VM), boot_timeout=180.0)
    try:
        vm_dut = vm.start()
        assert vm_dut is not None
        out = vm_dut.send_expect("grep -c . /proc/cpuinfo >/dev/null; nproc; "
                                 "grep HugePages_Total /proc/meminfo; grep -o sse4_2 "
                                 "/proc/cpuinfo | head -1", "# ")
        assert "2" in out.split() and "HugePages_Total:     256" in out and "sse4_2" in out, out
        out = vm_dut.send_expect(BIND + "echo bound=$ok", "# ", timeout=30)
        assert "bound=2" in out, out
        out = vm_dut.send_expect("(echo 'show port info all'; sleep 2; echo quit) | "
                                 "dpdk-testpmd -l 0-1 -n 1 -- -i; echo rc=$? tp''md-done",
                                 "tpmd-done",
                                 timeout=200)
        assert "rc=0" in out, out
        for mac in ("52:54:00:d1:00:01", "52:54:00:d1:00:02"):
            assert f"mac address: {mac}" in out.lower(), out
        assert out.count("Driver name: net_virtio") == 2, out
        assert out.count("Link status: up") == 2, out
    finally:
        vm.stop()
    assert_nothing_left(vm)
