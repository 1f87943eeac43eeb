"""Parameter model: corpus loads, merge order, warnings, errors with file:line (pure code)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.corpus import OWN, corpus_dir, corpus_files, needs_corpus, roots

from pytest_dtsvirt.config.cfgfile import parse_cfg, read_cfg
from pytest_dtsvirt.config.load import (
    VmParams,
    apply_overrides,
    call_origin,
    load_vm_params,
    params_for_section,
    vm_sections,
)
from pytest_dtsvirt.config.model import Passthrough, VhostUser, VmSpec
from pytest_dtsvirt.config.schema import PARAMS, render_markdown, valid_keys
from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.guest import GuestImage
from pytest_dtsvirt.qemu.accel import choose_accel, parse_cpu_flags, probe


def config_files(root: Path | None) -> list[Path]:
    """Our own configs (root OWN) or the corpus (root None)."""
    if root is None:
        corpus_dir()
        files = corpus_files()
        assert len(files) >= 40
        return files
    return sorted(root.glob("*.cfg"))


SOURCES = [pytest.param(OWN, 8, id="own"),
           pytest.param(None, 60, id="corpus", marks=needs_corpus)]


def spec_of(text: str, vm: str = "vm0", path: str = "t.cfg") -> tuple[VmSpec, list[str]]:
    section = parse_cfg(text, path).section(vm)
    spec, warnings = params_for_section(section, path).build()
    return spec, [str(w) for w in warnings]


def error_of(text: str, vm: str = "vm0") -> str:
    with pytest.raises(ConfigError) as info:
        spec_of(text, vm)
    return str(info.value)


@pytest.mark.parametrize(("root", "sections"), SOURCES)
def test_every_vm_section_builds(root: Path | None, sections: int) -> None:
    built = 0
    for path in config_files(root):
        cfg = read_cfg(path)
        for section in vm_sections(cfg):
            spec, _ = params_for_section(section, str(path)).build()
            assert spec.name == section.name
            built += 1
    assert built >= sections


@pytest.mark.parametrize(("root", "others"), [
    pytest.param(OWN, ("suite", "scene", "DUT IP", "mount_info", "test_case_one"), id="own"),
    pytest.param(None, ("suite", "scene", "DUT IP", "VM NAME", "mount_info",
                        "test_aesni_mb_aes_cbc_sha1_hmac"), id="corpus", marks=needs_corpus),
])
def test_non_vm_sections_are_left_alone(root: Path | None, others: tuple[str, ...]) -> None:
    files = config_files(root)
    all_names = {s.name for p in files for s in read_cfg(p).sections}
    names = {s.name for p in files for s in vm_sections(read_cfg(p))}
    for other in others:
        assert other in all_names and other not in names


def _warnings_of(path: Path) -> tuple[VmSpec, str]:
    spec, warnings = params_for_section(read_cfg(path).section("vm0"), path.name).build()
    return spec, "\n".join(str(w) for w in warnings)


def test_legacy_idioms_warn() -> None:
    """Our config of the idioms vf_etag.cfg and port_control.cfg of the corpus use."""
    spec, text = _warnings_of(OWN / "legacy_idioms.cfg")
    assert spec.cpu.pins == (4, 5, 6, 7)
    assert "legacy_idioms.cfg:5: [vm0] cpu: warning: cpupin written with commas" in text
    assert "legacy_idioms.cfg:15: [vm0] monitor: warning: option 'port' has no effect" in text
    assert "legacy_idioms.cfg:17: [vm0] qga: warning: qga has no effect" in text
    assert "legacy_idioms.cfg:12: [vm0] net: warning: option 'netdev' has no effect" in text
    vm2, w = params_for_section(read_cfg(OWN / "legacy_idioms.cfg").section("vm2"),
                                "legacy_idioms.cfg").build()
    text = "\n".join(str(x) for x in w)
    for scene_only in ("'numa'", "'skipcores'", "'dev_gen'", "scene-style device entry"):
        assert scene_only in text
    assert vm2.devices == ()


@needs_corpus
def test_corpus_legacy_idioms_warn() -> None:
    spec, text = _warnings_of(corpus_dir() / "vf_etag.cfg")
    assert spec.cpu.pins == (4, 5, 6, 7)
    assert "vf_etag.cfg:87: [vm0] cpu: warning: cpupin written with commas" in text
    assert "monitor" in text and "'port'" in text
    _, text = _warnings_of(corpus_dir() / "port_control.cfg")
    assert "qga has no effect" in text
    assert "'netdev'" in text


def test_defaults_and_attribute_names() -> None:
    spec, warnings = spec_of("[vm0]\ncpu = number=2;\n")
    assert warnings == []
    # no login in the cfg: no password (the runtime generates one for the test guest)
    assert (spec.name, spec.login.user, spec.login.password) == ("vm0", "root", None)
    named, _ = spec_of("[vm0]\nlogin = user=root;\n")
    assert named.login.password == "tester"  # a named login without password: the legacy one
    assert spec.cpu.number == 2 and spec.cpu.model is None and spec.cpu.pins == ()
    assert spec.mem.size_mb == 512 and spec.mem.hugepage is False
    assert spec.boot_timeout == 120 and spec.qemu_paths == ("qemu-system-x86_64",)
    assert spec.enable_kvm is True and spec.vnc is None and spec.monitor_path is None
    assert spec.uses_default_guest and spec.boot_profile == "fast"
    assert spec.kernel is None and spec.initrd is None and spec.append is None
    assert spec.disks == () and spec.vhost_user_paths == () and spec.migration is None
    ctl = spec.control_pair
    assert ctl is not None and ctl.nic.addr == "1f" and ctl.backend.kind == "user"
    assert "tester" not in repr(named.login) and "tester" not in repr(named)


def test_with_guest_fills_kernel_by_profile() -> None:
    img = GuestImage(kernel="/c/bzImage", vmlinux="/c/vmlinux", initrd="/c/initrd",
                     append="console=ttyS0", disk=None, key="k", packages={})
    spec, _ = spec_of("[vm0]\ncpu = number=1;\n")
    fast = spec.with_guest(img)
    assert (fast.kernel, fast.initrd, fast.append) == ("/c/vmlinux", "/c/initrd",
                                                       "console=ttyS0")
    assert fast.uses_default_guest and fast.boot_profile == "fast"
    plain, _ = spec_of("[vm0]\nstart = profile=plain;\n")
    assert plain.with_guest(img).kernel == "/c/bzImage"
    disk, _ = spec_of("[vm0]\ndisk = file=/img.qcow2;\n")
    assert not disk.uses_default_guest and disk.with_guest(img) is disk
    assert disk.boot_profile == "plain"


def test_every_parameter_parses() -> None:
    spec, warnings = spec_of("""[vm0]
name = name=guest1;
enable_kvm = enable=no;
daemon = enable=yes;
monitor = path=/tmp/m.sock;
cpu = model=qemu64,number=2,cpupin=3 4;
mem = size=1024,hugepage=yes;
disk = file=/a.img,opt_format=raw,opt_if=virtio,opt_index=1,opt_media=disk,opt_snapshot=off;
login = user=u,password=p;
vnc = displayNum=3,listen=0.0.0.0;
usercmd = cmd=-device 'virtio-rng-pci';
qemu = path=/q1;
    path=/q2;
start = wait_seconds=30,profile=plain;
machine = machine=pc;
kernel = file=/k,initrd=/i,append=console=ttyS0 quiet;
migration = enable=yes,port=4444,host=0.0.0.0;
""")
    assert warnings == []
    assert spec.name == "guest1" and spec.enable_kvm is False and spec.monitor_path == "/tmp/m.sock"
    assert spec.cpu.pins == (3, 4) and spec.mem.size_mb == 1024 and spec.mem.hugepage
    d = spec.disks[0]
    assert (d.file, d.format, d.interface, d.index, d.media, d.snapshot) == (
        "/a.img", "raw", "virtio", 1, "disk", False)
    assert spec.login.user == "u" and spec.vnc is not None and spec.vnc.display == 3
    assert spec.vnc.listen == "0.0.0.0" and spec.usercmd == ("-device", "virtio-rng-pci")
    assert spec.qemu_paths == ("/q1", "/q2") and spec.boot_timeout == 30
    assert spec.machine == "pc" and spec.kernel == "/k" and spec.append == "console=ttyS0 quiet"
    assert spec.migration is not None and spec.migration.port == 4444
    assert not spec.uses_default_guest


def test_merge_order_global_suite_calls(tmp_path: Path) -> None:
    (tmp_path / "virt_global.cfg").write_text(
        "[KVM]\ncpu = model=host,number=4,cpupin=3 4 5 6;\nmem = size=2048;\n"
        "device = driver=virtio-net-pci,opt_mac=00:00:00:00:00:99;\n"
        "net = type=nic,opt_vlan=7;\n  type=tap,opt_vlan=7;\n"
        "[XEN]\nmem = size=1;\n")
    (tmp_path / "suite1.cfg").write_text(
        "[vm0]\nmem = size=4096;\nnet = type=nic,opt_vlan=1;\n  type=user,opt_vlan=1;\n")
    params = load_vm_params(tmp_path, "suite1", "vm0")
    params.add("cpu", {"number": 1}, call_origin("cpu"))
    params.add("net", {"type": "nic", "opt_vlan": "2"}, call_origin("net"))
    params.add("net", {"type": "tap", "opt_vlan": "2", "opt_br": "br9"}, call_origin("net"))
    spec, _ = params.build()
    assert spec.mem.size_mb == 4096  # suite replaces global
    assert spec.cpu.number == 1 and spec.cpu.model is None  # call replaces the whole entry
    # the suite's net replaces the global one; calls append; the suite's user pair is the
    # control pair, at slot 1f
    assert [(p.nic.vlan, p.backend.kind, p.control) for p in spec.nets] == [
        (1, "user", True), (2, "tap", False)]
    assert spec.nets[0].nic.addr == "1f" and spec.nets[1].backend.br == "br9"
    assert [d.mac for d in spec.devices] == ["00:00:00:00:00:99"]  # global, not replaced


@pytest.mark.parametrize(("net", "expected"), [
    # (vlan, backend, control, nic addr) per pair
    ("", [(0, "user", True, "1f")]),
    ("net = type=nic,opt_vlan=0;\n  type=user,opt_vlan=0;\n", [(0, "user", True, "1f")]),
    ("net = type=nic,opt_vlan=3;\n  type=tap,opt_vlan=3;\n",
     [(0, "user", True, "1f"), (3, "tap", False, None)]),
    ("net = type=nic,opt_vlan=0;\n  type=user,opt_vlan=0;\n"
     "  type=nic,opt_vlan=1;\n  type=user,opt_vlan=1;\n",
     [(0, "user", True, "1f"), (1, "user", False, None)]),
    ("net = type=nic,opt_vlan=2,opt_addr=0x6;\n  type=user,opt_vlan=2;\n",
     [(2, "user", True, "0x6")]),
    ("net = type=nic,opt_vlan=1;\n  type=user,opt_vlan=1,opt_hostfwd=tcp::5555-:80;\n",
     [(0, "user", True, "1f"), (1, "user", False, None)]),
])
def test_control_pair(net: str, expected: list[tuple[int, str, bool, str | None]]) -> None:
    """One control pair: the first user pair forwarding nothing, else the default in front
    (the legacy control idiom in a suite does not add a second control NIC)."""
    spec, _ = spec_of(f"[vm0]\ncpu = number=1;\n{net}")
    assert [(p.nic.vlan, p.backend.kind, p.control, p.nic.addr)
            for p in spec.nets] == expected


@pytest.mark.parametrize("root", roots())
def test_vxlan_example_with_set_vm_device(root: Path | None) -> None:
    params = load_vm_params((root or corpus_dir()) / "vxlan_sample.cfg", "vxlan_sample", "vm0")
    for mac in ("00:00:20:00:00:20", "00:00:20:00:00:21"):
        params.add("device", {"driver": "vhost-user", "opt_path": "./vhost-net",
                              "opt_mac": mac}, call_origin("device"))
    spec, warnings = params.build()
    assert warnings and all(w.location.file.endswith("virt_global.cfg") for w in warnings)
    assert spec.vhost_user_paths == ("./vhost-net", "./vhost-net")
    assert all(isinstance(d, VhostUser) for d in spec.devices)
    assert spec.cpu.pins == (24, 25, 26, 27) and spec.mem.hugepage


def test_marker_overrides() -> None:
    params = VmParams("vm0")
    apply_overrides(params, {"cpu": {"number": 3},
                             "device": [{"driver": "vfio-pci", "opt_host": "07:10.0"}]},
                    "@pytest.mark.vm")
    spec, _ = params.build()
    assert spec.cpu.number == 3 and spec.devices == (Passthrough("07:10.0"),)
    with pytest.raises(ConfigError, match=r"unknown parameter 'cpus'; valid: name, "):
        apply_overrides(params, {"cpus": {}}, "@pytest.mark.vm")


def test_set_vm_call_error_names_the_call() -> None:
    params = VmParams("vm0")
    params.add("device", {"driver": "vhost-user", "opt_mac": "zz"}, call_origin("device"))
    with pytest.raises(ConfigError) as info:
        params.build()
    text = str(info.value)
    assert "set_vm_device(): device: opt_mac: 'zz' is not a MAC address" in text
    assert "missing required option 'opt_path' for device driver=vhost-user" in text


def test_unknown_key_names_file_line_section_and_valid_keys() -> None:
    msg = error_of("[vm0]\ncpu = number=1;\ncpus = number=2;\n")
    assert msg.startswith("t.cfg:3: [vm0] cpus: unknown parameter 'cpus'; valid: name, ")
    assert "migration" in msg


def test_unknown_option_and_bad_values_are_all_collected() -> None:
    msg = error_of("[vm0]\ncpu = number=x,modle=host;\nmem = size=big,hugepage=maybe;\n"
                   "net = type=nic,opt_macaddr=00:11;\n  type=user,opt_hostfwd=nonsense;\n"
                   "device = driver=pci-assign,opt_host=zz;\n")
    lines = msg.splitlines()
    assert "t.cfg:2: [vm0] cpu: number: 'x' is not an integer 1-512" in lines
    assert "t.cfg:2: [vm0] cpu: unknown option 'modle' for cpu; valid: model, number, cpupin" \
        in lines
    assert "t.cfg:3: [vm0] mem: size: 'big' is not an integer 16-4194304" in lines
    assert "t.cfg:3: [vm0] mem: hugepage: 'maybe' is not yes or no" in lines
    assert any(x.startswith("t.cfg:4: [vm0] net: opt_macaddr: '00:11' is not a MAC") for x in lines)
    assert any(x.startswith("t.cfg:5: [vm0] net: opt_hostfwd:") for x in lines)
    assert any(x.startswith("t.cfg:6: [vm0] device: opt_host: 'zz'") for x in lines)


def test_bad_selector_and_unpaired_net() -> None:
    assert "net: type='vde' is not valid; valid: nic, user, tap, bridge" in error_of(
        "[vm0]\nnet = type=vde;\n")
    msg = error_of("[vm0]\nnet = type=nic,opt_vlan=5;\n  type=user,opt_vlan=6;\n")
    assert "t.cfg:2: [vm0] net: nic with opt_vlan=5 has no user, tap or bridge backend" in msg
    assert "t.cfg:3: [vm0] net: user backend with opt_vlan=6 has no nic" in msg
    assert "qga enable=no is not possible" in error_of("[vm0]\nqga = enable=no;\n")
    assert "'oops' is not an option" in error_of("[vm0]\ncpu = number=1,oops;\n")


def test_schema_is_the_single_source() -> None:
    doc = render_markdown()
    for key in valid_keys():
        assert f"### `{key}`" in doc
    assert PARAMS["user"] is PARAMS["usercmd"]
    assert "opt_vectors" in PARAMS["device"].option_names("vhost-user")


def test_accel_policy() -> None:
    assert choose_accel("auto", True, True, {"vmx"})[0] == "kvm"
    acc, why = choose_accel("auto", True, True, {"sse2"})
    assert acc == "tcg" and "neither vmx nor svm" in why
    assert choose_accel("auto", True, False, {"svm"})[0] == "tcg"
    assert choose_accel("auto", False, True, {"vmx"}) == (
        "tcg", "the VM config says enable_kvm enable=no")
    assert choose_accel("tcg", True, True, {"vmx"})[0] == "tcg"
    with pytest.raises(ConfigError, match="kvm requested but KVM cannot work here"):
        choose_accel("kvm", True, True, set())
    with pytest.raises(ConfigError, match="valid: auto, kvm, tcg"):
        choose_accel("fast", True, True, set())
    assert parse_cpu_flags("processor: 0\nflags\t\t: fpu vmx sse\n") == {"fpu", "vmx", "sse"}
    files = {"/proc/misc": b"232 kvm\n 1 psaux\n", "/proc/cpuinfo": b"flags : svm\n"}
    assert probe(files.__getitem__) == (True, frozenset({"svm"}))
    assert probe({}.__getitem__) == (False, frozenset())


def test_this_machine_picks_tcg_under_auto() -> None:
    from pytest_dtsvirt.qemu.accel import local_accel

    flags = parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    if {"vmx", "svm"} & flags or not Path("/dev/kvm").exists():
        pytest.fail("this test documents the PVM machines: /dev/kvm without vmx/svm")
    assert local_accel("auto", True)[0] == "tcg"


def test_an_option_written_twice_warns_and_the_last_wins() -> None:
    cfg = parse_cfg("[vm0]\ncpu =\n    number=1,number=2;\n", "twice.cfg")
    spec, warnings = params_for_section(cfg.section("vm0"), "twice.cfg").build()
    assert spec.cpu.number == 2
    assert [str(w) for w in warnings] == [
        "twice.cfg:3: [vm0] cpu: warning: option 'number' written more than once in one "
        "entry; the last value, '2', is used (as legacy DTS did)"]
