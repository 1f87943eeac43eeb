"""Real qemu (TCG, -S) accepts the generated command lines; nothing reaches a shell."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_dtsvirt.config.cfgfile import parse_cfg
from pytest_dtsvirt.config.load import VmParams, call_origin, params_for_section
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError, NotCheckable
from pytest_dtsvirt.qemu.check import check_spec


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / "a.qcow2"), "64M"],
                   check=True)
    (d / "b.raw").write_bytes(b"\0" * 1024 * 1024)
    # a minimal bzImage header: enough for qemu to load it paused (-S), never run
    k = bytearray(16384)
    k[0x1F1] = 4
    k[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", k, 0x206, 0x020F)
    k[0x211] = 0x01
    struct.pack_into("<I", k, 0x22C, 0x7FFFFFFF)
    (d / "kernel").write_bytes(bytes(k))
    (d / "initrd").write_bytes(b"\0" * 4096)
    return d


def spec(text: str, d: Path) -> VmSpec:
    text = text.replace("@", str(d))
    s, _ = params_for_section(parse_cfg("[vm0]\n" + text, "t.cfg").section("vm0"),
                              "t.cfg").build()
    return s


CASES = {
    "default-ish kernel boot": "kernel = file=@/kernel,initrd=@/initrd,append=console=ttyS0;\n",
    "disk every option": "disk = file=@/a.qcow2,opt_format=qcow2,opt_if=virtio,opt_index=0,"
                         "opt_media=disk;\n  file=@/b.raw,opt_format=raw,opt_if=ide,"
                         "opt_media=cdrom,opt_snapshot=off;\n",
    "nets": "disk = file=@/a.qcow2;\nnet = type=nic,opt_vlan=1,opt_model=virtio,"
            "opt_macaddr=52:54:00:00:00:11,opt_name=n1,opt_addr=6,opt_vectors=4;\n"
            "  type=user,opt_vlan=1,opt_hostfwd=tcp::0-:80;\n  type=user,opt_vlan=2;\n"
            "  type=nic,opt_vlan=2,opt_model=rtl8139;\n",
    "cpu mem vnc": "disk = file=@/a.qcow2;\ncpu = model=host,number=2,cpupin=0 1;\n"
                   "mem = size=256;\nvnc = displayNum=97;\n",
    "cpu qemu64 machine": "disk = file=@/a.qcow2;\ncpu = model=qemu64,number=1;\n"
                          "machine = machine=pc;\nmonitor = path=@/hmp.sock;\n",
    "virtio-net-pci usercmd migration": "disk = file=@/a.qcow2;\n"
        "device = driver=virtio-net-pci,opt_id=v1,opt_mac=00:00:00:00:01:03,opt_bus=pci.0,"
        "opt_addr=0x3,opt_vectors=2;\nusercmd = cmd=-device virtio-rng-pci;\n"
        "migration = enable=yes,port=0;\n",
}


@pytest.mark.parametrize("name", list(CASES))
def test_qemu_accepts(name: str, files: Path) -> None:
    r = check_spec(spec(CASES[name], files), "tcg", timeout=15)
    assert r.ok, r.message
    assert r.status in ("prelaunch", "inmigrate")
    assert r.seconds < 10


def test_default_guest_fast_profile_line_is_accepted(files: Path) -> None:
    from pytest_dtsvirt.guest import GuestImage
    img = GuestImage(kernel=str(files / "kernel"), vmlinux=str(files / "kernel"),
                     initrd=str(files / "initrd"), append="console=ttyS0", disk=None, key="k",
                     packages={})
    r = check_spec(spec("cpu = number=1;\n", files).with_guest(img), "tcg")
    assert r.ok, r.message
    assert "qemu64,+rdrand" in r.argv and any("autonegotiation=off" in a for a in r.argv)


def test_qemu_refusal_is_reported(files: Path) -> None:
    r = check_spec(spec("disk = file=@/a.qcow2;\nusercmd = cmd=-device no-such-device;\n",
                        files), "tcg")
    assert not r.ok and "no-such-device" in r.message


def test_not_checkable_devices() -> None:
    p = VmParams("vm0")
    p.add("device", {"driver": "vhost-user", "opt_path": "/tmp/x.sock"}, call_origin("device"))
    p.add("net", {"type": "nic", "opt_vlan": "3"}, call_origin("net"))
    p.add("net", {"type": "tap", "opt_vlan": "3"}, call_origin("net"))
    with pytest.raises(NotCheckable) as info:
        check_spec(p.build()[0])
    assert "vhost-user device /tmp/x.sock: needs a running vhost-user backend" in str(info.value)
    assert "tap backend (opt_vlan=3)" in str(info.value)


def test_hugepage_without_hugetlbfs_is_a_clear_error(files: Path) -> None:
    if "hugetlbfs" in Path("/proc/mounts").read_text():
        pytest.fail("this machine has hugetlbfs; the test expects none")
    with pytest.raises(ConfigError, match="no hugetlbfs mount"):
        check_spec(spec("disk = file=@/a.qcow2;\nmem = size=256,hugepage=yes;\n", files))


def test_shell_metacharacters_reach_qemu_verbatim(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = str(tmp_path / f"x$(touch {marker});`touch {marker}`;touch {marker}.img")
    p = VmParams("vm0")
    p.add("disk", {"file": evil}, call_origin("disk"))
    r = check_spec(p.build()[0], "tcg")
    assert not r.ok  # the file does not exist; qemu says so
    assert f"file={evil},snapshot=on" in r.argv
    assert not marker.exists() and not Path(f"{marker}.img").exists()
    # through the CLI too: cmdline prints it shell-quoted, and the shell keeps it literal
    # (the cfg syntax cannot carry ';' in a value: a path with $(...), backticks and spaces)
    evil = str(tmp_path / f"x$(touch {marker}) `touch {marker}` && touch {marker}.img")
    cfg = tmp_path / "s.cfg"
    cfg.write_text("[vm0]\ndisk =\n    file=" + evil + ";\n")
    out = subprocess.run([sys.executable, "-m", "pytest_dtsvirt.cli", "cmdline", str(cfg), "vm0",
                          "--accel", "tcg"], capture_output=True, text=True, check=True).stdout
    echoed = subprocess.run(["sh", "-c", "printf '%s\\n' " + out.strip()], capture_output=True,
                            text=True, check=True, env={**os.environ}).stdout.splitlines()
    assert f"file={evil},snapshot=on" in echoed
    assert not marker.exists()
