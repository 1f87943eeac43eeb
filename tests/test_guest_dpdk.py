"""The DPDK variant of the test guest: real build, real boot, dpdk-testpmd on virtio ports."""

from __future__ import annotations

import gzip
import logging
import os

import pytest
from support.guest import booted, run, ssh
from test_guest_image import _shared_cache, read_newc

from pytest_dtsvirt.guest import GuestImage, ensure_guest_image

pytestmark = pytest.mark.slow

MACS = ("52:54:00:d0:00:01", "52:54:00:d0:00:02")
PCI = ("0000:00:04.0", "0000:00:05.0")
PLUGIN_DIR = "usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0"


@pytest.fixture(scope="module")
def dpdk_image() -> GuestImage:
    return ensure_guest_image(dpdk=True, progress=logging.getLogger("dtsvirt.guest").info)


def _ports() -> list[str]:
    argv: list[str] = []
    for i, (mac, pci) in enumerate(zip(MACS, PCI, strict=True)):
        argv += ["-netdev", f"user,id=d{i},restrict=on",
                 "-device", f"virtio-net-pci,netdev=d{i},mac={mac},addr={pci[-4:-2]}"]
    return argv


def test_dpdk_image_contents_and_own_key(dpdk_image: GuestImage) -> None:
    base = ensure_guest_image()
    assert dpdk_image.key != base.key
    assert "dpdk-dev" in dpdk_image.packages and "dpdk-dev" not in base.packages
    with open(dpdk_image.initrd, "rb") as fh:
        files = read_newc(gzip.decompress(fh.read()))
    for path in ("usr/bin/dpdk-testpmd", "usr/bin/dpdk-proc-info",
                 "lib/x86_64-linux-gnu/libgcc_s.so.1", "usr/lib/x86_64-linux-gnu/librte_eal.so.23"):
        assert path in files, path
    for plugin in ("net_virtio", "net_vhost", "net_ring", "net_null", "net_pcap",
                   "net_af_packet", "mempool_ring", "bus_pci", "bus_vdev"):
        assert f"{PLUGIN_DIR}/librte_{plugin}.so.23" in files, plugin
    # a plugin reached through the library path must be the plugin dir's file (a symlink),
    # or EAL loads it a second time
    mode, target = files["usr/lib/x86_64-linux-gnu/librte_bus_pci.so.23"]
    assert mode & 0o170000 == 0o120000 and b"pmds-23.0" in target
    kver = next(p.split("/")[2] for p in files if p.startswith("lib/modules/") and
                p.count("/") == 2)
    dep = files[f"lib/modules/{kver}/modules.dep"][1].decode()
    for mod in ("uio_pci_generic.ko", "uio.ko", "vfio-pci.ko", "vfio.ko"):
        assert f"/{mod}:" in dep, mod


def test_dpdk_rebuild_is_byte_identical(dpdk_image: GuestImage, tmp_path: object) -> None:
    cache = _shared_cache(os.path.join(str(tmp_path), "cache"))
    other = ensure_guest_image(cache, dpdk=True)
    assert other.key == dpdk_image.key and other.initrd != dpdk_image.initrd
    with open(other.initrd, "rb") as fa, open(dpdk_image.initrd, "rb") as fb:
        assert fa.read() == fb.read()


BIND = """set -e
for d in {pci}; do
    echo uio_pci_generic > /sys/bus/pci/devices/$d/driver_override
    echo $d > /sys/bus/pci/devices/$d/driver/unbind
    echo $d > /sys/bus/pci/drivers_probe
    readlink /sys/bus/pci/devices/$d/driver
done
"""
TESTPMD = ("(echo 'show port info all'; sleep 2; echo quit) | "
           "timeout 150 dpdk-testpmd -l 0-1 -n 1 -- -i")


def test_testpmd_runs_on_two_virtio_ports_bound_to_uio(dpdk_image: GuestImage) -> None:
    with booted(dpdk_image, "fast", extra=_ports(), cpu="max", smp=2, mem=1024,
                append="hugepages=256") as vm:
        client = ssh(vm, timeout=180)
        rc, out = run(client, "grep HugePages_Total /proc/meminfo; grep hugetlbfs /proc/mounts;"
                              " stat -c %a /; modprobe vfio-pci && grep -c ^vfio_pci /proc/modules")
        assert rc == 0, out
        assert "HugePages_Total:     256" in out and "/dev/hugepages hugetlbfs" in out, out
        assert out.split("\n")[2] == "755", out
        # nothing bound: DPDK probes no port (testpmd itself exits 0 then)
        rc, out = run(client, TESTPMD, timeout=200)
        assert "No probed ethernet devices" in out, out
        rc, out = run(client, BIND.format(pci=" ".join(PCI)))
        assert rc == 0 and out.count("uio_pci_generic") == 2, out
        rc, out = run(client, TESTPMD, timeout=200)
        assert rc == 0, out
        for mac, pci in zip(MACS, PCI, strict=True):
            assert f"mac address: {mac}" in out.lower(), out
            assert f"Device name: {pci}" in out, out
        assert out.count("Driver name: net_virtio") == 2, out
        assert out.count("Link status: up") == 2, out


def test_image_build_dpdk_cli(dpdk_image: GuestImage, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pytest_dtsvirt.cli import main
    assert main(["image", "build", "--dpdk", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["key"] == dpdk_image.key and out["initrd"] == dpdk_image.initrd
    assert "dpdk-dev" in out["packages"]


def test_prune_dpdk_keeps_the_dpdk_build(dpdk_image: GuestImage, tmp_path: object,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_dtsvirt.cli import main
    cache = _shared_cache(os.path.join(str(tmp_path), "cache"))
    old = os.path.join(cache, "0123456789abcdef0123")
    os.makedirs(old)
    assert main(["image", "prune", "--dpdk", "--cache-dir", cache]) == 0
    assert not os.path.exists(old)
    assert os.path.isfile(os.path.join(cache, dpdk_image.key, "initrd.img"))
    assert os.path.isfile(os.path.join(cache, ensure_guest_image().key, "initrd.img"))
    assert f"removed {old}" in capsys.readouterr().out
