"""The table of every VM parameter and option (design sections 3-4).

The single source for validation (:mod:`pytest_dtsvirt.config.load`), for the "valid: ..."
part of error messages and for the README tables (:func:`render_markdown`). Pure data.

A parameter (``cpu = model=host,number=2;``) is a key whose value is a list of entries; each
entry is a set of options. Parameters with a *selector* (``net`` by ``type``, ``device`` by
``driver``) have a different option set per selector value (a *variant*).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: value kinds understood by the loader
KINDS = ("str", "int", "yesno", "mac", "path", "hostpci", "guestaddr", "hostfwd", "words",
         "cpulist", "choice")


@dataclass(frozen=True)
class Opt:
    """One option of a parameter entry."""

    name: str
    doc: str
    kind: str = "str"
    required: bool = False
    default: str | None = None
    choices: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParamSchema:
    """One parameter (cfg key)."""

    key: str
    doc: str
    options: tuple[Opt, ...] = ()
    #: True: several entries allowed, and set_vm_<key>() / markers APPEND entries;
    #: False: one entry, later layers REPLACE it.
    append: bool = False
    #: several entries allowed inside one layer (``qemu = path=a; path=b;``, disks)
    multi: bool = False
    selector: str | None = None
    variants: Mapping[str, tuple[Opt, ...]] = field(default_factory=dict)
    #: legacy options accepted with a warning: option name -> why it does nothing here
    legacy: Mapping[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()

    def options_for(self, variant: str | None) -> tuple[Opt, ...]:
        """The options valid for an entry (selector included) of ``variant``."""
        if self.selector is None or variant is None:
            return self.options
        return self.options + self.variants.get(variant, ())

    def option_names(self, variant: str | None) -> tuple[str, ...]:
        """Names of the valid options, for messages."""
        return tuple(o.name for o in self.options_for(variant))


_VLAN = Opt("opt_vlan", "pairs a nic with its backend (same number, in order)", "int",
            default="0")
_MAC = "MAC address aa:bb:cc:dd:ee:ff"

_NET_VARIANTS: dict[str, tuple[Opt, ...]] = {
    "nic": (
        _VLAN,
        Opt("opt_macaddr", f"guest NIC {_MAC} (qemu picks one if absent)", "mac"),
        Opt("opt_model", "NIC model (e1000, virtio = virtio-net-pci, rtl8139, ...)",
            default="e1000"),
        Opt("opt_name", "device id, for monitor commands"),
        Opt("opt_addr", "guest PCI slot (hex, e.g. 1f or 0x3, or slot.function)",
            "guestaddr"),
        Opt("opt_vectors", "number of MSI-X vectors (virtio models)", "int"),
    ),
    "user": (
        _VLAN,
        Opt("opt_hostfwd", "[tcp|udp]:[hostaddr]:hostport-[guestaddr]:[guestport]; "
            "hostaddr defaults to 127.0.0.1, guestport to 22", "hostfwd"),
    ),
    "tap": (
        _VLAN,
        Opt("opt_br", "host bridge the tap joins (through qemu-bridge-helper when no "
            "opt_script)", default="br0"),
        Opt("opt_script", "script that configures the tap device", "path"),
        Opt("opt_downscript", "script that deconfigures the tap device", "path"),
    ),
    "bridge": (
        _VLAN,
        Opt("opt_br", "host bridge (qemu-bridge-helper)", default="br0"),
    ),
}

_SETTINGS = Opt("opt_settings", "extra virtio-net-pci properties, k=v pairs joined by ','",
                "str")
_DEVICE_VARIANTS: dict[str, tuple[Opt, ...]] = {
    "pci-assign": (
        Opt("opt_host", "host PCI device (bus:slot.fn); emitted as vfio-pci", "hostpci",
            required=True),
        Opt("opt_addr", "guest PCI slot", "guestaddr"),
    ),
    "vfio-pci": (
        Opt("opt_host", "host PCI device (bus:slot.fn)", "hostpci", required=True),
        Opt("opt_addr", "guest PCI slot", "guestaddr"),
    ),
    "virtio-net-pci": (
        Opt("opt_netdev", "id of the netdev it connects to (none: unconnected)"),
        Opt("opt_id", "device id"),
        Opt("opt_mac", _MAC, "mac"),
        Opt("opt_bus", "guest PCI bus (e.g. pci.0)"),
        Opt("opt_addr", "guest PCI slot", "guestaddr"),
        Opt("opt_vectors", "number of MSI-X vectors", "int"),
        _SETTINGS,
    ),
    "vhost-user": (
        Opt("opt_path", "unix socket of the vhost-user backend (on the DUT)", "path",
            required=True),
        Opt("opt_mac", _MAC, "mac"),
        Opt("opt_queue", "number of queue pairs", "int"),
        Opt("opt_vectors", "MSI-X vectors; 0 avoids a qemu 7.2 TCG crash (default: 0 under "
            "TCG, qemu's default under KVM)", "int"),
        _SETTINGS,
    ),
    "vhost-cuse": (
        Opt("opt_mac", _MAC, "mac"),
        _SETTINGS,
    ),
}

_PARAMS: tuple[ParamSchema, ...] = (
    ParamSchema("name", "qemu's -name (default: the section name)",
                (Opt("name", "VM name", required=True),)),
    ParamSchema("enable_kvm", "use KVM when the accelerator policy allows it",
                (Opt("enable", "yes or no", "yesno", default="yes"),)),
    ParamSchema("qga", "the qemu guest agent (always on: the framework needs it)",
                (Opt("enable", "must be yes", "yesno", default="yes"),)),
    ParamSchema("daemon", "accepted for compatibility: qemu always runs in the background "
                "under the framework's control", (Opt("enable", "yes or no", "yesno"),)),
    ParamSchema("monitor", "the human HMP monitor socket (nc -U PATH)",
                (Opt("path", "unix socket path on the DUT (default: in the run dir)",
                     "path"),),
                legacy={"port": "TCP monitor ports are not used; the HMP monitor is a unix "
                        "socket in the run dir"}),
    ParamSchema("net", "network interfaces: nic (guest side) paired with a user, tap or "
                "bridge backend", (Opt("type", "interface type", "choice", required=True,
                                       choices=tuple(_NET_VARIANTS)),),
                append=True, multi=True, selector="type", variants=_NET_VARIANTS,
                legacy={"netdev": "netdev ids are assigned by position"}),
    ParamSchema("device", "guest devices", (Opt("driver", "device driver", "choice",
                                                 required=True,
                                                 choices=tuple(_DEVICE_VARIANTS)),),
                append=True, multi=True, selector="driver", variants=_DEVICE_VARIANTS),
    ParamSchema("cpu", "virtual CPUs",
                (Opt("model", "qemu -cpu model (host becomes max under TCG)"),
                 Opt("number", "number of vCPUs", "int", default="1"),
                 Opt("cpupin", "host CPUs the vCPU threads are pinned to, space separated",
                     "cpulist")),
                legacy={"numa": "scene configs only", "skipcores": "scene configs only",
                        "numa_aware": "scene configs only"}),
    ParamSchema("mem", "guest memory",
                (Opt("size", "size in MB", "int", default="512"),
                 Opt("hugepage", "back guest memory with hugetlbfs pages (shared)", "yesno",
                     default="no"))),
    ParamSchema("disk", "disk images (opened with snapshot=on unless opt_snapshot=off)",
                (Opt("file", "image path on the DUT", "path", required=True),
                 Opt("opt_format", "image format (raw, qcow2, ...)"),
                 Opt("opt_if", "interface (ide, virtio, scsi, ...)"),
                 Opt("opt_index", "drive index", "int"),
                 Opt("opt_media", "disk or cdrom", "choice", choices=("disk", "cdrom")),
                 Opt("opt_snapshot", "on: writes go to a temporary overlay (default); off: "
                     "the image is modified", "choice", default="on", choices=("on", "off"))),
                multi=True,
                legacy={"type": "doc-era spelling of opt_format"}),
    ParamSchema("login", "guest login for SSH (without it the test guest gets a fresh random "
                "password per VM, a disk image root/tester)",
                (Opt("user", "user name", default="root"),
                 Opt("password", "password", default="tester"))),
    ParamSchema("vnc", "VNC display for debugging (off without this key; bound to 127.0.0.1 "
                "unless listen is set; a random password per VM)",
                (Opt("displayNum", "first display to try (default 0; qemu takes the first "
                     "free one up, the log says which)", "int"),
                 Opt("listen", "listen address", default="127.0.0.1")),
                legacy={"disable": "VNC is on when the vnc key is present"}),
    ParamSchema("usercmd", "extra qemu arguments, split like a shell would (never run by "
                "one)", (Opt("cmd", "the arguments", "words", required=True),),
                append=True, multi=True, aliases=("user",)),
    ParamSchema("qemu", "qemu binary; several entries: a list (first found is used)",
                (Opt("path", "path of qemu-system-*", "path", required=True),), multi=True),
    ParamSchema("start", "boot settings",
                (Opt("wait_seconds", "boot budget in seconds (qemu start to SSH login)",
                     "int", default="120"),
                 Opt("profile", "fast (default guest only: vmlinux, e1000 autonegotiation=off, "
                     "RDRAND cpu) or plain", "choice", choices=("fast", "plain"))),
                legacy={"login_timeout": "login uses SSH", "login_prompt": "login uses SSH",
                        "password_prompt": "login uses SSH"}),
    ParamSchema("machine", "qemu machine type",
                (Opt("machine", "pc (default), q35, ...", required=True),)),
    ParamSchema("kernel", "direct kernel boot",
                (Opt("file", "kernel image on the DUT (without it: the test guest's kernel, "
                             "with 'append' added to its command line)", "path"),
                 Opt("initrd", "initramfs on the DUT", "path"),
                 Opt("append", "kernel command line"))),
    ParamSchema("migration", "wait for an incoming migration",
                (Opt("enable", "yes or no", "yesno", default="no"),
                 Opt("port", "TCP port", "int"),
                 Opt("host", "listen address", default="127.0.0.1"))),
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


def render_markdown() -> str:
    """The parameter tables as Markdown, for the README."""
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
                valid = ", ".join(o.choices) if o.choices else o.kind
                lines.append(f"| {prefix}`{o.name}` | {'yes' if o.required else 'no'} | "
                             f"{o.default or ''} | {valid} | {o.doc} |")
        for name, why in p.legacy.items():
            lines.append(f"| `{name}` (legacy) | no | | ignored | warning: {why} |")
        lines.append("")
    lines += ["### Legacy keys (loaded with a warning)", ""]
    lines += [f"- `{k}`: {why}" for k, why in LEGACY_KEYS.items()]
    return "\n".join(lines) + "\n"


__all__ = ["LEGACY_KEYS", "PARAMS", "SCENE_DEVICE_OPTIONS", "Opt", "ParamSchema",
           "is_vm_key", "render_markdown", "valid_keys"]
