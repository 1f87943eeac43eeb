"""Real boots of the test guest under TCG with a plain qemu argv (tests/support/guest.py)."""

from __future__ import annotations

import logging
import time

import pytest
from support.guest import Vm, booted, qga, run, session_image, ssh, wait_host_connect

from pytest_dtsvirt.guest import GuestImage, ensure_guest_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def image() -> GuestImage:
    return session_image()


def _shutdown(vm: Vm, within: float = 10.0) -> float:
    start = time.monotonic()
    qga(vm.qga_path, "guest-shutdown")
    rc = vm.proc.wait(within)
    assert rc == 0, vm.stderr()
    return time.monotonic() - start


def test_fast_profile_agent_network_ssh_and_shutdown(image: GuestImage) -> None:
    mac, virtio_mac = "52:54:00:ab:cd:01", "52:54:00:ab:cd:02"
    extra = ["-netdev", "user,id=n1,restrict=on",
             "-device", f"virtio-net-pci,netdev=n1,mac={virtio_mac}"]
    with booted(image, "fast", mac=mac, extra=extra) as vm:
        assert qga(vm.qga_path, "guest-ping") == {}
        hc = wait_host_connect(vm)
        assert hc["ipv4"] == ["10.0.2.15"]
        assert hc["mac"] == mac
        assert "dtsvirt-guest: init start" in vm.console()
        client = ssh(vm)
        rc, out = run(client, "uname -r; id -u")
        assert rc == 0 and out.split()[1] == "0", out
        assert any(out.split()[0] in name for name in image.packages), out
        rc, out = run(client, "ip netns add x && ip netns list && ip netns exec x ip -br link")
        assert rc == 0 and "x" in out.split() and "lo" in out, out
        rc, out = run(client, "modprobe vxlan && ip link add vx0 type vxlan id 42 "
                              "dstport 4789 dev host_connect && ip -d link show vx0")
        assert rc == 0 and "vxlan id 42" in out, out
        # the virtio-net NIC's link is up, found by its MAC
        rc, out = run(client, "for d in /sys/class/net/*; do echo ${d##*/} $(cat $d/address) "
                              "$(cat $d/operstate); done")
        line = next(x for x in out.splitlines() if virtio_mac in x)
        assert line.split()[2] in ("up", "unknown"), out
        assert not line.startswith("host_connect")
        rc, out = run(client, "readlink /dev/virtio-ports/org.qemu.guest_agent.0")
        assert rc == 0 and out.strip().startswith("../vport"), out
        # /init's port-link loop ends once every port is linked: nothing of init keeps
        # waking up (a snapshot of this guest would carry it into every restore)
        rc, out = run(client, "i=0; while ps -o args | grep -q '^{init} /bin/sh /init$' "
                              "&& [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done; "
                              "ps -o args")
        assert rc == 0, out
        assert not {"{init} /bin/sh /init", "sleep 1"} & {x.strip() for x in out.splitlines()}
        client.close()
        assert _shutdown(vm) < 5.0
    assert vm.proc.poll() is not None


def test_two_vms_at_once_do_not_collide(image: GuestImage) -> None:
    macs = ("52:54:00:ab:cd:11", "52:54:00:ab:cd:12")
    with booted(image, "fast", mac=macs[0]) as a, booted(image, "fast", mac=macs[1]) as b:
        assert a.ssh_port != b.ssh_port and a.qga_path != b.qga_path
        for vm, mac in ((a, macs[0]), (b, macs[1])):
            assert wait_host_connect(vm)["mac"] == mac
        outs = []
        for vm in (a, b):
            rc, out = run(ssh(vm), "cat /sys/class/net/host_connect/address")
            assert rc == 0
            outs.append(out.strip())
        assert tuple(outs) == macs
        for vm in (a, b):
            _shutdown(vm)
    assert a.proc.poll() is not None and b.proc.poll() is not None


def test_plain_profile_boots_the_packaged_bzimage(image: GuestImage) -> None:
    with booted(image, "plain") as vm:
        assert "-kernel" in vm.argv and image.kernel in vm.argv
        wait_host_connect(vm, timeout=90)
        rc, out = run(ssh(vm, timeout=90), "cat /proc/cmdline")
        assert rc == 0 and "console=ttyS0" in out
        _shutdown(vm)


def _sha256(path: str) -> str:
    import hashlib
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def test_disk_image_boots_without_kernel_and_is_not_written() -> None:
    image = ensure_guest_image(disk=True, progress=logging.getLogger("dtsvirt.guest").info)
    assert image.disk is not None and image.disk.endswith(".qcow2")
    before = _sha256(image.disk)
    with booted(image, "disk") as vm:
        assert "-kernel" not in vm.argv
        wait_host_connect(vm, timeout=90)
        rc, out = run(ssh(vm, timeout=60), "cat /proc/cmdline; echo scribble > /tmp/x")
        assert rc == 0 and "BOOT_IMAGE=/vmlinuz" in out, out
        _shutdown(vm)
    assert _sha256(image.disk) == before


def test_openssh_variant_with_an_extra_package() -> None:
    image = ensure_guest_image(ssh="openssh", extra=("ethtool",),
                               progress=logging.getLogger("dtsvirt.guest").info)
    assert "openssh-server" in image.packages and "ethtool" in image.packages
    assert "dropbear-bin" not in image.packages
    with booted(image, "fast") as vm:
        wait_host_connect(vm)
        client = ssh(vm)
        assert "OpenSSH" in client.get_transport().remote_version  # type: ignore[union-attr]
        rc, out = run(client, "/sbin/ethtool -i host_connect; ip netns add y && ip netns")
        assert rc == 0 and "driver: e1000" in out and "y" in out.split(), out
        _shutdown(vm)
