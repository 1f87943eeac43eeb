"""Fixtures of the vxlan sample suite: the host's vhost-user backend and the VM on it.

Two flows. The kernel one (``vhost_backend``, ``vxlan_vm_dut``, ``vxlan_guest``): the guest's
kernel makes the VXLAN traffic. The reference's one (``pcap_backend``, ``dpdk_vm_dut``):
testpmd runs in the DPDK guest on both virtio ports, and VXLAN frames crafted with scapy
enter the host's testpmd through a pcap port.

The legacy suite's ``set_up`` started DPDK's ``tep_termination`` on the DUT, waited for its
vhost-user socket, then created ``vm0``, added two vhost-user devices with
``set_vm_device`` and started it. Here ``dpdk-testpmd`` (Debian: ``dpdk-dev``) is the
backend, and the same steps are two fixtures. Teardown runs in reverse: the VM stops (its
factory closes), then testpmd is ended by PID and its sockets removed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packets import VM_MACS, VNI

from pytest_dtsvirt import Dut, TestpmdBackend, VmDut, VmFactory

log = logging.getLogger(__name__)

#: underlay (VTEP) and overlay addresses, inside network namespaces the test creates
UNDERLAY = ("172.31.0.1", "172.31.0.2")
OVERLAY = ("192.168.100.1", "192.168.100.2")
VXLAN_PORT = 4789
PROMPT = "# "
#: frames the guest-testpmd test sends through the tunnel path
FRAMES = 64


@dataclass
class PcapBackend:
    """The host's testpmd with the two vhost-user ports (0, 1) and a pcap port (2) that
    replays ``in_pcap`` and writes what it sends to ``out_pcap`` (paths on the DUT)."""

    pmd: TestpmdBackend
    frames: list[Any]  # the scapy packets written to in_pcap
    in_pcap: str
    out_pcap: str
    dut: Dut

    def fetch_out(self, local_dir: str) -> str:
        """A local copy of ``out_pcap`` (as far as testpmd has written it)."""
        local = os.path.join(local_dir, "out.pcap")
        self.dut.copy_from(self.out_pcap, local)
        return local


@pytest.fixture
def vhost_backend(dut: Dut) -> Iterator[TestpmdBackend]:
    """dpdk-testpmd on the DUT serving two vhost-user sockets (``socket_paths``), bound and
    ready; ``--eth-peer`` set to the guest MACs so ``csum`` forwarding delivers too."""
    if dut.config.is_local and shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed on the DUT (Debian package dpdk-dev)")
    backend = TestpmdBackend(dut.session, ports=2, eth_peers=dict(enumerate(VM_MACS)))
    with backend:
        try:
            yield backend
        finally:  # shown with the test's report when it fails
            log.info("testpmd output (tail):\n%s", backend.transcript()[-4000:])


@pytest.fixture
def pcap_backend(dut: Dut, tmp_path: Path) -> Iterator[PcapBackend]:
    """dpdk-testpmd on the DUT: ``net_vhost`` ports 0 and 1 (the guest's two virtio ports)
    and a ``net_pcap`` port 2 replaying FRAMES VXLAN frames crafted with scapy. Chained
    topology: what port 2 receives goes out on port 0 (to the guest), what port 1 receives
    (from the guest) goes out on port 2 (into ``out_pcap``)."""
    from packets import vxlan_frames, write_pcap

    if dut.config.is_local and shutil.which("dpdk-testpmd") is None:
        pytest.fail("dpdk-testpmd is not installed on the DUT (Debian package dpdk-dev)")
    frames = vxlan_frames(FRAMES, VNI)
    local_in = str(tmp_path / "in.pcap")
    write_pcap(local_in, frames)
    remote_dir = dut.run(["mktemp", "-d", "/tmp/dtsvirt-pcap.XXXXXXXX"], check=True).stdout.strip()
    try:
        in_pcap, out_pcap = f"{remote_dir}/in.pcap", f"{remote_dir}/out.pcap"
        dut.copy_to(local_in, in_pcap)
        backend = TestpmdBackend(
            dut.session, ports=2, vdevs=[f"net_pcap0,rx_pcap={in_pcap},tx_pcap={out_pcap}"],
            app_args=["--port-topology=chained", "--no-flush-rx"])
        with backend:
            try:
                yield PcapBackend(backend, frames, in_pcap, out_pcap, dut)
            finally:
                log.info("host testpmd output (tail):\n%s", backend.transcript()[-3000:])
    finally:
        dut.run(["rm", "-rf", "--", remote_dir], timeout=30)


@pytest.fixture
def dpdk_vm_dut(pcap_backend: PcapBackend, function_vm_factory: VmFactory) -> VmDut:
    """``vm0`` (the test's marker makes it a DPDK guest) with its two vhost-user devices on
    the host testpmd's sockets, started: the reference's flow."""
    vm = function_vm_factory.create("vm0")
    for path, mac in zip(pcap_backend.pmd.socket_paths, VM_MACS, strict=True):
        vm.set_vm_device(driver="vhost-user", opt_path=path, opt_mac=mac)
    return function_vm_factory.boot(vm)


@pytest.fixture
def vxlan_vm_dut(vhost_backend: TestpmdBackend, function_vm_factory: VmFactory) -> VmDut:
    """``vm0`` of ``conf/vxlan_sample.cfg`` with two vhost-user devices on the backend's
    sockets, started: the reference's ``prepare_vxlan_sample_env``."""
    vm = function_vm_factory.create("vm0")
    for path, mac in zip(vhost_backend.socket_paths, VM_MACS, strict=True):
        vm.set_vm_device(driver="vhost-user", opt_path=path, opt_mac=mac)
    return function_vm_factory.boot(vm)


class VxlanGuest:
    """The guest side of the suite: VXLAN setup and overlay pings through ``send_expect``."""

    macs = VM_MACS
    vxlan_port = VXLAN_PORT

    def __init__(self, vm_dut: VmDut) -> None:
        self.vm_dut = vm_dut
        self.ip = ""

    def ifname(self, mac: str) -> str:
        """The guest interface that has ``mac``."""
        out = self.vm_dut.send_expect(
            'for i in /sys/class/net/*; do echo "if=${i##*/} $(cat $i/address)"; done', PROMPT)
        for name, addr in re.findall(r"if=(\S+) ([0-9a-f:]{17})", out):
            if addr == mac.lower():
                return str(name)
        raise AssertionError(f"no guest interface with MAC {mac}:\n{out}")

    def setup(self) -> None:
        """Each vhost-user port in its own netns with a VTEP on it (see vxlan_commands)."""
        out = self.vm_dut.send_expect(
            "for p in /sbin/ip /bin/ip /usr/sbin/ip /usr/bin/ip; do "
            '[ -x "$p" ] && [ ! -L "$p" ] && echo "IP=$p" && break; done', PROMPT)
        found = re.search(r"IP=(\S+)", out)
        assert found, f"iproute2 not found in the guest:\n{out}"
        self.ip = found.group(1)
        ports = (self.ifname(VM_MACS[0]), self.ifname(VM_MACS[1]))
        for cmd in vxlan_commands(self.ip, ports):
            out = self.vm_dut.send_expect(f"{cmd}; echo rc=$?", PROMPT, timeout=30)
            assert "rc=0" in out, f"{cmd!r} failed in the guest:\n{out}"

    def ping(self, count: int) -> tuple[int, int]:
        """Ping the second VTEP's overlay address from the first namespace through the
        tunnel; (transmitted, received)."""
        out = self.vm_dut.send_expect(
            f"{self.ip} netns exec vx0 ping -c {count} -i 0.2 -W 3 {OVERLAY[1]}", PROMPT,
            timeout=count * 0.2 + 30)
        found = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", out)
        assert found, f"no ping summary:\n{out}"
        return int(found.group(1)), int(found.group(2))


@pytest.fixture
def vxlan_guest(vxlan_vm_dut: VmDut) -> VxlanGuest:
    """The started guest, wrapped with the suite's VXLAN steps."""
    return VxlanGuest(vxlan_vm_dut)


def vxlan_commands(ip: str, ports: tuple[str, str]) -> list[str]:
    """Guest commands: each vhost-user port in its own netns with a VTEP on it, the two
    VTEPs tunnelling one overlay subnet through the host's testpmd."""
    cmds = ["modprobe vxlan"]
    for i, port in enumerate(ports):
        ns, peer = f"vx{i}", 1 - i
        cmds += [
            f"{ip} netns add {ns}",
            f"{ip} link set {port} netns {ns}",
            f"{ip} -n {ns} link set lo up",
            f"{ip} -n {ns} addr add {UNDERLAY[i]}/24 dev {port}",
            f"{ip} -n {ns} link set {port} up",
            f"{ip} -n {ns} link add vxlan0 type vxlan id {VNI} local {UNDERLAY[i]} "
            f"remote {UNDERLAY[peer]} dstport {VXLAN_PORT} dev {port}",
            f"{ip} -n {ns} addr add {OVERLAY[i]}/24 dev vxlan0",
            f"{ip} -n {ns} link set vxlan0 up",
        ]
    return cmds
