"""``dpdk-testpmd`` as the host's vhost-user backend (the reference's ``tep_termination``).

:class:`TestpmdBackend` starts testpmd with one ``net_vhost`` port per vhost-user socket in a
private run directory (mode 0700), waits until every socket is bound, and drives it like any
:class:`~pytest_dtsvirt.dpdk.testpmd.Testpmd`. Extra ports (a ``net_pcap`` port to inject
and capture frames, ...) come after the vhost ports, as ``vdevs``.

Measured on DPDK 22.11 (Debian 12): the vhost PMD sets no hardware packet type, so in ``io``
forwarding the verbose dump of a VXLAN packet only shows ``sw ptype: L2_ETHER L3_IPV4
L4_UDP`` (``rte_net_get_ptype`` does not parse UDP tunnels) and ``port config N
udp_tunnel_port add vxlan 4789`` answers "Operation not supported". ``csum`` forwarding with
``csum parse-tunnel on N`` does recognise UDP port 4789: the dump of every packet it sends
carries ``RTE_MBUF_F_TX_TUNNEL_VXLAN`` (verbose level 2 or 3). ``csum`` forwarding rewrites
the Ethernet addresses (source: the testpmd port, destination: ``--eth-peer``), so pass the
guest MACs as ``eth_peers``.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence

from pytest_dtsvirt.dpdk.testpmd import Testpmd, TestpmdHost
from pytest_dtsvirt.errors import SessionError

log = logging.getLogger("pytest_dtsvirt.dpdk")

_BOUND = re.compile(r"VHOST_CONFIG: \((?P<path>[^)]+)\) binding succeeded")
#: client mode (``client=1``): the socket is made and DPDK keeps connecting until qemu listens
_CLIENT = re.compile(r"VHOST_CONFIG: \((?P<path>[^)]+)\) vhost-user client: socket created")

#: per-port devargs: one mapping for every port, or one per port
Devargs = Mapping[str, object] | Sequence[Mapping[str, object]]


def port_devargs(devargs: Devargs, ports: int) -> list[dict[str, str]]:
    """``devargs`` as one ``{name: value}`` per port (values as testpmd reads them: True ->
    ``1``); ValueError for a list of the wrong length or a value with ``,``."""
    per_port = [devargs] * ports if isinstance(devargs, Mapping) else list(devargs)
    if len(per_port) not in (0, ports):
        raise ValueError(f"devargs lists {len(per_port)} ports for {ports} vhost-user ports")
    out: list[dict[str, str]] = []
    for extra in per_port or [{}] * ports:
        items = {k: ("1" if v is True else "0" if v is False else str(v))
                 for k, v in extra.items()}
        bad = [f"{k}={v}" for k, v in items.items() if "," in v or "," in k or "=" in k]
        if bad:
            raise ValueError(f"vhost devargs must not contain ',' (or '=' in a name): {bad}")
        out.append(items)
    return out


def build_testpmd_argv(binary: str, sockets: Sequence[str], *, file_prefix: str,
                       mem_mb: int = 512, nb_mbufs: int = 16384, queues: int = 1,
                       eth_peers: Mapping[int, str] | None = None,
                       vdevs: Sequence[str] = (),
                       eal_args: Sequence[str] = (), app_args: Sequence[str] = (),
                       devargs: Devargs = ()) -> list[str]:
    """The ``dpdk-testpmd`` command line: no hugepages, no PCI, one ``net_vhost`` per socket
    (ports 0..N-1) with ``queues`` and the port's ``devargs`` (``client``, ``tso``,
    ``dmas``, anything else passed through; a ``queues`` there wins), then ``vdevs``,
    interactive. ``--no-shconf`` and a unique ``file_prefix`` keep parallel runs apart."""
    extras = port_devargs(devargs, len(sockets))
    argv = [binary, "--no-huge", "-m", str(mem_mb), "--no-pci", "--no-shconf",
            f"--file-prefix={file_prefix}"]
    for index, path in enumerate(sockets):
        if "," in path:
            raise ValueError(f"vhost-user socket path must not contain ',': {path!r}")
        args = {"iface": path, "queues": str(queues), **extras[index]}
        argv += ["--vdev", ",".join([f"net_vhost{index}", *(f"{k}={v}" for k, v in
                                                            args.items())])]
    for vdev in vdevs:
        argv += ["--vdev", vdev]
    argv += [*eal_args, "--", "-i", f"--total-num-mbufs={nb_mbufs}"]
    if queues > 1:
        argv += [f"--rxq={queues}", f"--txq={queues}"]
    for port, mac in sorted((eth_peers or {}).items()):
        argv.append(f"--eth-peer={port},{mac}")
    argv += list(app_args)
    return argv


class TestpmdBackend(Testpmd):
    """``dpdk-testpmd`` serving ``ports`` vhost-user sockets on ``host``::

        with TestpmdBackend(dut.session, ports=2) as pmd:
            vm.set_vm_device(driver="vhost-user", opt_path=pmd.socket_paths[0], ...)
            pmd.set_fwd("io"); pmd.start()
            ...; pmd.port_stats(0).rx_packets
    """

    __test__ = False
    role = "vhost-user testpmd"

    def __init__(self, host: TestpmdHost, ports: int = 2, *, binary: str = "dpdk-testpmd",
                 mem_mb: int = 512, nb_mbufs: int = 16384,
                 eth_peers: Mapping[int, str] | None = None, vdevs: Sequence[str] = (),
                 eal_args: Sequence[str] = (), app_args: Sequence[str] = (),
                 ready_timeout: float = 60.0, socket_name: str = "vhost-net{index}",
                 queues: int = 1, devargs: Devargs = (),
                 socket_paths: Sequence[str] = ()) -> None:
        if ports < 1:
            raise ValueError("ports must be >= 1")
        super().__init__(host, ready_timeout=ready_timeout)
        self.ports = ports
        self.file_prefix = f"dtsvirt-vhost-{secrets.token_hex(4)}"
        self._binary, self._mem_mb, self._nb_mbufs = binary, mem_mb, nb_mbufs
        self._eth_peers = dict(eth_peers or {})
        self._vdevs = tuple(vdevs)
        self._eal_args, self._app_args = tuple(eal_args), tuple(app_args)
        self._socket_name = socket_name
        self.queues = queues
        self._devargs = port_devargs(devargs, ports)
        #: ports in client mode (``client=1``): qemu listens (``opt_server=yes``)
        self.client_ports = {i for i, d in enumerate(self._devargs) if d.get("client") == "1"}
        #: the private run directory (mode 0700) holding the sockets
        self.run_dir: str | None = None
        #: the vhost-user socket paths, port order
        self.socket_paths: list[str] = list(socket_paths)
        if socket_paths and len(socket_paths) != ports:
            raise ValueError(f"{len(socket_paths)} socket paths for {ports} ports")

    def launch(self) -> TestpmdBackend:
        super().launch()
        return self

    def __enter__(self) -> TestpmdBackend:
        return self.launch()

    def _prepare(self) -> list[str]:
        if not self.socket_paths:  # given paths outlive this backend (a restart reuses them)
            made = self.host.run(["mktemp", "-d", "/tmp/dtsvirt-vhost.XXXXXXXX"], check=True)
            self.run_dir = made.stdout.strip()
            self.socket_paths = [f"{self.run_dir}/{self._socket_name.format(index=i)}"
                                 for i in range(self.ports)]
        return build_testpmd_argv(
            self._binary, self.socket_paths, file_prefix=self.file_prefix, mem_mb=self._mem_mb,
            nb_mbufs=self._nb_mbufs, eth_peers=self._eth_peers, vdevs=self._vdevs,
            eal_args=self._eal_args, app_args=self._app_args, queues=self.queues,
            devargs=self._devargs)

    def _check_ready(self, output: str) -> None:
        bound = {m.group("path") for m in _BOUND.finditer(output)}
        bound |= {m.group("path") for m in _CLIENT.finditer(output)}
        missing = [p for p in self.socket_paths if p not in bound]
        if missing:
            raise SessionError(f"testpmd on {self.host.name} did not bind {missing}:\n"
                               f"{output[-2000:]}")
        log.info("testpmd (PID %s) on %s serves %s", self.pid, self.host.name,
                 " ".join(self.socket_paths))

    def _cleanup(self) -> None:
        if self.run_dir is not None:
            self.host.run(["rm", "-rf", "--", self.run_dir], timeout=30)
            self.run_dir = None
        # EAL's runtime directory of this prefix (empty with --no-shconf, but present).
        self.host.run(["sh", "-c", 'rm -rf -- "/var/run/dpdk/$1" '
                       '"${XDG_RUNTIME_DIR:-/tmp}/dpdk/$1"', "sh", self.file_prefix],
                      timeout=30)
