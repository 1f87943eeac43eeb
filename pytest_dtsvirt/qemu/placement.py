"""Where a VM runs on its DUT: run dir, accelerator, leased port and display.

The runtime decides a :class:`Placement` (leases, probes) and hands it to the pure argv
builder; every derived path lives in the private run dir (mode 0700).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pytest_dtsvirt.config.model import DEFAULT_QEMU

Accel = Literal["kvm", "tcg"]


@dataclass(frozen=True)
class Placement:
    """What the runtime decided for one VM on its DUT."""

    run_dir: str  # private dir on the DUT (0700); unix socket paths must stay < 108 bytes
    accel: Accel
    hostfwd_port: int  # host port forwarded to guest port 22 of the control pair
    qemu: str = DEFAULT_QEMU  # the qemu binary chosen from spec.qemu_paths
    vnc_display: int | None = None  # first display tried when the spec's vnc has no displayNum
    hugepage_dir: str | None = None  # hugetlbfs mount on the DUT (needed for mem hugepage=yes)

    def _path(self, name: str) -> str:
        return f"{self.run_dir.rstrip('/')}/{name}"

    @property
    def qmp_socket(self) -> str:
        """QMP socket the framework talks to (``qemu.qmp``)."""
        return self._path("qmp.sock")

    @property
    def qga_socket(self) -> str:
        """Host end of the guest agent's virtio-serial port."""
        return self._path("qga.sock")

    @property
    def monitor_socket(self) -> str:
        """HMP monitor socket for humans (``nc -U``), unless the spec names one."""
        return self._path("monitor.sock")

    @property
    def console_log(self) -> str:
        """The guest's serial console, written to a file."""
        return self._path("console.log")

    @property
    def pidfile(self) -> str:
        """qemu's ``-pidfile``."""
        return self._path("qemu.pid")

    @property
    def qemu_log(self) -> str:
        """qemu's stderr: ``runtime/supervisor.py`` redirects it here (``$0/qemu.log``)."""
        return self._path("qemu.log")


def probe_hugepage_dir(read_text: Callable[[str], str]) -> str | None:
    """The first hugetlbfs mount point in ``/proc/mounts`` (read through ``read_text``)."""
    try:
        mounts = read_text("/proc/mounts")
    except OSError:
        return None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "hugetlbfs":
            return fields[1].replace("\\040", " ")
    return None


__all__ = ["Accel", "Placement", "probe_hugepage_dir"]
