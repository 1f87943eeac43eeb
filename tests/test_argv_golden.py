"""Golden argv fragments for every parameter and option (pure code, no qemu)."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.corpus import OWN, corpus_dir, needs_corpus

from pytest_dtsvirt.config.cfgfile import parse_cfg
from pytest_dtsvirt.config.load import call_origin, load_vm_params, params_for_section
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.guest import GuestImage
from pytest_dtsvirt.qemu.argv import build_argv, notes
from pytest_dtsvirt.qemu.placement import Placement

PL = Placement(run_dir="/run/d", accel="tcg", hostfwd_port=2222, qemu="/usr/bin/qemu")
IMG = GuestImage(kernel="/c/bzImage", vmlinux="/c/vmlinux", initrd="/c/initrd.gz",
                 append="console=ttyS0", disk=None, key="k", packages={})


def spec(text: str) -> VmSpec:
    s, _ = params_for_section(parse_cfg("[vm0]\n" + text, "t.cfg").section("vm0"),
                              "t.cfg").build()
    return s


def argv(text: str, placement: Placement = PL) -> list[str]:
    return build_argv(spec(text), placement)


def has(args: list[str], *fragment: str) -> bool:
    n = len(fragment)
    return any(args[i:i + n] == list(fragment) for i in range(len(args) - n + 1))


def test_always_present_control_plane() -> None:
    a = argv("disk = file=/i.qcow2;\n")
    assert a[0] == "/usr/bin/qemu"
    for frag in (
        ("-name", "guest=vm0,debug-threads=on", "-nodefaults", "-pidfile", "/run/d/qemu.pid"),
        ("-accel", "tcg"),
        ("-chardev", "socket,id=qmp,path=/run/d/qmp.sock,server=on,wait=off",
         "-mon", "chardev=qmp,mode=control"),
        ("-chardev", "socket,id=hmp,path=/run/d/monitor.sock,server=on,wait=off",
         "-mon", "chardev=hmp,mode=readline"),
        ("-chardev", "socket,id=qga0,path=/run/d/qga.sock,server=on,wait=off",
         "-device", "virtio-serial-pci,id=vser0",
         "-device", "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0"),
        ("-chardev", "file,id=console0,path=/run/d/console.log", "-serial", "chardev:console0"),
        ("-display", "none"),
        ("-netdev", "user,id=netdev0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22",
         "-device", "e1000,netdev=netdev0,addr=1f"),
        ("-smp", "1", "-m", "512"),
    ):
        assert has(a, *frag), frag
    assert "-daemonize" not in a and "-S" not in a and "-enable-kvm" not in a


def test_default_guest_fast_and_plain_profiles() -> None:
    fast = build_argv(spec("cpu = number=1;\n").with_guest(IMG), PL)
    assert has(fast, "-cpu", "qemu64,+rdrand")
    assert has(fast, "-kernel", "/c/vmlinux", "-initrd", "/c/initrd.gz", "-append",
               "console=ttyS0")
    assert has(fast, "-device", "e1000,netdev=netdev0,addr=1f,autonegotiation=off")
    kvm = build_argv(spec("cpu = number=1;\n").with_guest(IMG),
                     Placement("/run/d", "kvm", 2222))
    assert has(kvm, "-accel", "kvm", "-cpu", "host")
    plain = build_argv(spec("start = profile=plain;\n").with_guest(IMG), PL)
    assert has(plain, "-kernel", "/c/bzImage") and "-cpu" not in plain
    assert has(plain, "-device", "e1000,netdev=netdev0,addr=1f")


def test_cpu_mem_and_tcg_host_model() -> None:
    s = spec("cpu = model=host,number=4,cpupin=1 2 3 4;\nmem = size=2048;\ndisk = file=/x;\n")
    a = build_argv(s, PL)
    assert has(a, "-cpu", "max", "-smp", "4", "-m", "2048")
    assert notes(s, PL) == ["cpu model=host is impossible under TCG; using -cpu max"]
    assert has(build_argv(s, Placement("/r", "kvm", 1)), "-cpu", "host")
    assert has(argv("cpu = model=qemu64;\ndisk = file=/x;\n"), "-cpu", "qemu64")


def test_hugepage_backend_and_clear_error() -> None:
    text = "mem = size=1024,hugepage=yes;\ndisk = file=/x;\n"
    a = argv(text, Placement("/r", "tcg", 1, hugepage_dir="/dev/hugepages"))
    assert has(a, "-m", "1024", "-object",
               "memory-backend-file,id=mem0,size=1024M,mem-path=/dev/hugepages,share=on,"
               "prealloc=on", "-numa", "node,memdev=mem0")
    with pytest.raises(ConfigError, match="no hugetlbfs mount"):
        argv(text)


def test_disk_every_option_and_snapshot() -> None:
    a = argv("disk = file=/i/a.qcow2,opt_format=qcow2,opt_if=virtio,opt_index=0,opt_media=disk;"
             "\n  file=/i/b.iso,opt_media=cdrom,opt_snapshot=off;\n")
    assert has(a, "-drive",
               "file=/i/a.qcow2,format=qcow2,if=virtio,index=0,media=disk,snapshot=on",
               "-drive", "file=/i/b.iso,media=cdrom")
    assert has(argv("disk = file=/x.img,type=raw;\n"), "-drive",
               "file=/x.img,format=raw,snapshot=on")


def test_commas_in_values_are_escaped_for_qemu() -> None:
    from pytest_dtsvirt.config.load import VmParams
    p = VmParams("vm,0")
    p.add("disk", {"file": "/a,b.img"}, call_origin("disk"))
    a = build_argv(p.build()[0], PL)
    assert has(a, "-drive", "file=/a,,b.img,snapshot=on")
    assert has(a, "-name", "guest=vm,,0,debug-threads=on")


def test_net_nic_user_every_option() -> None:
    a = argv("disk = file=/x;\nnet = type=nic,opt_vlan=1,opt_model=virtio,"
             "opt_macaddr=52:54:00:12:34:56,opt_name=nic1,opt_addr=0x5,opt_vectors=3;\n"
             "  type=user,opt_vlan=1,opt_hostfwd=udp::5555-10.0.2.15:53;\n"
             "  type=user,opt_vlan=2,opt_hostfwd=:1.2.3.4:80-:;\n"
             "  type=nic,opt_vlan=2;\n")
    assert has(a, "-netdev", "user,id=netdev1,restrict=on,hostfwd=udp:127.0.0.1:5555-10.0.2.15:53",
               "-device", "virtio-net-pci,netdev=netdev1,id=nic1,mac=52:54:00:12:34:56,addr=0x5,"
               "vectors=3")
    assert has(a, "-netdev", "user,id=netdev2,restrict=on,hostfwd=tcp:1.2.3.4:80-:22",
               "-device", "e1000,netdev=netdev2")


def test_net_tap_and_bridge() -> None:
    a = argv("disk = file=/x;\nnet = type=nic,opt_vlan=3;\n  type=tap,opt_vlan=3,opt_br=br0;\n"
             "  type=nic,opt_vlan=4;\n"
             "  type=tap,opt_vlan=4,opt_script=/etc/up,opt_downscript=/etc/down;\n"
             "  type=nic,opt_vlan=5;\n  type=bridge,opt_vlan=5,opt_br=virbr1;\n"
             "  type=nic,opt_vlan=6;\n  type=tap,opt_vlan=6,opt_script=/etc/up;\n")
    assert has(a, "-netdev", "bridge,id=netdev1,br=br0", "-device", "e1000,netdev=netdev1")
    assert has(a, "-netdev", "tap,id=netdev2,script=/etc/up,downscript=/etc/down")
    assert has(a, "-netdev", "bridge,id=netdev3,br=virbr1")
    assert has(a, "-netdev", "tap,id=netdev4,script=/etc/up,downscript=no")


def test_devices_passthrough_virtio_cuse() -> None:
    a = argv("disk = file=/x;\ndevice = driver=pci-assign,opt_host=07:10.0,opt_addr=8;\n"
             "  driver=vfio-pci,opt_host=0000:07:10.1;\n"
             "  driver=virtio-net-pci,opt_netdev=netdev0,opt_id=v1,opt_mac=00:00:00:00:01:03,"
             "opt_bus=pci.0,opt_addr=0x3,opt_vectors=2;\n"
             "  driver=vhost-cuse,opt_mac=52:54:00:00:00:09;\n")
    assert has(a, "-device", "vfio-pci,host=07:10.0,id=pt_0,addr=8",
               "-device", "vfio-pci,host=0000:07:10.1,id=pt_1")
    assert has(a, "-device", "virtio-net-pci,netdev=netdev0,id=v1,bus=pci.0,addr=0x3,"
               "mac=00:00:00:00:01:03,vectors=2")
    assert has(a, "-netdev", "tap,id=netdev1,ifname=tap_vhost0,vhost=on,script=no,downscript=no",
               "-device", "virtio-net-pci,netdev=netdev1,id=netdev1_net,mac=52:54:00:00:00:09")


def test_vhost_user_options_settings_and_memfd() -> None:
    from pytest_dtsvirt.config.load import VmParams
    p = VmParams("vm0")
    p.add("disk", {"file": "/x"}, call_origin("disk"))
    p.add("device", {"driver": "vhost-user", "opt_path": "/s/v0", "opt_mac": "00:00:20:00:00:20",
                     "opt_queue": "2", "opt_settings": "csum=off,gso=off"}, call_origin("device"))
    p.add("device", {"driver": "vhost-user", "opt_path": "/s/v1", "opt_vectors": "5"},
          call_origin("device"))
    a = build_argv(p.build()[0], PL)
    assert has(a, "-m", "512", "-object", "memory-backend-memfd,id=mem0,size=512M,share=on",
               "-numa", "node,memdev=mem0")
    assert has(a, "-chardev", "socket,id=char0,path=/s/v0",
               "-netdev", "type=vhost-user,id=netdev1,chardev=char0,vhostforce=on,queues=2",
               "-device", "virtio-net-pci,netdev=netdev1,mq=on,mac=00:00:20:00:00:20,vectors=0,"
               "csum=off,gso=off")
    assert has(a, "-chardev", "socket,id=char1,path=/s/v1",
               "-netdev", "type=vhost-user,id=netdev2,chardev=char1,vhostforce=on",
               "-device", "virtio-net-pci,netdev=netdev2,vectors=5")
    kvm = build_argv(p.build()[0], Placement("/r", "kvm", 1))
    assert has(kvm, "-device", "virtio-net-pci,netdev=netdev1,mq=on,mac=00:00:20:00:00:20,"
               "csum=off,gso=off")


def test_vnc_monitor_migration_usercmd_machine() -> None:
    a = argv("disk = file=/x;\nvnc = displayNum=4;\nmonitor = path=/tmp/vm0_monitor.sock;\n"
             "migration = enable=yes,port=4444;\nusercmd = cmd=-device 'virtio-rng-pci' -k en-us;\n"
             "machine = machine=pc-i440fx-7.2;\n")
    assert has(a, "-vga", "std", "-vnc", "127.0.0.1:4,to=104,password=on") and "none" not in a
    assert has(a, "-chardev", "socket,id=hmp,path=/tmp/vm0_monitor.sock,server=on,wait=off")
    assert has(a, "-incoming", "tcp:127.0.0.1:4444")
    assert a[-4:] == ["-device", "virtio-rng-pci", "-k", "en-us"]
    assert has(a, "-accel", "tcg", "-machine", "pc-i440fx-7.2")
    leased = argv("disk = file=/x;\nvnc = listen=::1;\n", Placement("/r", "tcg", 1, vnc_display=9))
    assert has(leased, "-vnc", "[::1]:9,to=109,password=on")
    # no displayNum and no placement's: qemu searches from display 0 up
    assert has(argv("disk = file=/x;\nvnc = listen=127.0.0.1;\n"),
               "-vnc", "127.0.0.1:0,to=100,password=on")
    assert has(argv("disk = file=/x;\n"), "-display", "none") and "-vnc" not in argv(
        "disk = file=/x;\n")  # VNC only when the cfg asks for it


def test_kernel_boot_and_qemu_path() -> None:
    a = argv("kernel = file=/k/vmlinuz,initrd=/k/initrd,append=root=/dev/vda quiet;\n"
             "qemu = path=/opt/q/bin/qemu-system-x86_64;\n")
    assert has(a, "-kernel", "/k/vmlinuz", "-initrd", "/k/initrd", "-append", "root=/dev/vda quiet")
    assert spec("qemu = path=/a;\n  path=/b;\n").qemu_paths == ("/a", "/b")
    assert "-cpu" not in a


@pytest.mark.parametrize(("root", "rel"), [
    pytest.param(OWN, "vxlan_sample.cfg", id="own"),
    pytest.param(None, "doc-era-dcb6c98f/vxlan_sample.cfg", id="corpus", marks=needs_corpus),
])
def test_reference_vxlan_example_full_argv(root: Path | None, rel: str) -> None:
    params = load_vm_params((root or corpus_dir()) / rel, "vxlan_sample", "vm0")
    for mac in ("00:00:20:00:00:20", "00:00:20:00:00:21"):
        params.add("device", {"driver": "vhost-user", "opt_path": "./vhost-net", "opt_mac": mac},
                   call_origin("device"))
    s, _ = params.build()
    a = build_argv(s, Placement("/run/d", "kvm", 2222, hugepage_dir="/mnt/huge"))
    golden = (Path(__file__).parent / "golden" / "vxlan_vm0.argv").read_text().split("\n")
    assert a == [x for x in golden if x]
