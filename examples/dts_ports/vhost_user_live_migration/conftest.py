"""The vhost_user_live_migration port (legacy TestSuite_vhost_user_live_migration.py with the
compat layer).

Legacy runs it on two DUTs (host and backup), each with a NIC cabled to a tester that sends
with scapy. This machine has one DUT and no NIC, so (``# PORT(hw):`` in the suite):

- ``dts_duts``: the backup DUT is a second connection to this same host (its own shells,
  ``base_dir`` and EAL file prefix); the backup VM waits for the stream on the loopback;
- ``dts_tester``: the tester is a network namespace on this host. Its interface is one end
  of a veth pair; the other end, in the DUT's namespace, is each DUT's "NIC": a ``net_pcap``
  port of the vhost testpmd (:meth:`HostTester.dut_nic`). A tester session's ``scapy`` runs
  scapy in the namespace, so the suite's own ``sendp(..., iface=...)`` crosses the veth into
  the vhost testpmd, which forwards it (``io``) over vhost-user into the guest.
"""

from __future__ import annotations

import secrets
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_dtsvirt import Dut, connect


class HostTester:
    """The legacy tester's names the suite uses, on a network namespace of ``dut``."""

    def __init__(self, dut: Dut) -> None:
        self._dut = dut
        tag = secrets.token_hex(3)
        self.netns = f"dtsvirt-lm-{tag}"
        self.iface = f"dtlm{tag}t"  # the tester's port, in the namespace
        self.dut_iface = f"dtlm{tag}d"  # the DUT's "NIC", in the DUT's namespace
        self._sessions: list[Any] = []
        # scapy of this virtualenv on a local DUT (the dev extra); a remote DUT's own
        scapy = Path(sys.executable).parent / "scapy"
        local = dut.config.is_local
        self._scapy = str(scapy) if local and scapy.exists() else "scapy"
        if not dut.run(["sh", "-c", 'command -v "$1"', "sh", self._scapy], timeout=30).ok:
            pytest.fail(f"scapy is not installed on {dut.name} (pip install scapy: the "
                        "project's dev extra)")
        self._ip("netns", "add", self.netns)
        try:
            self._ip("link", "add", self.dut_iface, "type", "veth", "peer", "name", self.iface,
                     "netns", self.netns)
            # no IPv6 on either end: the kernel's own packets (router solicitations, MLD)
            # would reach the guest too; only scapy's packets cross the link
            self._run("sh", "-c", 'echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"', "sh",
                      self.dut_iface)
            self._run("ip", "netns", "exec", self.netns, "sh", "-c",
                      'echo 1 > "/proc/sys/net/ipv6/conf/$1/disable_ipv6"', "sh", self.iface)
            self._ip("link", "set", self.dut_iface, "up")
            self._ip("-n", self.netns, "link", "set", self.iface, "up")
        except BaseException:
            self.close()
            raise

    def _run(self, *argv: str) -> None:
        self._dut.run(list(argv), timeout=30, check=True)

    def _ip(self, *args: str) -> None:
        self._run("ip", *args)

    # -- the legacy tester names ---------------------------------------------------------------
    def get_local_port_bydut(self, dut_port: int, dut_ip: str) -> int:
        """The tester port cabled to ``dut_port``: the one veth end (both DUTs share it)."""
        return 0

    def get_interface(self, port: int) -> str:
        """The tester port's interface (in the tester's namespace)."""
        return self.iface

    def create_session(self, name: str = "") -> Any:
        """A shell on the DUT host whose ``scapy`` runs scapy in the tester's namespace."""
        shell = self._dut.new_session(name)
        self._sessions.append(shell)
        shell.send_expect(f"scapy() {{ ip netns exec {shlex.quote(self.netns)} "
                          f'{shlex.quote(self._scapy)} "$@"; }}', "# ")
        return shell

    def destroy_session(self, session: Any) -> None:
        """End what runs in ``session`` (scapy) and close it."""
        if session in self._sessions:
            self._sessions.remove(session)
        if not session.closed:
            self._dut.session.kill_tree(session.pid)  # the shell, scapy and what else it ran
            session.close()

    # -- the DUT side ---------------------------------------------------------------------------
    def dut_nic(self, dut_port: int) -> str:
        """The devargs of the DUT's "NIC" for ``dut_port``: a net_pcap port on the DUT end of
        the link (EAL's ``-a`` takes it as it took the NIC's PCI address)."""
        return f"net_pcap{dut_port},iface={self.dut_iface}"

    def close(self) -> None:
        """End the sessions, remove the namespace (and with it the veth pair)."""
        for shell in list(self._sessions):
            self.destroy_session(shell)
        self._dut.run(["ip", "netns", "del", self.netns], timeout=30)
        self._dut.run(["ip", "link", "del", self.dut_iface], timeout=30)  # if it is left


@pytest.fixture(scope="class")
def dts_tester(dut: Dut) -> Iterator[HostTester]:
    """The legacy ``self.tester`` (see :class:`HostTester`)."""
    tester = HostTester(dut)
    try:
        yield tester
    finally:
        tester.close()


@pytest.fixture(scope="class")
def dts_duts(dut: Dut) -> Iterator[list[Any]]:
    """The legacy ``self.duts``: this host twice (host and backup DUT), as two connections.
    Each removes the EAL runtime directories of the testpmds the suite started with its
    ``create_eal_parameters`` prefixes when it closes (the backup here, the host DUT at the
    end of the session)."""
    backup = connect(dut.config)
    backup.name = f"{dut.name}-backup"
    try:
        yield [dut, backup]
    finally:
        backup.close()


#: the virtio-net cases (3, 4, 7, 8): the guest's kernel driver, tcpdump in a screen
VIRTIO_NET_CASES = (
    "test_migrate_with_split_ring_virtio_net",
    "test_adjust_split_ring_virtio_net_queue_numbers_while_migreting_with_virtio_net",
    "test_migrate_with_packed_ring_virtio_net",
    "test_adjust_packed_ring_virtio_net_queue_numbers_while_migreting_with_virtio_net",
)
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(
        reason="needs the legacy NetDevice objects in the guest's ports_info[i]['port'] "
               "(get_nic_driver, bind_driver, get_interface_name) and tcpdump/ethtool in "
               "the DPDK guest; the virtio-pmd cases (1, 2, 5, 6) run")
    for item in items:
        if item.path.resolve().parent == HERE and item.name in VIRTIO_NET_CASES:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _host_tools() -> None:
    for prog, pkg in (("dpdk-testpmd", "dpdk-dev"), ("ip", "iproute2")):
        if shutil.which(prog) is None:
            pytest.fail(f"{prog} is not installed on the DUT (Debian package {pkg})")
