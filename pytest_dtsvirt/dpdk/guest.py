"""The VM DUT's DPDK API: ``ports_info``, ``get_ports``, ``bind_interfaces_linux`` and
``testpmd()`` -- what legacy suites call on ``vm_dut`` before running DPDK in the guest.

:class:`DpdkGuestMixin` is mixed into :class:`~pytest_dtsvirt.session.dut.VmDut`.
:class:`GuestTestpmd` is the same :class:`~pytest_dtsvirt.dpdk.testpmd.Testpmd` driver as the
host's vhost-user backend, started in the guest on the ports bound to a DPDK driver; it
refuses to start (with the VM, the ports and the fix in the message) when no port is bound,
when the guest has no hugepages or too few vCPUs, when EAL probes no port, and when a port's
link stays down.

Measured under TCG (Debian 12, DPDK 22.11): EAL needs 2 MB hugepages (``--no-huge`` cannot
drive a virtio PCI device without a vIOMMU: IOVA must be PA), SSE4.2 (``-cpu max``), and the
ports on ``uio_pci_generic``; testpmd exits 0 with "No probed ethernet devices" when nothing
is bound, so that case is caught here before and after the launch.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

from pytest_dtsvirt.dpdk import ports as ports_mod
from pytest_dtsvirt.dpdk.parse import PortSummary
from pytest_dtsvirt.dpdk.testpmd import Testpmd, TestpmdHost
from pytest_dtsvirt.errors import SessionError

log = logging.getLogger("pytest_dtsvirt.dpdk")

_BIND_FIX = "bind them first: vm_dut.bind_interfaces_linux('uio_pci_generic')"
_GUEST_FIX = "give the VM the DPDK guest: guest = dpdk=yes (cfg, marker or set_vm_guest)"


class GuestTestpmd(Testpmd):
    """``dpdk-testpmd`` in a guest on PCI ports ``pcis`` (already bound to a DPDK driver)."""

    __test__ = False

    def __init__(self, host: TestpmdHost, vm_name: str, pcis: Sequence[str], *,
                 cores: str = "0-1", nb_mbufs: int = 8192, env: Sequence[str] = (),
                 eal_args: Sequence[str] = (), app_args: Sequence[str] = (),
                 binary: str = "dpdk-testpmd", ready_timeout: float = 120.0,
                 link_timeout: float = 20.0) -> None:
        super().__init__(host, ready_timeout=ready_timeout)
        self.role = f"testpmd in {vm_name}"
        self.vm_name = vm_name
        self.pcis = tuple(pcis)
        self.link_timeout = link_timeout
        self.file_prefix = f"dtsvirt-{secrets.token_hex(4)}"
        self._cores, self._nb_mbufs, self._binary = cores, nb_mbufs, binary
        self._env = tuple(env)
        self._eal_args, self._app_args = tuple(eal_args), tuple(app_args)
        #: ``show port summary all`` once every link was up
        self.summary: list[PortSummary] = []

    def launch(self) -> GuestTestpmd:
        super().launch()
        return self

    def __enter__(self) -> GuestTestpmd:
        return self.launch()

    def _prepare(self) -> list[str]:
        argv = ["env", *self._env] if self._env else []
        argv += [self._binary, "-l", self._cores, "-n", "1", "--in-memory",
                 f"--file-prefix={self.file_prefix}"]
        for pci in self.pcis:
            argv += ["-a", pci]
        argv += [*self._eal_args, "--", "-i", f"--total-num-mbufs={self._nb_mbufs}",
                 *self._app_args]
        return argv

    def _cleanup(self) -> None:
        # EAL's runtime directory of this prefix (--in-memory writes nothing else); best
        # effort: the guest may be gone already
        with contextlib.suppress(SessionError, OSError):
            self.host.run(["rm", "-rf", "--", f"/var/run/dpdk/{self.file_prefix}"], timeout=10)

    def _check_ready(self, output: str) -> None:
        if "No probed ethernet devices" in output:
            raise SessionError(
                f"{self.role}: DPDK probed no port (asked for {' '.join(self.pcis)}): are they "
                f"bound to a DPDK driver? {_BIND_FIX}\n{output[-1500:]}")
        deadline = time.monotonic() + self.link_timeout
        while True:
            summary = self.port_summary()
            down = [p for p in summary if not p.link_up]
            if len(summary) == len(self.pcis) and not down:
                self.summary = summary
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        if len(summary) != len(self.pcis):
            raise SessionError(f"{self.role}: {len(summary)} ports probed, expected "
                               f"{len(self.pcis)} ({' '.join(self.pcis)}); {_BIND_FIX}")
        names = ", ".join(f"port {p.port} ({p.name})" for p in down)
        raise SessionError(
            f"{self.role}: link down on {names} after {self.link_timeout:.0f} s: is the host "
            "side of the port up (a vhost-user backend must serve the VM's socket)?")


class DpdkGuestMixin:
    """The DPDK API of a guest DUT (mixed into ``VmDut`` after ``Dut``, whose ``session``,
    ``vm_name`` and ``process_tag`` it uses)."""

    session: Any
    _ports_info: list[dict[str, Any]] | None = None
    _kernel_drivers: dict[str, str]

    @property
    def ports_info(self) -> list[dict[str, Any]]:
        """One dict per guest NIC other than ``host_connect``, PCI order: ``pci``, ``mac``,
        ``intf`` (empty while bound to a DPDK driver), ``driver``, ``type``
        (vendor:device). Scanned on first use and after each bind; the MAC is kept from
        the scan that saw the kernel interface."""
        if self._ports_info is None:
            self.rescan_ports()
        assert self._ports_info is not None
        return self._ports_info

    def rescan_ports(self) -> list[dict[str, Any]]:
        """Read the ports from sysfs again (keeping the MACs and kernel drivers known)."""
        old = {str(p["pci"]): p for p in self._ports_info or []}
        if not hasattr(self, "_kernel_drivers"):
            self._kernel_drivers = {}
        ports = ports_mod.scan(self.session)
        for port in ports:
            pci = str(port["pci"])
            if not port["mac"] and pci in old:
                port["mac"] = old[pci]["mac"]
            if port["driver"] and port["driver"] not in ports_mod.DPDK_DRIVERS:
                self._kernel_drivers.setdefault(pci, str(port["driver"]))
        self._ports_info = ports
        return ports

    @property
    def vm_name(self) -> str:
        raise NotImplementedError

    @property
    def process_tag(self) -> str:
        raise NotImplementedError

    def get_ports(self, nic_type: str = "any", perf: Any = None,
                  socket: Any = None) -> list[int]:
        """Port indexes into :attr:`ports_info` (every guest NIC: ``nic_type`` any/cfg)."""
        return list(range(len(self.ports_info)))

    def bind_interfaces_linux(self, driver: str = "uio_pci_generic",
                              nics_to_bind: Sequence[int] | None = None) -> None:
        """Bind the ports (all, or the indexes ``nics_to_bind``) to ``driver``:
        ``uio_pci_generic``, ``vfio-pci`` (needs a vIOMMU), or the kernel driver back
        (``"kernel"`` or its name, e.g. ``virtio-pci``). Checked: an error names each port
        that did not end up on the driver."""
        ports = self.ports_info
        chosen = [ports[i] for i in (nics_to_bind if nics_to_bind is not None
                                     else range(len(ports)))]
        if not chosen:
            log.info("%s: no port to bind to %s", self.vm_name, driver)
            return
        kernel = sorted({self._kernel_drivers.get(str(p["pci"]), "") for p in chosen} - {""})
        if driver == "kernel":
            if len(kernel) != 1:
                raise SessionError(f"{self.vm_name}: bind_interfaces_linux('kernel'): the "
                                   f"kernel driver of the ports is not known ({kernel}); "
                                   "name it")
            driver = kernel[0]
        valid = (*ports_mod.DPDK_DRIVERS, *kernel)
        if driver not in valid:
            raise SessionError(f"{self.vm_name}: bind_interfaces_linux({driver!r}): not a "
                               f"driver for these ports; valid: {', '.join(valid)}, kernel")
        ports_mod.bind(self.session, self.vm_name, driver, [str(p["pci"]) for p in chosen])
        self.rescan_ports()

    def testpmd(self, ports: Sequence[int] | None = None, *, cores: str | None = None,
                nb_mbufs: int = 8192, eal_args: Sequence[str] = (),
                app_args: Sequence[str] = (), ready_timeout: float = 120.0,
                link_timeout: float = 20.0) -> GuestTestpmd:
        """Start ``dpdk-testpmd -i`` in the guest on ``ports`` (indexes into
        :attr:`ports_info`; default: every port bound to a DPDK driver) and return it,
        ready, every link up. :meth:`kill_all` ends it (it carries the DUT's process tag);
        so does its ``quit()``/``close()``."""
        self._check_dpdk_ready(cores)
        info = self.ports_info
        chosen = [info[i] for i in ports] if ports is not None else [
            p for p in info if p["driver"] in ports_mod.DPDK_DRIVERS]
        unbound = [p for p in chosen if p["driver"] not in ports_mod.DPDK_DRIVERS]
        if not chosen or unbound:
            listing = ", ".join(f"{p['pci']} on {p['driver'] or 'no driver'}"
                                for p in (unbound or info)) or "none"
            raise SessionError(f"{self.vm_name}: testpmd needs ports bound to a DPDK driver "
                               f"({', '.join(ports_mod.DPDK_DRIVERS)}); ports: {listing}; "
                               f"{_BIND_FIX}")
        pmd = GuestTestpmd(self.session, self.vm_name, [str(p["pci"]) for p in chosen],
                           cores=cores or "0-1", nb_mbufs=nb_mbufs, env=[self.process_tag],
                           eal_args=eal_args, app_args=app_args, ready_timeout=ready_timeout,
                           link_timeout=link_timeout)
        return pmd.launch()

    def _check_dpdk_ready(self, cores: str | None) -> None:
        """Hugepages, vCPUs and the testpmd binary, before EAL would fail on them."""
        out = str(self.session.run(
            ["sh", "-c", "command -v dpdk-testpmd || echo no-testpmd; "
             "grep -c ^processor /proc/cpuinfo; grep HugePages_Free /proc/meminfo"],
            timeout=30).stdout)
        if "no-testpmd" in out:
            raise SessionError(f"{self.vm_name}: the guest has no dpdk-testpmd; {_GUEST_FIX}")
        free = re.search(r"HugePages_Free:\s*(\d+)", out)
        if free is None or int(free.group(1)) == 0:
            raise SessionError(f"{self.vm_name}: the guest has no free hugepages; "
                               f"{_GUEST_FIX} (option hugepages=N)")
        cpus = re.search(r"^(\d+)$", out, re.M)
        if cores is None and (cpus is None or int(cpus.group(1)) < 2):
            raise SessionError(f"{self.vm_name}: testpmd needs 2 vCPUs (a main and a "
                               "forwarding core); give the VM cpu = number=2")
