"""VmSpec + Placement -> qemu argv. Pure; one small function per parameter group.

Options that map 1:1 to a qemu property are emitted from the schema
(:func:`~pytest_dtsvirt.config.schema.qemu_props`), so such an option is declared only there.
Every generated line is accepted by qemu 7.2. Device ids come from position: the i-th net
pair's netdev is ``netdev<i>``, netdevs of devices continue the count; the j-th vhost-user
device's chardev is ``char<j>``; the k-th passthrough device is ``pt_<k>``. Values are put
into qemu option strings with ``,`` doubled (qemu's escape), and no element ever goes
through a shell.
"""

from __future__ import annotations

from collections.abc import Callable

from pytest_dtsvirt.config.model import (
    Disk,
    NetPair,
    Passthrough,
    VhostCuse,
    VhostUser,
    VirtioNet,
    VmSpec,
)
from pytest_dtsvirt.config.schema import qemu_props
from pytest_dtsvirt.errors import ConfigError, Location
from pytest_dtsvirt.qemu.placement import Placement

QGA_PORT_NAME = "org.qemu.guest_agent.0"
MEM_ID = "mem0"


def q(value: str) -> str:
    """``value`` escaped for a qemu option string (``,`` -> ``,,``)."""
    return value.replace(",", ",,")


def opts(head: str, *pairs: tuple[str, object | None]) -> str:
    """``head,k=v,...`` skipping None values; values escaped."""
    parts = [head] + [f"{k}={q(str(v))}" for k, v in pairs if v is not None]
    return ",".join(parts)


def cpu_model(spec: VmSpec, accel: str) -> tuple[str | None, str | None]:
    """``(model for -cpu or None, note)``: host -> max under TCG; the fast profile's default
    is ``qemu64,+rdrand`` under TCG and ``host`` under KVM; a ``guest dpdk=yes`` VM's is
    ``max`` under TCG (DPDK 22.11 needs SSE4.2) and ``host`` under KVM."""
    model = spec.cpu.model
    if model is None and spec.guest.dpdk:
        return ("host", None) if accel == "kvm" else ("max", None)
    if model is None:
        if spec.boot_profile != "fast":
            return None, None
        return ("host", None) if accel == "kvm" else ("qemu64,+rdrand", None)
    if model == "host" and accel == "tcg":
        return "max", "cpu model=host is impossible under TCG; using -cpu max"
    return model, None


def notes(spec: VmSpec, placement: Placement) -> list[str]:
    """Lines worth logging about choices the argv builder made."""
    _, note = cpu_model(spec, placement.accel)
    return [note] if note else []


def name_args(spec: VmSpec, p: Placement) -> list[str]:
    """-name (vCPU thread names on), -nodefaults, -pidfile."""
    return ["-name", opts(f"guest={q(spec.name)}", ("debug-threads", "on")),
            "-nodefaults", "-pidfile", p.pidfile]


def accel_args(spec: VmSpec, p: Placement) -> list[str]:
    """-accel and -machine."""
    out = ["-accel", p.accel]
    if spec.machine:
        out += ["-machine", spec.machine]
    return out


def cpu_args(spec: VmSpec, p: Placement) -> list[str]:
    """-cpu (see :func:`cpu_model`) and -smp."""
    model, _ = cpu_model(spec, p.accel)
    out = ["-cpu", model] if model else []
    return [*out, "-smp", str(spec.cpu.number)]


def mem_args(spec: VmSpec, p: Placement) -> list[str]:
    """-m; shared memory backend for hugepages or vhost-user, with -numa node."""
    size = spec.mem.size_mb
    out = ["-m", str(size)]
    if spec.mem.hugepage:
        if p.hugepage_dir is None:
            raise ConfigError("mem hugepage=yes but the DUT has no hugetlbfs mount; mount one "
                              "(mount -t hugetlbfs none /dev/hugepages) or set hugepage=no",
                              Location(key="mem"))
        out += ["-object", opts(f"memory-backend-file,id={MEM_ID}", ("size", f"{size}M"),
                                ("mem-path", p.hugepage_dir), ("share", "on"),
                                ("prealloc", "on"))]
    elif spec.vhost_user_paths:
        out += ["-object", opts(f"memory-backend-memfd,id={MEM_ID}", ("size", f"{size}M"),
                                ("share", "on"))]
    else:
        return out
    return [*out, "-numa", f"node,memdev={MEM_ID}"]


def kernel_args(spec: VmSpec, p: Placement) -> list[str]:
    """Direct kernel boot: -kernel, -initrd, -append; the default guest's ``-append`` gets
    ``hugepages=N`` of ``guest hugepages=N``."""
    out: list[str] = []
    if spec.kernel:
        out += ["-kernel", spec.kernel]
        if spec.initrd:
            out += ["-initrd", spec.initrd]
        append = spec.append
        if spec.default_guest and spec.guest.hugepages:
            append = f"{append or ''} hugepages={spec.guest.hugepages}".strip()
        if append:
            out += ["-append", append]
    return out


def drive(d: Disk) -> list[str]:
    """One -drive; ``snapshot=on`` unless the disk says opt_snapshot=off."""
    return ["-drive", opts(f"file={q(d.file)}", *qemu_props(d),
                           ("snapshot", "on" if d.snapshot else None))]


def disk_args(spec: VmSpec, p: Placement) -> list[str]:
    """All disks."""
    return [a for d in spec.disks for a in drive(d)]


def netdev(pair: NetPair, netdev_id: str, p: Placement) -> list[str]:
    """The backend of a pair."""
    b = pair.backend
    if b.kind == "user":
        fwd = f"tcp:127.0.0.1:{p.hostfwd_port}-:22" if b.control else b.hostfwd
        return ["-netdev", opts(f"user,id={netdev_id}", ("restrict", "on"), ("hostfwd", fwd))]
    if b.kind == "tap" and b.script:
        return ["-netdev", opts(f"tap,id={netdev_id}", ("script", b.script),
                                ("downscript", b.downscript or "no"))]
    # tap without script, or bridge: qemu's bridge helper puts the tap on the bridge
    return ["-netdev", opts(f"bridge,id={netdev_id}", ("br", b.br))]


def nic(pair: NetPair, netdev_id: str, spec: VmSpec) -> list[str]:
    """The guest side of a pair; the fast profile turns e1000 autonegotiation off on the
    control NIC (link up ~2 s sooner)."""
    n = pair.nic
    fast = pair.control and spec.boot_profile == "fast" and n.model == "e1000"
    return ["-device", opts(n.model, ("netdev", netdev_id), *qemu_props(n),
                            ("autonegotiation", "off" if fast else None))]


def net_args(spec: VmSpec, p: Placement) -> list[str]:
    """Every net pair: ``netdev<i>`` by position."""
    out: list[str] = []
    for i, pair in enumerate(spec.nets):
        out += netdev(pair, f"netdev{i}", p) + nic(pair, f"netdev{i}", spec)
    return out


def _virtio(netdev_id: str | None, mac: str | None, vectors: int | None,
            settings: tuple[tuple[str, str], ...], *extra: tuple[str, object | None]) -> str:
    return opts("virtio-net-pci", ("netdev", netdev_id), *extra, ("mac", mac),
                ("vectors", vectors), *settings)


def device_args(spec: VmSpec, p: Placement) -> list[str]:
    """Passthrough (vfio-pci, ``pt_<k>``), virtio-net-pci, vhost-user, vhost-cuse."""
    out: list[str] = []
    n_net = len(spec.nets)
    pt = char = cuse = 0
    for dev in spec.devices:
        if isinstance(dev, Passthrough):
            out += ["-device", opts("vfio-pci", ("host", dev.host), ("id", f"pt_{pt}"),
                                    *qemu_props(dev))]
            pt += 1
        elif isinstance(dev, VirtioNet):
            out += ["-device", opts("virtio-net-pci", ("netdev", dev.netdev), *qemu_props(dev),
                                    *dev.settings)]
        elif isinstance(dev, VhostUser):
            nid = f"netdev{n_net}"
            n_net += 1
            vectors = dev.vectors if dev.vectors is not None else (
                0 if p.accel == "tcg" else None)
            out += ["-chardev", opts(f"socket,id=char{char}", ("path", dev.path)),
                    "-netdev", opts(f"type=vhost-user,id={nid},chardev=char{char}",
                                    ("vhostforce", "on"), ("queues", dev.queues)),
                    "-device", _virtio(nid, dev.mac, vectors, dev.settings,
                                       ("mq", "on" if (dev.queues or 1) > 1 else None))]
            char += 1
        elif isinstance(dev, VhostCuse):
            nid = f"netdev{n_net}"
            n_net += 1
            out += ["-netdev", opts(f"tap,id={nid}", ("ifname", f"tap_vhost{cuse}"),
                                    ("vhost", "on"), ("script", "no"), ("downscript", "no")),
                    "-device", _virtio(nid, dev.mac, None, dev.settings,
                                       ("id", f"{nid}_net"))]
            cuse += 1
    return out


def control_args(spec: VmSpec, p: Placement) -> list[str]:
    """QMP (framework), HMP (humans), guest agent port, serial console to a file."""
    hmp = spec.monitor_path or p.monitor_socket
    sock = "server=on,wait=off"
    return [
        "-chardev", f"socket,id=qmp,path={q(p.qmp_socket)},{sock}",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=hmp,path={q(hmp)},{sock}",
        "-mon", "chardev=hmp,mode=readline",
        "-chardev", f"socket,id=qga0,path={q(p.qga_socket)},{sock}",
        "-device", "virtio-serial-pci,id=vser0",
        "-device", f"virtserialport,bus=vser0.0,chardev=qga0,name={QGA_PORT_NAME}",
        "-chardev", f"file,id=console0,path={q(p.console_log)}",
        "-serial", "chardev:console0",
    ]


#: how far qemu may move up from the requested VNC display to find a free one
VNC_DISPLAY_RANGE = 100
#: the first display tried for ``vnc`` without ``displayNum`` (TCP port 5900 + display)
VNC_BASE_DISPLAY = 0


def display_args(spec: VmSpec, p: Placement) -> list[str]:
    """No display unless the cfg asks for ``vnc``; then VNC on 127.0.0.1 (or the configured
    listen address) with ``password=on``: no client gets in until the runtime sets a random
    password through QMP ``set_password``.

    ``to=`` lets qemu take the first free display from the requested one (``displayNum``,
    else the placement's, else :data:`VNC_BASE_DISPLAY`) up: two VMs (or two xdist
    workers) never collide. The runtime reads the display really used back through QMP
    ``query-vnc`` and logs it, with a warning when it is not the requested one."""
    if spec.vnc is None:
        return ["-display", "none"]
    display = next(d for d in (spec.vnc.display, p.vnc_display, VNC_BASE_DISPLAY)
                   if d is not None)
    host = spec.vnc.listen
    host = f"[{host}]" if ":" in host else host
    return ["-vga", "std",
            "-vnc", f"{host}:{display},to={display + VNC_DISPLAY_RANGE},password=on"]


def migration_args(spec: VmSpec, p: Placement) -> list[str]:
    """``-incoming tcp:HOST:PORT`` (127.0.0.1 unless a host is given)."""
    m = spec.migration
    return [] if m is None else ["-incoming", f"tcp:{m.host}:{m.port}"]


def user_args(spec: VmSpec, p: Placement) -> list[str]:
    """``usercmd`` words, verbatim, last."""
    return list(spec.usercmd)


GROUPS: tuple[Callable[[VmSpec, Placement], list[str]], ...] = (
    name_args, accel_args, cpu_args, mem_args, kernel_args, disk_args, net_args, device_args,
    control_args, display_args, migration_args, user_args)


def build_argv(spec: VmSpec, placement: Placement) -> list[str]:
    """The full qemu argv (binary first). ConfigError when the placement cannot serve the
    spec (hugepages without hugetlbfs)."""
    argv = [placement.qemu]
    for group in GROUPS:
        argv += group(spec, placement)
    return argv


__all__ = ["GROUPS", "QGA_PORT_NAME", "VNC_BASE_DISPLAY", "VNC_DISPLAY_RANGE", "build_argv",
           "cpu_model", "drive", "notes", "q"]
