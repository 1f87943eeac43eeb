"""The typed, validated, frozen VM parameter model. Pure data.

Built by :mod:`pytest_dtsvirt.config.load` from the merged parameters; read by the argv
builder (:mod:`pytest_dtsvirt.qemu.argv`) and the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from pytest_dtsvirt.guest import GuestImage

BootProfile = Literal["fast", "plain"]

DEFAULT_QEMU = "qemu-system-x86_64"
CONTROL_ADDR = "1f"  # guest 00:1f.0: the guest's udev rule names it host_connect


@dataclass(frozen=True)
class Nic:
    """Guest side of a network pair (``net type=nic``)."""

    vlan: int = 0
    model: str = "e1000"  # qemu device name (``virtio`` already mapped to virtio-net-pci)
    mac: str | None = None
    name: str | None = None  # device id
    addr: str | None = None  # guest PCI slot as written (``1f``, ``0x3``, ``3.0``)
    vectors: int | None = None


@dataclass(frozen=True)
class Backend:
    """Host side of a network pair (``net type=user|tap|bridge``)."""

    kind: Literal["user", "tap", "bridge"]
    vlan: int = 0
    hostfwd: str | None = None  # normalised ``tcp:127.0.0.1:2222-:22`` (user only)
    br: str = "br0"
    script: str | None = None
    downscript: str | None = None
    control: bool = False  # the framework's control pair: hostfwd to guest port 22 via placement


@dataclass(frozen=True)
class NetPair:
    """A nic and its backend: ``-netdev <backend>,id=netdevN`` + ``-device <nic>``."""

    nic: Nic
    backend: Backend

    @property
    def control(self) -> bool:
        """True for the framework's control pair (SSH hostfwd, ``host_connect``)."""
        return self.backend.control


@dataclass(frozen=True)
class Passthrough:
    """``device driver=pci-assign|vfio-pci``: a host PCI device (always vfio-pci)."""

    host: str
    addr: str | None = None


@dataclass(frozen=True)
class VirtioNet:
    """``device driver=virtio-net-pci``."""

    netdev: str | None = None
    id: str | None = None
    mac: str | None = None
    bus: str | None = None
    addr: str | None = None
    vectors: int | None = None
    settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VhostUser:
    """``device driver=vhost-user``: chardev + vhost-user netdev + virtio-net-pci."""

    path: str
    mac: str | None = None
    queues: int | None = None
    vectors: int | None = None  # None: qemu's default (2N+2 with N>1 queues); TCG: always 0
    server: bool = False  # qemu listens (server=on,wait=off); the backend connects
    reconnect: int | None = None  # client mode: qemu's reconnect= seconds
    settings: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class VhostCuse:
    """``device driver=vhost-cuse`` (obsolete): tap with ``vhost=on`` + virtio-net-pci."""

    mac: str | None = None
    settings: tuple[tuple[str, str], ...] = ()


Device = Passthrough | VirtioNet | VhostUser | VhostCuse


@dataclass(frozen=True)
class Cpu:
    """``cpu``: model (None: qemu's default or the profile's), vCPU count, host pins."""

    model: str | None = None
    number: int = 1
    pins: tuple[int, ...] = ()


@dataclass(frozen=True)
class Mem:
    """``mem``: size in MB and hugetlbfs backing."""

    size_mb: int = 512
    hugepage: bool = False


#: 2 MB hugepages a ``guest dpdk=yes`` VM reserves unless it says (dpdk-testpmd's default
#: mbuf pools and two ports fit; measured under TCG)
DPDK_HUGEPAGES = 256
#: MB a guest needs besides its hugepages (kernel, the unpacked initramfs, testpmd's heap)
GUEST_MEM_HEADROOM_MB = 256


@dataclass(frozen=True)
class Guest:
    """``guest``: which variant of the embedded test guest, and hugepages reserved at boot."""

    dpdk: bool = False
    hugepages: int = 0  # 2 MB pages, kernel command line hugepages=N
    disk: bool = False  # boot the guest's disk image (no -kernel), /data on its disk

    @property
    def min_mem_mb(self) -> int:
        """The smallest ``mem size`` that holds the hugepages and the rest of the guest."""
        return self.hugepages * 2 + GUEST_MEM_HEADROOM_MB


@dataclass(frozen=True)
class Disk:
    """``disk``: one ``-drive``."""

    file: str
    format: str | None = None
    interface: str | None = None
    index: int | None = None
    media: str | None = None
    snapshot: bool = True


#: the password of a disk image's guest when the cfg names no ``login`` (the legacy default)
LEGACY_PASSWORD = "tester"  # noqa: S105 (documented legacy default, not a secret of ours)


@dataclass(frozen=True)
class Login:
    """``login``: SSH credentials of the guest (the password never appears in repr).

    ``password`` None: the cfg named no login; the runtime generates a password for the
    project's test guest and uses :data:`LEGACY_PASSWORD` for a disk image."""

    user: str = "root"
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Vnc:
    """``vnc``: display (None: leased by the runtime) and listen address."""

    display: int | None = None
    listen: str = "127.0.0.1"


@dataclass(frozen=True)
class Migration:
    """``migration``: ``-incoming tcp:HOST:PORT``."""

    port: int
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class VmSpec:
    """Everything needed to build one VM's qemu command line, validated and frozen."""

    name: str
    login: Login = Login()
    cpu: Cpu = Cpu()
    mem: Mem = Mem()
    guest: Guest = Guest()
    enable_kvm: bool = True
    boot_timeout: float = 120.0
    qemu_paths: tuple[str, ...] = (DEFAULT_QEMU,)
    machine: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None
    disks: tuple[Disk, ...] = ()
    nets: tuple[NetPair, ...] = ()
    devices: tuple[Device, ...] = ()
    vnc: Vnc | None = None
    monitor_path: str | None = None  # HMP socket; None: in the run dir
    migration: Migration | None = None
    usercmd: tuple[str, ...] = ()  # extra argv words
    profile: BootProfile | None = None  # as configured (start profile=); see boot_profile
    #: filled by with_guest(): the default guest was substituted
    default_guest: bool = False

    @property
    def uses_default_guest(self) -> bool:
        """No disk and no kernel: the project's own test guest is booted."""
        return self.default_guest or (not self.disks and self.kernel is None)

    @property
    def boot_profile(self) -> BootProfile:
        """``fast`` by default for the default guest, else ``plain`` (``start profile=``)."""
        if self.profile is not None:
            return self.profile
        return "fast" if self.uses_default_guest else "plain"

    @property
    def vhost_user_paths(self) -> tuple[str, ...]:
        """Socket paths of the vhost-user devices, in order."""
        return tuple(d.path for d in self.devices if isinstance(d, VhostUser))

    @property
    def passthrough_hosts(self) -> tuple[str, ...]:
        """Host PCI addresses of the passthrough devices, in order (ids ``pt_0``...)."""
        return tuple(d.host for d in self.devices if isinstance(d, Passthrough))

    @property
    def control_pair(self) -> NetPair | None:
        """The framework's control NIC pair, if any."""
        return next((p for p in self.nets if p.control), None)

    def with_guest(self, image: GuestImage) -> VmSpec:
        """This spec booting the default test guest ``image`` (kernel, initrd, append set;
        for ``guest disk=yes`` its disk image instead, a virtio drive opened ``snapshot=on``).

        The fast profile boots the uncompressed ``vmlinux`` (PVH entry), plain the bzImage.
        A ``kernel append=...`` of the cfg is added to the guest's own command line.
        Returns ``self`` unchanged when the spec names its own disk or kernel."""
        if not self.uses_default_guest or self.kernel is not None:
            return self
        if self.guest.disk:
            if image.disk is None:
                raise ValueError(f"guest image {image.key} has no disk (build it with disk)")
            boot_disk = Disk(file=image.disk, format="qcow2", interface="virtio")
            return replace(self, disks=(boot_disk, *self.disks), default_guest=True,
                           profile=self.boot_profile)
        kernel = image.vmlinux if self.boot_profile == "fast" else image.kernel
        append = f"{image.append} {self.append}" if self.append else image.append
        return replace(self, kernel=kernel, initrd=image.initrd, append=append,
                       default_guest=True, profile=self.boot_profile)


__all__ = [
    "CONTROL_ADDR",
    "DEFAULT_QEMU",
    "LEGACY_PASSWORD",
    "Backend",
    "BootProfile",
    "Cpu",
    "Device",
    "Disk",
    "Guest",
    "Login",
    "Mem",
    "Migration",
    "NetPair",
    "Nic",
    "Passthrough",
    "VhostCuse",
    "VhostUser",
    "VirtioNet",
    "VmSpec",
    "Vnc",
]
