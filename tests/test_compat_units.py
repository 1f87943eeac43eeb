"""Every compat name against the legacy semantics (read from the legacy dut.py, ssh_pexpect.py,
pmd_output.py, test_case.py, virt_base.py, qemu_kvm.py): one table-driven test per call.
Pure code, plus the local host as a real DUT for the session calls."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from support.compat import script_conf

from pytest_dtsvirt.compat import VM, CompatWarning, QEMUKvm, vhost_user_vdevs
from pytest_dtsvirt.compat.pmd_output import parse_pmd_stats, value_after, values_after
from pytest_dtsvirt.compat.suitecfg import load_suite_cfg, typed
from pytest_dtsvirt.errors import CommandTimeout, ConfigError, SessionError, VerifyError
from pytest_dtsvirt.session.dtsapi import (
    Lcore,
    core_ranges,
    eal_parameters,
    parse_cpuinfo,
    select_cores,
)
from pytest_dtsvirt.session.dut import Dut, control_char


@pytest.mark.parametrize(("cmd", "sent"), [
    ("^c", "\x03"), ("^C", "\x03"), ("^d", "\x04"), ("^Z", "\x1a"), ("^[", "\x1b"),
    ("^cc", None), ("c", None), ("^", None), ("^1", None), ("ls", None),
])
def test_control_char(cmd: str, sent: str | None) -> None:
    assert control_char(cmd) == sent


CPUINFO_2S = "\n\n".join(
    f"processor\t: {n}\nphysical id\t: {n // 4}\ncore id\t\t: {n % 2}\nflags\t: x"
    for n in range(8))  # 2 sockets x 2 cores x 2 threads: cpu n is core n%2 of socket n//4
TOPO = parse_cpuinfo(CPUINFO_2S)


def test_parse_cpuinfo() -> None:
    assert TOPO[5] == Lcore(5, 1, 1)
    # a guest's cpuinfo without topology lines: socket 0, one core per CPU
    assert parse_cpuinfo("processor : 0\n\nprocessor : 1\n") == [Lcore(0, 0, 0), Lcore(1, 0, 1)]


@pytest.mark.parametrize(("config", "socket", "expected"), [
    ("all", -1, [str(n) for n in range(8)]),
    ("all", 1, ["4", "5", "6", "7"]),
    ("1S/2C/1T", -1, ["0", "1"]),
    ("1S/2C/2T", -1, ["0", "1", "2", "3"]),
    ("2S/1C/1T", -1, ["0", "4"]),
    ("1S/1C/1T", 1, ["4"]),
    ("1s/2c/1t", -1, ["0", "1"]),
])
def test_get_core_list(config: str, socket: int, expected: list[str]) -> None:
    assert select_cores(TOPO, config, socket) == expected


@pytest.mark.parametrize("config", ["1S/3C/1T", "3S/1C/1T", "1S/1C/3T", "four", "1S/2C"])
def test_get_core_list_too_many_or_bad(config: str) -> None:
    with pytest.raises(ValueError, match="core config"):
        select_cores(TOPO, config)


@pytest.mark.parametrize(("cores", "text"), [
    ([0, 1, 2, 3], "0-3"), (["1", "2", "3", "5"], "1-3,5"), ([7], "7"), ([3, 1, 2], "1-3"),
    ([0, 2, 4], "0,2,4"),
])
def test_core_ranges(cores: list[Any], text: str) -> None:
    assert core_ranges(cores) == text


PCIS = ["0000:00:04.0", "0000:00:05.0"]


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({}, "-l 1-2 -n 4 -a 0000:00:04.0 -a 0000:00:05.0 --file-prefix=p"),
    ({"ports": [1]}, "-l 1-2 -n 4 -a 0000:00:05.0 --file-prefix=p"),
    ({"ports": ["0000:af:00.0"], "port_options": {"0000:af:00.0": "proto_xtr=vlan"}},
     "-l 1-2 -n 4 -a 0000:af:00.0,proto_xtr=vlan --file-prefix=p"),
    ({"no_pci": True, "vdevs": ["net_vhost0,iface=v0,queues=1"]},
     "-l 1-2 -n 4 --file-prefix=p --no-pci --vdev net_vhost0,iface=v0,queues=1"),
    ({"b_ports": [0]}, "-l 1-2 -n 4 -b 0000:00:04.0 --file-prefix=p"),
    ({"other_eal_param": "--no-pci --single-file-segments"},
     "-l 1-2 -n 4 --file-prefix=p --no-pci --single-file-segments"),
])
def test_eal_parameters(kwargs: dict[str, Any], expected: str) -> None:
    assert eal_parameters([1, 2], memory_channels=4, port_pcis=PCIS, prefix="p",
                          **kwargs) == expected


def test_eal_parameters_bad_port() -> None:
    with pytest.raises(ValueError, match="port 5: the DUT has 2 port"):
        eal_parameters([1], memory_channels=4, port_pcis=PCIS, prefix="p", ports=[5])


@pytest.mark.parametrize(("raw", "value"), [
    ("[64, 128, 256]", [64, 128, 256]), ("True", True), ("10", 10), ("'io'", "io"),
    ("{'a': 1}", {"a": 1}), ("plain text", "plain text"), ("__import__('os')", "__import__('os')"),
    ("  2.5 ", 2.5),
])
def test_suite_cfg_values(raw: str, value: Any) -> None:
    assert typed(raw) == value


def test_load_suite_cfg(tmp_path: Path) -> None:
    cfg = tmp_path / "s.cfg"
    cfg.write_text("[suite]\npacket_sizes = [64, 1518]\nupdate_expected = True\n"
                   "[vm0]\ncpu =\n    number=2;\n")
    assert load_suite_cfg(cfg) == {"packet_sizes": [64, 1518], "update_expected": True}
    assert load_suite_cfg(tmp_path / "none.cfg") == {}
    (tmp_path / "novm.cfg").write_text("[vm0]\ncpu =\n    number=2;\n")
    assert load_suite_cfg(tmp_path / "novm.cfg") == {}


@pytest.mark.parametrize(("args", "expected"), [
    ((["v0"],), ["net_vhost0,iface=v0,queues=1"]),
    ((["v0", "v1"], 2, {"client": 1, "tso": True}),
     ["net_vhost0,iface=v0,queues=2,client=1,tso=1",
      "net_vhost1,iface=v1,queues=2,client=1,tso=1"]),
    ((["v0", "v1"], 1, [{"dmas": ["txq0", "rxq0"]}, {"iommu-support": 1}]),
     ["net_vhost0,iface=v0,queues=1,dmas=[txq0;rxq0]",
      "net_vhost1,iface=v1,queues=1,iommu-support=1"]),
])
def test_vhost_user_vdevs(args: tuple[Any, ...], expected: list[str]) -> None:
    assert vhost_user_vdevs(*args) == expected


@pytest.mark.parametrize(("args", "message"), [
    ((["a,b"],), "must not contain"), ((["v0", "v1"], 1, [{}]), "2 vhost-user ports"),
])
def test_vhost_user_vdevs_bad(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vhost_user_vdevs(*args)


STATS = """
  ######################## NIC statistics for port 0  ########################
  RX-packets: 1234       RX-missed: 0          RX-bytes:  78976
  RX-errors: 2
  RX-nombuf:  0
  TX-packets: 1200       TX-errors: 0          TX-bytes:  76800
  ############################################################################
"""


@pytest.mark.parametrize(("key", "value"), [
    ("RX-packets", 1234), ("RX-bytes", 78976), ("RX-errors", 2), ("TX-packets", 1200),
    ("TX-bytes", 76800), ("RX-badcrc", None), ("Bad-ipcsum", None),
])
def test_get_pmd_stats(key: str, value: int | None) -> None:
    assert parse_pmd_stats(STATS)[key] == value


INFO = "MAC address: 00:11:22:33:44:55\nLink status: up\nLink speed: 10000 Mbps\n"


@pytest.mark.parametrize(("key", "regex", "value"), [
    ("MAC address: ", "([0-9A-F]{2}:){5}[0-9A-F]{2}", "00:11:22:33:44:55"),
    ("Link status: ", r"\S+", "up"), ("Link speed: ", r"\d+", "10000"),
    ("Firmware-version: ", r"\S.*", " "),
])
def test_value_from_string(key: str, regex: str, value: str) -> None:
    assert value_after(key, regex, INFO) == value


def test_all_values_from_string() -> None:
    assert values_after("Link status: ", r"\S+", INFO * 2) == ["up", "up"]


# -- the session calls on a real local DUT --------------------------------------------------

def test_send_expect_control_c_interrupts(dut: Dut) -> None:
    with pytest.raises(CommandTimeout):
        dut.send_expect("sleep 30", "# ", timeout=0.5)
    began = time.monotonic()
    dut.send_expect("^c", "# ", timeout=5)
    assert time.monotonic() - began < 3
    assert dut.send_expect("echo alive", "# ") == "alive"


@pytest.mark.parametrize(("cmd", "expected"), [
    ("true", ""), ("echo out", "out"), ("false", 1), ("sh -c 'exit 3'", 3),
])
def test_send_expect_verify(dut: Dut, cmd: str, expected: str | int) -> None:
    assert dut.send_expect(cmd, "# ", verify=True) == expected


def test_send_expect_alt_session(dut: Dut) -> None:
    dut.send_expect("cd /", "# ")
    dut.send_expect("cd /tmp", "# ", alt_session=True)
    assert dut.send_expect("pwd", "# ") == "/"
    assert dut.send_expect("pwd", "# ", alt_session=True) == "/tmp"


def test_get_session_before_after_timeout(dut: Dut) -> None:
    with pytest.raises(CommandTimeout):
        dut.send_expect("echo first; sleep 0.5; echo second", "never-printed", timeout=0.2)
    text = dut.get_session_before(timeout=1.5)
    assert "first" in text and "second" in text
    assert dut.get_session_output(timeout=0.1) == ""


def test_new_session_and_base_dir(dut: Dut) -> None:
    base = dut.base_dir
    assert base.startswith("/tmp/dtsvirt-base.") and Path(base).is_dir()
    assert oct(Path(base).stat().st_mode & 0o777) == "0o700"
    shell = dut.new_session("suite")
    assert shell.send_expect("pwd", "# ") == base
    dut.close_session(shell)
    assert shell.closed
    dut.close()
    assert not Path(base).exists()


def test_cores_and_eal_on_the_local_dut(dut: Dut) -> None:
    cores = dut.cores
    assert cores and set(cores[0]) == {"thread", "socket", "core"}
    assert dut.get_core_list("all") == [c["thread"] for c in cores]
    eal = dut.create_eal_parameters(cores=[0], no_pci=True, prefix="x", fixed_prefix=True)
    assert eal == "-l 0 -n 4 --file-prefix=x --no-pci"
    eal = dut.create_eal_parameters(cores=[0], no_pci=True, prefix="x")
    assert f"--file-prefix=x_{dut.prefix_subfix} " in eal
    assert dut.get_numa_id(0) == 0  # no NIC on the host: node 0
    with pytest.raises(SessionError, match="core config"):
        dut.get_core_list("64S/1C/1T")


def test_apps_name_and_build_errors(dut: Dut) -> None:
    assert dut.apps_name["test-pmd"] == "dpdk-testpmd"
    with pytest.raises(SessionError, match="cannot build examples/no-such-app: no "
                       "/usr/share/dpdk/examples/no-such-app/Makefile"):
        dut.build_dpdk_apps("examples/no-such-app")
    with pytest.raises(SessionError, match="not an example name"):
        dut.build_dpdk_apps("examples/$(reboot)")


@pytest.mark.skipif(not Path("/usr/share/dpdk/examples/helloworld/Makefile").is_file(),
                    reason="Debian package dpdk-doc (the DPDK examples) is not installed")
def test_build_dpdk_apps_from_dpdk_doc(dut: Dut) -> None:
    out = dut.build_dpdk_apps("examples/helloworld")
    assert "helloworld" in out
    binary = dut.apps_name["helloworld"]
    assert binary == "examples/helloworld/build/helloworld"  # relative to base_dir
    assert dut.run(["test", "-x", f"{dut.base_dir}/{binary}"]).ok
    # the legacy idiom, in the DUT's shell (which starts in base_dir)
    eal = dut.create_eal_parameters(cores=[0], no_pci=True, other_eal_param="--no-huge -m 64")
    out = dut.send_expect("./%s %s" % (binary, eal), "# ", 120)  # noqa: UP031 (legacy idiom)
    assert "hello from core 0" in out, out


# -- VM / QEMUKvm outside pytest's factory (a plain conf dir) --------------------------------

CFG = """[suite]
packet_sizes = [64]
[vm0]
cpu =
    model=host,number=2;
mem =
    size=1024;
qemu =
    path=/usr/bin/qemu-system-x86_64;
"""


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return script_conf(tmp_path, monkeypatch, {
        "s.cfg": CFG,
        "virt_global.cfg": "[KVM]\ncpu =\n    model=host,number=8;\nvnc =\n    displayNum=3;\n"})


def test_vm_params_legacy_shape(conf: Path, dut: Dut) -> None:
    vm = VM(dut, "vm0", "s")
    assert isinstance(vm, QEMUKvm) and vm.params == []
    vm.load_config()
    # global [KVM] first for keys the suite does not set, then the suite section replaces
    assert vm.params == [{"cpu": [{"model": "host", "number": "2"}]},
                         {"vnc": [{"displayNum": "3"}]}, {"mem": [{"size": "1024"}]},
                         {"qemu": [{"path": "/usr/bin/qemu-system-x86_64"}]}]
    index = vm.find_option_index("cpu")
    assert index == 0
    vm.params[index]["cpu"][0]["number"] = "4"
    vm.set_vm_device(driver="virtio-net-pci", opt_mac="00:00:20:00:00:30")
    vm.set_vm_device(driver="virtio-net-pci", opt_mac="00:00:20:00:00:31")
    assert vm.params[-1] == {"device": [
        {"driver": "virtio-net-pci", "opt_mac": "00:00:20:00:00:30"},
        {"driver": "virtio-net-pci", "opt_mac": "00:00:20:00:00:31"}]}
    vm._apply_params()  # what start() does before booting: the edits reach the spec
    spec, _ = vm.hypervisor.params.build()  # type: ignore[attr-defined]
    assert spec.cpu.number == 4
    assert len(spec.devices) == 2
    assert vm.qemu_emulator == "/usr/bin/qemu-system-x86_64"
    assert vm.pci_maps == []
    with pytest.raises(Exception, match="no hostfwd address yet"):
        _ = vm.hostfwd_addr


def test_vm_set_vm_device_before_start_reaches_the_spec(conf: Path, dut: Dut) -> None:
    # the legacy order: set_vm_device, then start() loads the cfg (load_config=True)
    vm = VM(dut, "vm0", "s")
    vm.set_vm_device(driver="vhost-user", opt_path="/tmp/v0", opt_mac="00:00:20:00:00:30")
    vm.load_config()
    vm._apply_params()
    spec, _ = vm.hypervisor.params.build()  # type: ignore[attr-defined]
    assert len(spec.devices) == 1 and spec.cpu.number == 2


def test_vm_missing_section_and_conf_dir(conf: Path, dut: Dut,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"no section \[vm1\]"):
        VM(dut, "vm1", "s")
    monkeypatch.chdir(conf)  # no conf/ here
    with pytest.raises(ConfigError, match=r"conf dir .*conf.* not found"):
        VM(dut, "vm0", "s")


def test_vm_start_warns_on_ignored_arguments(conf: Path, dut: Dut,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    vm = VM(dut, "vm0", "s")
    monkeypatch.setattr(vm.hypervisor, "start", _no_boot)
    with pytest.raises(RuntimeError, match="no boot here"), \
            pytest.warns(CompatWarning) as record:
        vm.start(load_config=False, cpu_topo="1S/2C/1T", nope=1)
    messages = [str(w.message) for w in record]
    assert any("start(cpu_topo='1S/2C/1T') is ignored" in m for m in messages), messages
    assert any("start(nope=...) is ignored" in m for m in messages), messages


def _no_boot() -> None:
    raise RuntimeError("no boot here")


def test_verify() -> None:
    from pytest_dtsvirt.compat import TestCase

    case = TestCase.__new__(TestCase)
    case.verify(True, "fine")
    with pytest.raises(VerifyError, match="went wrong"):
        case.verify(0, "went wrong")
    assert issubclass(VerifyError, AssertionError)


def test_timeout_scale(dut: Dut) -> None:
    with pytest.raises(CommandTimeout):
        dut.send_expect("sleep 0.5; echo done", "done", timeout=0.1)
    dut.send_expect("^c", "# ")
    dut.set_timeout_scale(20)  # what the compat layer does for a TCG guest
    assert dut.send_expect("sleep 0.5; echo done", "done", timeout=0.1) == ""
    assert dut.new_session().timeout_scale == 20


class _MigHv:
    """Records the live-migration calls the legacy VM forwards (a pure forwarding corner)."""

    migrate_port = 4444

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start_incoming(self) -> None:
        self.calls.append(("start_incoming", None))

    def start_migration(self, ip: str, port: int | None) -> bool:
        self.calls.append(("start_migration", (ip, port)))
        return True

    def wait_migration_done(self, **kwargs: Any) -> bool:
        self.calls.append(("wait_migration_done", kwargs))
        return True

    def migrated_start(self, set_target: bool, cpu_topo: str) -> str:
        self.calls.append(("migrated_start", (set_target, cpu_topo)))
        return "guest"


@pytest.mark.parametrize(("call", "expected", "result"), [
    (lambda vm: vm.start_migration("127.0.0.1", 4444),
     ("start_migration", ("127.0.0.1", 4444)), True),
    (lambda vm: vm.wait_migration_done(timeout=3.0),
     ("wait_migration_done", {"timeout": 3.0}), True),
    (lambda vm: vm.migrated_start(), ("migrated_start", (True, "")), "guest"),
])
def test_vm_migration_forwarding(conf: Path, dut: Dut, call: Any, expected: Any,
                                 result: Any) -> None:
    vm = VM(dut, "vm0", "s")
    hv = _MigHv()
    vm.stop()
    vm.hypervisor = hv  # type: ignore[assignment]
    assert call(vm) == result
    assert hv.calls == [expected]
    assert vm.migration_vm == (expected[0] == "migrated_start")  # legacy sets it there
    assert vm.migrate_port == 4444


@pytest.mark.parametrize(("migration", "expected"), [
    ([{"enable": "yes", "port": "4444"}], [("start_incoming", None)]),
    (None, []),
])
def test_vm_start_of_a_migration_target(conf: Path, dut: Dut, migration: Any,
                                        expected: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    vm = VM(dut, "vm0", "s")
    hv = _MigHv()
    vm.stop()
    monkeypatch.setattr(vm, "_apply_params", lambda: None)
    vm.hypervisor = hv  # type: ignore[assignment]
    if migration is not None:
        vm.params.append({"migration": migration})
        assert vm.start(load_config=False) is None and not vm.migration_vm
    else:
        with pytest.raises(AttributeError):  # a normal start boots (the fake cannot)
            vm.start(load_config=False)
    assert hv.calls == expected


class _BootHv:
    argv: tuple[str, ...] = ()


class _FakeFactory:
    """Records how the legacy VMs are booted (one by one or together)."""

    def __init__(self) -> None:
        self.vms: list[Any] = []
        self.calls: list[tuple[str, int]] = []
        self.booted: set[int] = set()

    def boot(self, vm: Any) -> str:
        self.calls.append(("boot", 1))
        self.booted.add(id(vm))
        return f"guest{id(vm)}"

    def boot_all(self, vms: list[Any]) -> list[Any]:
        self.calls.append(("boot_all", len(vms)))
        self.booted.update(id(vm) for vm in vms)
        return vms

    def guest(self, vm: Any) -> str:
        assert id(vm) in self.booted
        return f"guest{id(vm)}"


@pytest.mark.parametrize(("quick", "calls"), [
    ([True, True], [("boot_all", 2)]),     # legacy multi-VM path: booted together
    ([False, False], [("boot", 1), ("boot", 1)]),
    ([True, False], [("boot_all", 1), ("boot", 1)]),
])
def test_vm_quick_start_boots_together(conf: Path, dut: Dut, quick: list[bool],
                                       calls: list[tuple[str, int]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    factory = _FakeFactory()
    vms = []
    for _ in quick:
        vm = VM(dut, "vm0", "s")
        vm.stop()
        vm.hypervisor = _BootHv()  # type: ignore[assignment]
        vm._factory = factory  # type: ignore[assignment]
        monkeypatch.setattr(vm, "_apply_params", lambda: None)
        vms.append(vm)
    for vm, q in zip(vms, quick, strict=True):
        if q:
            vm.quick_start(load_config=False)
    guests = [vm.start(load_config=False, bind_dev=False) for vm in vms]
    assert factory.calls == calls
    assert guests == [f"guest{id(vm.hypervisor)}" for vm in vms]
