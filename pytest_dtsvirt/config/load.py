"""Merge VM parameters and build the typed :class:`VmSpec` (design sections 3-4). Pure,
except :func:`load_vm_params` which reads the config files.

Layers, in order: framework defaults, the global config (``[KVM]`` of ``virt_global.cfg``),
the suite config section, then ``set_vm_<param>()`` calls and marker overrides. A parameter a
config file gives replaces the earlier layers' (as the legacy ``__save_local_config`` did);
``set_vm_<param>()`` calls and markers append ``net``, ``device`` and ``usercmd`` entries and
replace the other parameters. Problems are collected and raised as one ConfigError.

The framework's control pair (SSH forwarded to the guest's port 22, the NIC the guest names
``host_connect``) is the first ``user`` pair that forwards nothing, placed at guest PCI
``00:1f.0`` unless it names a slot; when there is none, a default e1000 + user pair comes
first. So the legacy idiom ``net = type=nic,opt_vlan=0; type=user,opt_vlan=0;`` gives one
control NIC, not two.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_dtsvirt import secret
from pytest_dtsvirt.config.cfgfile import CfgFile, Section, read_cfg
from pytest_dtsvirt.config.model import (
    CONTROL_ADDR,
    Backend,
    Cpu,
    Device,
    Disk,
    Login,
    Mem,
    Migration,
    NetPair,
    Nic,
    Passthrough,
    VhostCuse,
    VhostUser,
    VirtioNet,
    VmSpec,
    Vnc,
)
from pytest_dtsvirt.config.schema import PARAMS, is_vm_key, valid_keys
from pytest_dtsvirt.config.validate import (
    RawEntry,
    Report,
    check_entry,
    normalise_hostfwd,
    parse_settings,
    yes,
)
from pytest_dtsvirt.errors import ConfigError, ConfigWarning, Location

GLOBAL_CFG = "virt_global.cfg"
GLOBAL_SECTION = "KVM"

#: the control pair when no ``net`` entry provides one
DEFAULT_CONTROL_PAIR = NetPair(Nic(addr=CONTROL_ADDR), Backend("user", control=True))


def call_origin(key: str, section: str | None = None) -> Location:
    """The location of a ``set_vm_<key>()`` call (on VM ``section``), for messages."""
    return Location(file=f"set_vm_{key}()", section=section, key=key)


class VmParams:
    """The mutable, layered parameters of one VM; :meth:`build` makes the VmSpec."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, list[RawEntry]] = {}  # in first-written order

    def add_param(self, key: str, entries: Sequence[RawEntry], *, replacing: bool = False
                  ) -> None:
        """One layer's entries for ``key``: they replace the earlier ones when ``replacing``
        is true or ``key`` is not a list parameter (net, device, usercmd), else they are
        appended."""
        schema = PARAMS.get(key)
        canon = schema.key if schema is not None else key
        for entry in entries:  # a password never reaches an output
            secret.register(entry.options.get("password") if canon == "login" else None)
        if schema is not None and schema.append and not replacing:
            self._entries.setdefault(canon, []).extend(entries)
        else:
            self._entries[canon] = list(entries)

    def add(self, key: str, options: Mapping[str, Any], origin: Location) -> None:
        """One entry from a call or marker (``set_vm_device(**options)``): appended."""
        self.add_param(key, [RawEntry({str(k): str(v) for k, v in options.items()},
                                      origin)])

    def add_section(self, section: Section, file: str) -> None:
        """Every parameter of a cfg section, as one layer: each replaces the earlier one."""
        for param in section.params:
            self.add_param(param.key, [
                RawEntry(dict(e.options), Location(file, e.line, section.name, param.key),
                         e.bare, e.repeated) for e in param.entries], replacing=True)

    def build(self) -> tuple[VmSpec, list[ConfigWarning]]:
        """The validated VmSpec and the warnings; ConfigError with every problem."""
        spec, problems, warnings = self.check()
        if problems:
            raise ConfigError.collect(problems)
        return spec, warnings

    def check(self) -> tuple[VmSpec, list[ConfigError], list[ConfigWarning]]:
        """Like :meth:`build` but returns the problems instead of raising (the spec is
        only meaningful when there are none)."""
        rep = Report([], [])
        checked: dict[str, list[tuple[dict[str, str], RawEntry]]] = {}
        for key in self._entries:
            schema = PARAMS.get(key)
            entries = self._entries[key]
            if schema is not None and not schema.multi and len(entries) > 1:
                rep.error(replace(entries[1].origin, key=key),
                          f"{key} takes one entry; {len(entries)} given")
            for e in entries:
                opts = check_entry(key, e, rep)
                if opts is not None:
                    checked.setdefault(key, []).append((opts, e))
        spec = _build_spec(self.name, checked, rep)
        return spec, rep.problems, sorted(
            rep.warnings, key=lambda w: (w.location.file, w.location.line or 0))


def _one(checked: Mapping[str, list[tuple[dict[str, str], RawEntry]]], key: str
         ) -> tuple[dict[str, str], Location] | None:
    items = checked.get(key)
    if not items:
        return None
    opts, entry = items[-1]
    return opts, replace(entry.origin, key=key)


def _int(v: str | None) -> int | None:
    return None if v is None else int(v)


def _cpu(checked: Mapping[str, list[tuple[dict[str, str], RawEntry]]], rep: Report) -> Cpu:
    got = _one(checked, "cpu")
    if got is None:
        return Cpu()
    o, loc = got
    number = int(o["number"])
    if number < 1:
        rep.error(loc, "number: must be at least 1")
    pins = tuple(int(w) for w in o.get("cpupin", "").split())
    if pins and len(pins) != number:
        rep.warn(loc, f"cpupin lists {len(pins)} CPUs for {number} vCPUs; vCPU i is pinned "
                      "to cpupin[i mod len]")
    return Cpu(model=o.get("model") or None, number=number, pins=pins)


def _nets(items: Iterable[tuple[dict[str, str], RawEntry]], rep: Report) -> tuple[NetPair, ...]:
    nics: list[tuple[Nic, Location]] = []
    backs: list[tuple[Backend, Location]] = []
    for o, e in items:
        vlan = int(o["opt_vlan"])
        if o["type"] == "nic":
            model = o["opt_model"]
            nics.append((Nic(vlan=vlan, model="virtio-net-pci" if model == "virtio" else model,
                             mac=o.get("opt_macaddr"), name=o.get("opt_name"),
                             addr=o.get("opt_addr"), vectors=_int(o.get("opt_vectors"))),
                         e.origin))
        else:
            fwd = o.get("opt_hostfwd")
            backs.append((Backend(kind=o["type"], vlan=vlan,  # type: ignore[arg-type]
                                  hostfwd=normalise_hostfwd(fwd) if fwd else None,
                                  br=o.get("opt_br", "br0"), script=o.get("opt_script"),
                                  downscript=o.get("opt_downscript")), e.origin))
    pairs: list[NetPair] = []
    used: set[int] = set()
    for nic, loc in nics:
        match = next((i for i, (b, _) in enumerate(backs)
                      if i not in used and b.vlan == nic.vlan), None)
        if match is None:
            rep.error(replace(loc, key="net"), f"nic with opt_vlan={nic.vlan} has no user, "
                      "tap or bridge backend with the same opt_vlan")
            continue
        used.add(match)
        pairs.append(NetPair(nic, backs[match][0]))
    for i, (b, loc) in enumerate(backs):
        if i not in used:
            rep.error(replace(loc, key="net"), f"{b.kind} backend with opt_vlan={b.vlan} has "
                      "no nic with the same opt_vlan")
    return _with_control(pairs)


def _with_control(pairs: Sequence[NetPair]) -> tuple[NetPair, ...]:
    """``pairs`` with the control pair marked: the first user pair without a hostfwd, at
    guest slot 1f unless it names one; or :data:`DEFAULT_CONTROL_PAIR` in front."""
    i = next((i for i, p in enumerate(pairs)
              if p.backend.kind == "user" and p.backend.hostfwd is None), None)
    if i is None:
        return (DEFAULT_CONTROL_PAIR, *pairs)
    pair = pairs[i]
    control = NetPair(replace(pair.nic, addr=pair.nic.addr or CONTROL_ADDR),
                      replace(pair.backend, control=True))
    return (*pairs[:i], control, *pairs[i + 1:])


def _settings(o: Mapping[str, str], loc: Location, rep: Report) -> tuple[tuple[str, str], ...]:
    raw = o.get("opt_settings")
    if not raw:
        return ()
    pairs = parse_settings(raw)
    if pairs is None:
        rep.error(loc, f"opt_settings: {raw!r} is not name=value pairs joined by ','")
        return ()
    return pairs


def _device(o: Mapping[str, str], loc: Location, rep: Report) -> Device:
    drv = o["driver"]
    if drv in ("pci-assign", "vfio-pci"):
        return Passthrough(host=o["opt_host"], addr=o.get("opt_addr"))
    if drv == "virtio-net-pci":
        return VirtioNet(netdev=o.get("opt_netdev"), id=o.get("opt_id"), mac=o.get("opt_mac"),
                         bus=o.get("opt_bus"), addr=o.get("opt_addr"),
                         vectors=_int(o.get("opt_vectors")),
                         settings=_settings(o, loc, rep))
    if drv == "vhost-user":
        return VhostUser(path=o["opt_path"], mac=o.get("opt_mac"),
                         queues=_int(o.get("opt_queue")), vectors=_int(o.get("opt_vectors")),
                         settings=_settings(o, loc, rep))
    return VhostCuse(mac=o.get("opt_mac"), settings=_settings(o, loc, rep))


def _build_spec(name: str, checked: Mapping[str, list[tuple[dict[str, str], RawEntry]]],
                rep: Report) -> VmSpec:
    spec = VmSpec(name=name)
    if (got := _one(checked, "name")) is not None:
        spec = replace(spec, name=got[0]["name"])
    if (got := _one(checked, "enable_kvm")) is not None:
        spec = replace(spec, enable_kvm=yes(got[0]["enable"]))
    if (got := _one(checked, "monitor")) is not None:
        spec = replace(spec, monitor_path=got[0].get("path") or None)
    spec = replace(spec, cpu=_cpu(checked, rep))
    if (got := _one(checked, "mem")) is not None:
        size = int(got[0]["size"])
        if size < 16:
            rep.error(got[1], f"size: {size} MB is too small (at least 16)")
        spec = replace(spec, mem=Mem(size_mb=size, hugepage=yes(got[0]["hugepage"])))
    disks = tuple(Disk(file=o["file"], format=o.get("opt_format"), interface=o.get("opt_if"),
                       index=_int(o.get("opt_index")), media=o.get("opt_media"),
                       snapshot=o["opt_snapshot"] == "on")
                  for o, _ in checked.get("disk", []))
    spec = replace(spec, disks=disks)
    if (got := _one(checked, "login")) is not None:
        spec = replace(spec, login=Login(user=got[0]["user"], password=got[0]["password"]))
    if (got := _one(checked, "vnc")) is not None:
        spec = replace(spec, vnc=Vnc(display=_int(got[0].get("displayNum")),
                                     listen=got[0]["listen"]))
    spec = replace(spec, usercmd=tuple(w for o, _ in checked.get("usercmd", [])
                                       for w in shlex.split(o["cmd"])))
    paths = tuple(o["path"] for o, _ in checked.get("qemu", []))
    if paths:
        spec = replace(spec, qemu_paths=paths)
    if (got := _one(checked, "start")) is not None:
        prof = got[0].get("profile")
        spec = replace(spec, boot_timeout=float(got[0]["wait_seconds"]),
                       profile=prof if prof in ("fast", "plain") else None)  # type: ignore[arg-type]
    if (got := _one(checked, "machine")) is not None:
        spec = replace(spec, machine=got[0]["machine"])
    if (got := _one(checked, "kernel")) is not None:
        o = got[0]
        spec = replace(spec, kernel=o.get("file"), initrd=o.get("initrd"), append=o.get("append"))
    if (got := _one(checked, "migration")) is not None and yes(got[0]["enable"]):
        if "port" not in got[0]:
            rep.error(got[1], "enable=yes needs port=")
        else:
            spec = replace(spec, migration=Migration(port=int(got[0]["port"]),
                                                     host=got[0]["host"]))
    spec = replace(spec, nets=_nets(checked.get("net", []), rep))
    spec = replace(spec, devices=tuple(_device(o, replace(e.origin, key="device"), rep)
                                       for o, e in checked.get("device", [])))
    _cross_checks(spec, checked, rep)
    return spec


def _cross_checks(spec: VmSpec, checked: Mapping[str, list[tuple[dict[str, str], RawEntry]]],
                  rep: Report) -> None:
    ctl = spec.control_pair
    got = _one(checked, "machine")
    if got is not None and ctl is not None and "q35" in got[0]["machine"] and \
            ctl.nic.addr == CONTROL_ADDR:
        rep.error(got[1], "machine q35 takes guest slot 00:1f.0 (ICH9 LPC), where the "
                          "control NIC must be; use machine=pc")


def vm_sections(cfg: CfgFile) -> list[Section]:
    """The sections of ``cfg`` that carry at least one VM parameter."""
    return [s for s in cfg.sections if any(is_vm_key(p.key) for p in s.params)]


def params_for_section(section: Section, file: str, *, global_section: Section | None = None,
                       global_file: str = GLOBAL_CFG) -> VmParams:
    """Defaults + optional global section + this section."""
    params = VmParams(section.name)
    if global_section is not None:
        params.add_section(global_section, global_file)
    params.add_section(section, file)
    return params


def load_vm_params(cfg_path_or_conf_dir: str | os.PathLike[str], suite: str, vm_name: str,
                   global_cfg: str | os.PathLike[str] | None = None) -> VmParams:
    """The merged parameters of ``vm_name``: defaults, global ``[KVM]``, suite section.

    ``cfg_path_or_conf_dir``: a conf dir (``<dir>/<suite>.cfg`` is read) or a cfg file.
    ``global_cfg``: the global config; default ``virt_global.cfg`` next to the suite cfg,
    used when present.
    """
    base = Path(cfg_path_or_conf_dir)
    cfg_path = base / f"{suite}.cfg" if base.is_dir() else base
    cfg = read_cfg(cfg_path)
    gpath = Path(global_cfg) if global_cfg is not None else cfg_path.parent / GLOBAL_CFG
    gsec: Section | None = None
    if (global_cfg is not None or gpath.is_file()) and gpath.resolve() != cfg_path.resolve():
        gcfg = read_cfg(gpath)
        gsec = next((s for s in gcfg.sections if s.name == GLOBAL_SECTION), None)
    names = [s.name for s in cfg.sections]
    section = next((s for s in cfg.sections if s.name == vm_name), None)
    if section is None:
        vms = [s.name for s in vm_sections(cfg)] or names
        raise ConfigError(f"no section [{vm_name}]; VM sections: {', '.join(vms) or 'none'}",
                          Location(str(cfg_path)))
    return params_for_section(section, str(cfg_path), global_section=gsec,
                              global_file=str(gpath))


def apply_overrides(params: VmParams, overrides: Mapping[str, Any], file: str) -> None:
    """Marker / call overrides in the cfg vocabulary: ``{"cpu": {...}, "device": [{...}]}``.

    Each value is a mapping (one entry) or a list of mappings. ``file`` names the origin in
    messages (e.g. ``"@pytest.mark.vm on test_x"``).
    """
    problems: list[ConfigError] = []
    for key, value in overrides.items():
        loc = Location(file=file, key=key)
        if key not in PARAMS:
            problems.append(ConfigError(
                f"unknown parameter {key!r}; valid: {', '.join(valid_keys())}", loc))
            continue
        items = [value] if isinstance(value, Mapping) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, Mapping) for i in items):
            problems.append(ConfigError(
                "must be a dict of options or a list of such dicts", loc))
            continue
        params.add_param(key, [RawEntry({str(k): str(v) for k, v in i.items()}, loc)
                               for i in items])
    if problems:
        raise ConfigError.collect(problems)


__all__ = ["DEFAULT_CONTROL_PAIR", "VmParams", "apply_overrides", "call_origin", "load_vm_params",
           "params_for_section", "vm_sections"]
