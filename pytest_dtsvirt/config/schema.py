"""The table of every VM parameter and option.

The single source of each option: an option's :class:`Opt` carries its kind (type and
bounds, :mod:`~pytest_dtsvirt.config.kinds`), default, the model field it fills and, where it
maps 1:1, the qemu property it becomes; a parameter's :class:`ParamSchema` names its model
class, the VmSpec field and the builder (:mod:`~pytest_dtsvirt.config.build`). Validation
(:mod:`~pytest_dtsvirt.config.validate`), the VmSpec (:mod:`~pytest_dtsvirt.config.load`),
qemu properties (:mod:`pytest_dtsvirt.qemu.argv`), the "valid: ..." part of messages and
``docs/parameters.md`` (:func:`render_markdown`) all read this table. It is checked when
imported (:func:`check_table`): an option with an unknown kind, a field its model lacks or a
default that disagrees with the model's (unless that is None, "not given") is a TypeError.

A parameter (``cpu = model=host,number=2;``) is a key whose value is a list of entries; each
entry is a set of options. Parameters with a *selector* (``net`` by ``type``, ``device`` by
``driver``) have a different option set per selector value (a *variant*).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from pytest_dtsvirt.config import build, devsettings, guestopt
from pytest_dtsvirt.config.kinds import (
    HOSTPCI,
    MAC,
    Choice,
    GuestAddr,
    HostFwd,
    Int,
    IntList,
    Path,
    Seconds,
    Settings,
    Str,
    Words,
    YesNo,
)
from pytest_dtsvirt.config.model import (
    DPDK_HUGEPAGES,
    GUEST_MEM_HEADROOM_MB,
    Backend,
    Cpu,
    Disk,
    Guest,
    Login,
    Mem,
    Migration,
    Nic,
    Passthrough,
    VhostCuse,
    VhostUser,
    VirtioNet,
    VmSpec,
    Vnc,
)
from pytest_dtsvirt.config.table import Opt, ParamSchema

PATH = Path()
YESNO = YesNo()


_VLAN = Opt("opt_vlan", "pairs a nic with its backend (same number, in order)", Int(0, 4095),
            default="0")
_MAC = "MAC address aa:bb:cc:dd:ee:ff"
_VECTORS = Int(0, 2048)

_NET_VARIANTS: dict[str, tuple[Opt, ...]] = {
    "nic": (
        _VLAN,
        Opt("opt_model", "NIC model (e1000, virtio = virtio-net-pci, rtl8139, ...)",
            Str(aliases=(("virtio", "virtio-net-pci"),)), default="e1000"),
        Opt("opt_name", "device id, for monitor commands", qemu="id"),
        Opt("opt_macaddr", f"guest NIC {_MAC} (qemu picks one if absent)", MAC, field="mac",
            qemu="mac"),
        Opt("opt_addr", "guest PCI slot (hex, e.g. 1f or 0x3, or slot.function)",
            GuestAddr(), qemu="addr"),
        Opt("opt_vectors", "number of MSI-X vectors (virtio models)", _VECTORS,
            qemu="vectors"),
    ),
    "user": (
        _VLAN,
        Opt("opt_hostfwd", "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:[guestport]; "
            "hostaddr defaults to 127.0.0.1, guestport to 22", HostFwd()),
    ),
    "tap": (
        _VLAN,
        Opt("opt_br", "host bridge the tap joins (through qemu-bridge-helper when no "
            "opt_script)", default="br0"),
        Opt("opt_script", "script that configures the tap device", PATH),
        Opt("opt_downscript", "script that deconfigures the tap device", PATH),
    ),
    "bridge": (
        _VLAN,
        Opt("opt_br", "host bridge (qemu-bridge-helper)", default="br0"),
    ),
}

_SETTINGS = Opt("opt_settings", "extra virtio-net-pci properties, k=v pairs joined by ','; "
                "a key the plugin sets is merged into its option with a warning (e.g. "
                "vectors=N -> opt_vectors) or refused (netdev, a contradiction)", Settings())
_DEVICE_VARIANTS: dict[str, tuple[Opt, ...]] = {
    "pci-assign": (
        Opt("opt_host", "host PCI device (bus:slot.fn); emitted as vfio-pci", HOSTPCI,
            required=True),
        Opt("opt_addr", "guest PCI slot", GuestAddr(), qemu="addr"),
    ),
    "vfio-pci": (
        Opt("opt_host", "host PCI device (bus:slot.fn)", HOSTPCI, required=True),
        Opt("opt_addr", "guest PCI slot", GuestAddr(), qemu="addr"),
    ),
    "virtio-net-pci": (
        Opt("opt_netdev", "id of the netdev it connects to (none: unconnected)"),
        Opt("opt_id", "device id", qemu="id"),
        Opt("opt_bus", "guest PCI bus (e.g. pci.0)", qemu="bus"),
        Opt("opt_addr", "guest PCI slot", GuestAddr(), qemu="addr"),
        Opt("opt_mac", _MAC, MAC, qemu="mac"),
        Opt("opt_vectors", "number of MSI-X vectors", _VECTORS, qemu="vectors"),
        _SETTINGS,
    ),
    "vhost-user": (
        Opt("opt_path", "unix socket of the vhost-user backend (on the DUT)", PATH,
            required=True),
        Opt("opt_mac", _MAC, MAC),
        Opt("opt_queue", "number of queue pairs (more than 1: mq=on, and under KVM "
            "vectors=2N+2 unless opt_vectors is given)", Int(1, 1024), field="queues"),
        Opt("opt_vectors", "MSI-X vectors under KVM (default: qemu's, 2N+2 with opt_queue=N>1); "
            "always 0 under TCG, where qemu 7.2 crashes with MSI-X on vhost-user (a warning "
            "says so when this or opt_queue asked for more)", _VECTORS),
        Opt("opt_server", "yes: qemu listens on opt_path (server=on,wait=off) and the backend "
            "connects as a client (testpmd vdev client=1); qemu waits at start until it does "
            "and takes a restarted backend back by itself", YESNO, default="no"),
        Opt("opt_reconnect", "client mode (opt_server=no): seconds after which qemu connects "
            "again when the backend went away (qemu's reconnect=)", Int(1, 3600)),
        Opt("opt_settings", "extra virtio-net-pci properties, k=v pairs joined by ','; "
            "a key the plugin sets is merged into its option with a warning (vectors, mac; "
            "mq=on with opt_queue>1) or refused (netdev, chardev, a contradiction)",
            Settings()),
    ),
    "vhost-cuse": (
        Opt("opt_mac", _MAC, MAC),
        _SETTINGS,
    ),
}

_PARAMS: tuple[ParamSchema, ...] = (
    ParamSchema("name", "qemu's -name (default: the section name)",
                (Opt("name", "VM name", required=True),)),
    ParamSchema("enable_kvm", "use KVM when the accelerator policy allows it",
                (Opt("enable", "yes or no", YESNO, default="yes", field="enable_kvm"),)),
    ParamSchema("qga", "the qemu guest agent (always on: the framework needs it)",
                (Opt("enable", "must be yes", YESNO, default="yes", field=None),),
                build=build.nothing),
    ParamSchema("daemon", "accepted for compatibility: qemu always runs in the background "
                "under the framework's control",
                (Opt("enable", "yes or no", YESNO, field=None),), build=build.nothing),
    ParamSchema("monitor", "the human HMP monitor socket (nc -U PATH)",
                (Opt("path", "unix socket path on the DUT (default: in the run dir)",
                     PATH, field="monitor_path"),),
                legacy={"port": "TCP monitor ports are not used; the HMP monitor is a unix "
                        "socket in the run dir"}),
    ParamSchema("net", "network interfaces: nic (guest side) paired with a user, tap or "
                "bridge backend", (Opt("type", "interface type", Choice(tuple(_NET_VARIANTS)),
                                       required=True, field=None),),
                append=True, multi=True, selector="type", variants=_NET_VARIANTS,
                legacy={"netdev": "netdev ids are assigned by position"},
                model={"nic": Nic, "user": Backend, "tap": Backend, "bridge": Backend},
                spec_field="nets", build=build.net),
    ParamSchema("device", "guest devices", (Opt("driver", "device driver",
                                                 Choice(tuple(_DEVICE_VARIANTS)),
                                                 required=True, field=None),),
                append=True, multi=True, selector="driver", variants=_DEVICE_VARIANTS,
                model={"pci-assign": Passthrough, "vfio-pci": Passthrough,
                       "virtio-net-pci": VirtioNet, "vhost-user": VhostUser,
                       "vhost-cuse": VhostCuse}, spec_field="devices",
                build=devsettings.build_devices),
    ParamSchema("cpu", "virtual CPUs",
                (Opt("model", "qemu -cpu model (host becomes max under TCG)"),
                 Opt("number", "number of vCPUs", Int(1, 512), default="1"),
                 Opt("cpupin", "host CPUs the vCPU threads are pinned to, space separated",
                     IntList(0, 8191), field="pins")),
                legacy={"numa": "scene configs only", "skipcores": "scene configs only",
                        "numa_aware": "scene configs only"},
                model=Cpu, spec_field="cpu", build=build.cpu),
    ParamSchema("mem", "guest memory",
                (Opt("size", "size in MB", Int(16, 4 * 1024 * 1024), default="512",
                     field="size_mb"),
                 Opt("hugepage", "back guest memory with hugetlbfs pages (shared)", YESNO,
                     default="no")),
                model=Mem, spec_field="mem"),
    ParamSchema("disk", "disk images (opened with snapshot=on unless opt_snapshot=off)",
                (Opt("file", "image path on the DUT", PATH, required=True),
                 Opt("opt_format", "image format (raw, qcow2, ...)", qemu="format"),
                 Opt("opt_if", "interface (ide, virtio, scsi, ...)", field="interface",
                     qemu="if"),
                 Opt("opt_index", "drive index", Int(0, 255), qemu="index"),
                 Opt("opt_media", "disk or cdrom", Choice(("disk", "cdrom")), qemu="media"),
                 Opt("opt_snapshot", "on: writes go to a temporary overlay (default); off: "
                     "the image is modified", Choice(("on", "off"), true="on"),
                     default="on")),
                multi=True,
                legacy={"type": "doc-era spelling of opt_format"},
                model=Disk, spec_field="disks"),
    ParamSchema("login", "guest login for SSH (without it the test guest gets a fresh random "
                "password per VM, a disk image root/tester)",
                (Opt("user", "user name", default="root"),
                 Opt("password", "password", default="tester")),
                model=Login, spec_field="login"),
    ParamSchema("vnc", "VNC display for debugging (off without this key; bound to 127.0.0.1 "
                "unless listen is set; a random password per VM)",
                (Opt("displayNum", "first display to try (default 0; qemu takes the first "
                     "free one up, the log says which)",
                     Int(0, 65535 - 5900 - 100), field="display"),
                 Opt("listen", "listen address", default="127.0.0.1")),
                legacy={"disable": "VNC is on when the vnc key is present"},
                model=Vnc, spec_field="vnc"),
    ParamSchema("usercmd", "extra qemu arguments, split like a shell would (never run by "
                "one)", (Opt("cmd", "the arguments", Words(), required=True, field="usercmd"),),
                append=True, multi=True, aliases=("user",)),
    ParamSchema("qemu", "qemu binary; several entries: a list (first found is used)",
                (Opt("path", "path of qemu-system-*", PATH, required=True,
                     field="qemu_paths"),), multi=True),
    ParamSchema("start", "boot settings",
                (Opt("wait_seconds", "boot budget in seconds (qemu start to SSH login)",
                     Seconds(1, 86400), default="120", field="boot_timeout"),
                 Opt("profile", "fast (default guest only: vmlinux, e1000 autonegotiation=off, "
                     "RDRAND cpu) or plain", Choice(("fast", "plain")))),
                legacy={"login_timeout": "login uses SSH", "login_prompt": "login uses SSH",
                        "password_prompt": "login uses SSH"}),
    ParamSchema("machine", "qemu machine type",
                (Opt("machine", "pc (default), q35, ...", required=True),)),
    ParamSchema("kernel", "direct kernel boot",
                (Opt("file", "kernel image on the DUT (without it: the test guest's kernel, "
                             "with 'append' added to its command line)", PATH, field="kernel"),
                 Opt("initrd", "initramfs on the DUT", PATH),
                 Opt("append", "kernel command line"))),
    ParamSchema("migration", "wait for an incoming migration",
                (Opt("enable", "yes or no", YESNO, default="no", field=None),
                 Opt("port", "TCP port (0: any free one)", Int(0, 65535)),
                 Opt("host", "listen address: a loopback one (127.x, ::1; the stream is "
                     "not authenticated)", default="127.0.0.1")),
                model=Migration, spec_field="migration", build=build.migration),
    ParamSchema("guest", "variant of the embedded test guest (a VM that names its own disk or "
                "kernel file boots that instead; hugepages still go on its command line only "
                "for the test guest)",
                (Opt("dpdk", "yes: the DPDK guest (dpdk-testpmd and the other DPDK 22.11 "
                     "programs, virtio/vhost/ring/null/pcap/af_packet PMDs, uio_pci_generic, "
                     "vfio-pci); it also makes the cpu default -cpu max under TCG (host "
                     "under KVM; a cpu model without SSE4.2 is an error), cpu number 2 and "
                     "mem size large enough for the hugepages", YESNO, default="no"),
                 Opt("hugepages", "2 MB hugepages the guest kernel reserves at boot "
                     "(hugepages=N on its command line, hugetlbfs at /dev/hugepages; "
                     f"default: {DPDK_HUGEPAGES} with dpdk=yes, else 0); mem size must hold "
                     f"them plus {GUEST_MEM_HEADROOM_MB} MB", Int(0, 1024 * 1024)),
                 Opt("disk", "yes: boot the test guest from its disk image (MBR, SYSLINUX, "
                     "no -kernel; a virtio drive opened snapshot=on) with an ext4 data "
                     "partition mounted at /data and e2fsck; no hugepages (the kernel "
                     "command line is on the disk)", YESNO, default="no")),
                model=Guest, spec_field="guest", build=guestopt.build_guest),
)

#: key -> schema (aliases included)
PARAMS: Mapping[str, ParamSchema] = MappingProxyType(
    {name: p for p in _PARAMS for name in (p.key, *p.aliases)})

#: legacy keys of real configs that do nothing here: key -> why (loaded with a warning)
LEGACY_KEYS: Mapping[str, str] = MappingProxyType({
    "dev_gen": "scene configs only (VF generation is not done by this framework)",
    "crypto": "virtio-crypto devices are not supported; add them with usercmd",
    "def_driver": "driver binding in the guest is up to the test",
    "control": "the guest is always controlled through the qemu guest agent",
    "vif": "Xen only",
})

#: scene-style device options (``device = vf_idx=0,pf_dev=0,guestpci=auto``): such entries
#: are skipped with a warning
SCENE_DEVICE_OPTIONS = frozenset({"vf_idx", "pf_dev", "pf_idx", "guestpci", "mac"})


def valid_keys() -> tuple[str, ...]:
    """The canonical parameter names, in table order."""
    return tuple(p.key for p in _PARAMS)


def is_vm_key(key: str) -> bool:
    """True when ``key`` is a VM parameter (a section with one is a VM section)."""
    return key in PARAMS


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` would end the cell."""
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The parameter tables as Markdown, for docs/parameters.md."""
    lines: list[str] = []
    for p in _PARAMS:
        alias = f" (also `{'`, `'.join(p.aliases)}`)" if p.aliases else ""
        how = ("a config file's list replaces the earlier one; `set_vm_*` calls and markers "
               "append entries" if p.append else "replaces")
        lines += [f"### `{p.key}`{alias}", "", f"{p.doc}. Later layers: {how}.", "",
                  "| option | required | default | valid | description |",
                  "|---|---|---|---|---|"]
        groups: list[tuple[str, tuple[Opt, ...]]] = [("", p.options)]
        groups += [(f"{p.selector}={v}: ", opts) for v, opts in p.variants.items()]
        for prefix, opts in groups:
            for o in opts:
                lines.append(f"| {prefix}`{o.name}` | {'yes' if o.required else 'no'} | "
                             f"{_cell(o.default or '')} | {_cell(o.kind.describe())} | "
                             f"{_cell(o.doc)} |")
        for name, why in p.legacy.items():
            lines.append(f"| `{name}` (legacy) | no | | ignored | warning: {_cell(why)} |")
        lines.append("")
    lines += ["### Legacy keys (loaded with a warning)", ""]
    lines += [f"- `{k}`: {why}" for k, why in LEGACY_KEYS.items()]
    return "\n".join(lines) + "\n"


def params() -> tuple[ParamSchema, ...]:
    """Every parameter, in table order (the order the VmSpec is built in)."""
    return _PARAMS


def _model_opts() -> dict[type, tuple[Opt, ...]]:
    """model class -> the options of the first parameter/variant that builds it."""
    out: dict[type, tuple[Opt, ...]] = {}
    for p in _PARAMS:
        if isinstance(p.model, Mapping):
            for variant, cls in p.model.items():
                out.setdefault(cls, p.options_for(variant))
        elif p.model is not None:
            out.setdefault(p.model, p.options)
    return out


def qemu_props(obj: object) -> list[tuple[str, object | None]]:
    """``(qemu property, value)`` of every option of ``obj``'s model class that names a qemu
    property, in table order (the argv builder emits them; None values are skipped there)."""
    return [(o.qemu, getattr(obj, o.field)) for o in _MODEL_OPTS.get(type(obj), ())
            if o.qemu is not None and o.field is not None]


def check_table(table: tuple[ParamSchema, ...]) -> None:
    """TypeError unless every option of ``table`` fills a field its model has, with the
    model's default (a model default of None means "not given" and is not compared), and
    every parameter with a model names a VmSpec field."""
    spec_fields = {f.name: f for f in dataclasses.fields(VmSpec)}
    for p in table:
        if p.model is not None and p.spec_field not in spec_fields:
            raise TypeError(f"parameter {p.key}: spec_field {p.spec_field!r} is not a VmSpec "
                            "field")
        variants: list[str | None] = list(p.variants) if p.selector else [None]
        for variant in variants:
            cls = p.model_for(variant)
            fields = {f.name: f for f in dataclasses.fields(cls)}
            for o in p.options_for(variant):
                if o.field is None:
                    continue
                f = fields.get(o.field)
                if f is None:
                    raise TypeError(f"parameter {p.key} option {o.name}: {cls.__name__} has "
                                    f"no field {o.field!r}")
                model_default = f.default
                if o.default is not None and model_default not in (dataclasses.MISSING, None) \
                        and o.convert(o.default) != model_default:
                    raise TypeError(f"parameter {p.key} option {o.name}: default {o.default!r} "
                                    f"disagrees with {cls.__name__}.{o.field}="
                                    f"{model_default!r}")


check_table(_PARAMS)
_MODEL_OPTS = _model_opts()


__all__ = ["LEGACY_KEYS", "PARAMS", "SCENE_DEVICE_OPTIONS", "Opt", "ParamSchema",
           "check_table", "is_vm_key", "params", "qemu_props", "render_markdown",
           "valid_keys"]
