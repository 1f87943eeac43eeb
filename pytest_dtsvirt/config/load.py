"""Merge VM parameters and build the typed :class:`VmSpec`. Pure, except
:func:`load_vm_params`, which reads the config files.

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
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pytest_dtsvirt import secret
from pytest_dtsvirt.config import build, guestopt
from pytest_dtsvirt.config.build import DEFAULT_CONTROL_PAIR
from pytest_dtsvirt.config.cfgfile import CfgFile, Section, read_cfg
from pytest_dtsvirt.config.model import CONTROL_ADDR, VmSpec
from pytest_dtsvirt.config.schema import PARAMS, is_vm_key, valid_keys
from pytest_dtsvirt.config.schema import params as schema_params
from pytest_dtsvirt.config.table import Report
from pytest_dtsvirt.config.validate import RawEntry, check_entry, option_text
from pytest_dtsvirt.errors import ConfigError, ConfigWarning, Location

GLOBAL_CFG = "virt_global.cfg"
_VM_NAME = re.compile(r"vm[0-9]*")
GLOBAL_SECTION = "KVM"


def call_origin(key: str, section: str | None = None) -> Location:
    """The location of a ``set_vm_<key>()`` call (on VM ``section``), for messages."""
    return Location(file=f"set_vm_{key}()", section=section, key=key)


class VmParams:
    """The mutable, layered parameters of one VM; :meth:`build` makes the VmSpec."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[str, list[RawEntry]] = {}  # in first-written order
        self._problems: list[ConfigError] = []  # found while adding (empty parameters)

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
        """One entry from a call or marker (``set_vm_device(**options)``): appended. Values
        are str, int or bool (:func:`~pytest_dtsvirt.config.validate.option_text`)."""
        self.add_param(key, [RawEntry(_texts(options, origin), origin)])

    def add_section(self, section: Section, file: str) -> None:
        """Every parameter of a cfg section, as one layer: each replaces the earlier one.
        A VM parameter without entries (``disk =`` and nothing, or only ``;``) is an error:
        dropping it would silently change the VM (no disk: the test guest boots)."""
        for param in section.params:
            if not param.entries and param.key in PARAMS:
                self._problems.append(ConfigError(
                    "no entry: the value is empty (or only ';'); write at least one entry "
                    "(name=value,...;) or remove the key", param.location(file, section.name)))
                continue
            self.add_param(param.key, [
                RawEntry(dict(e.options), Location(file, e.line, section.name, param.key),
                         e.bare, e.repeated) for e in param.entries], replacing=True)

    def origins(self, key: str) -> list[Location]:
        """Where each entry of parameter ``key`` was written (cfg line or call), in order."""
        return [replace(e.origin, key=key) for e in self._entries.get(key, [])]

    def build(self) -> tuple[VmSpec, list[ConfigWarning]]:
        """The validated VmSpec and the warnings; ConfigError with every problem."""
        spec, problems, warnings = self.check()
        if problems:
            raise ConfigError.collect(problems)
        return spec, warnings

    def check(self) -> tuple[VmSpec, list[ConfigError], list[ConfigWarning]]:
        """Like :meth:`build` but returns the problems instead of raising (the spec is
        only meaningful when there are none)."""
        rep = Report(list(self._problems), [])
        checked: dict[str, list[tuple[dict[str, str], RawEntry]]] = {}
        failed: set[str] = set()  # not built: their problems would only cascade
        for key in self._entries:
            before = len(rep.problems)
            schema = PARAMS.get(key)
            entries = self._entries[key]
            if schema is not None and not schema.multi and len(entries) > 1:
                rep.error(replace(entries[1].origin, key=key),
                          f"{key} takes one entry; {len(entries)} given")
            for e in entries:
                opts = check_entry(key, e, rep)
                if opts is not None:
                    checked.setdefault(key, []).append((opts, e))
            if len(rep.problems) > before:
                failed.add(key)
        spec = _build_spec(self.name, checked, failed, rep)
        return spec, rep.problems, sorted(
            rep.warnings, key=lambda w: (w.location.file, w.location.line or 0))


def _build_spec(name: str, checked: Mapping[str, list[tuple[dict[str, str], RawEntry]]],
                failed: set[str], rep: Report) -> VmSpec:
    """Each parameter's builder, in table order, on the spec so far (skipping ``failed``)."""
    spec = VmSpec(name=name)
    for param in schema_params():
        if param.key in failed:
            continue
        items = [(o, replace(e.origin, key=param.key)) for o, e in checked.get(param.key, [])]
        spec = (param.build or build.generic)(param, items, spec, rep)
    spec = guestopt.settle(spec, checked, rep)
    _cross_checks(spec, checked, rep)
    return spec


def _cross_checks(spec: VmSpec, checked: Mapping[str, list[tuple[dict[str, str], RawEntry]]],
                  rep: Report) -> None:
    ctl = spec.control_pair
    got = checked.get("machine")
    if got and ctl is not None and "q35" in got[-1][0]["machine"] and \
            ctl.nic.addr == CONTROL_ADDR:
        rep.error(replace(got[-1][1].origin, key="machine"), "machine q35 takes guest slot "
                  "00:1f.0 (ICH9 LPC), where the control NIC must be; use machine=pc")


def _texts(options: Mapping[Any, Any], origin: Location) -> dict[str, str]:
    return {str(k): option_text(v, f"option {k}", origin) for k, v in options.items()}


def vm_sections(cfg: CfgFile) -> list[Section]:
    """The sections of ``cfg`` that carry at least one VM parameter or are named like a VM
    (``vm``, ``vm0``...: so a section whose keys are all misspelt is still checked)."""
    return [s for s in cfg.sections
            if _VM_NAME.fullmatch(s.name) or any(is_vm_key(p.key) for p in s.params)]


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
    if not base.exists() and base.suffix != ".cfg":
        raise ConfigError(f"conf dir {str(base.absolute())!r} not found (looking for "
                          f"{suite}.cfg in it); give the suite's conf dir with "
                          "--dtsvirt-conf-dir (in pytest) or VmOptions(conf_dir=...), or put "
                          "conf/ beside the tests", Location(str(base)))
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
        try:
            entries = [RawEntry(_texts(i, loc), loc) for i in items]
        except ConfigError as exc:
            problems.append(exc)
            continue
        if len(entries) > 1 and not PARAMS[key].multi:
            problems.append(ConfigError(f"takes one entry; {len(entries)} given", loc))
            continue
        params.add_param(key, entries)
    if problems:
        raise ConfigError.collect(problems)


__all__ = ["DEFAULT_CONTROL_PAIR", "VmParams", "apply_overrides", "call_origin", "load_vm_params",
           "params_for_section", "vm_sections"]
