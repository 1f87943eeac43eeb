"""Check one parameter entry against the schema (pure): options, values, legacy idioms.

Used by :mod:`pytest_dtsvirt.config.load`. Every problem becomes a ConfigError with the
entry's location; every legacy idiom a ConfigWarning; nothing is silently ignored.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace

from pytest_dtsvirt import secret
from pytest_dtsvirt.config.schema import LEGACY_KEYS, PARAMS, SCENE_DEVICE_OPTIONS, Opt
from pytest_dtsvirt.config.schema import valid_keys as _valid_keys
from pytest_dtsvirt.errors import ConfigError, ConfigWarning, Location

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
_HOSTPCI = re.compile(r"^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-1]?[0-9a-fA-F]\.[0-7]$")
_GUESTADDR = re.compile(r"^(0x)?([0-9a-fA-F]{1,2})(\.[0-7])?$")
_HOSTFWD = re.compile(r"^(tcp|udp)?:([0-9.]*):(\d+)-([0-9.]*):(\d*)$")
_INT = re.compile(r"^\d+$")
_YES = {"yes": True, "no": False}


@dataclass(frozen=True)
class RawEntry:
    """One entry as written (cfg, set_vm_* call or marker), with where it came from."""

    options: Mapping[str, str]
    origin: Location
    bare: tuple[str, ...] = ()
    repeated: tuple[str, ...] = ()  # options written more than once in the entry

    def __repr__(self) -> str:  # a login entry holds a password
        return secret.mask(f"RawEntry(options={dict(self.options)!r}, origin={self.origin!r}, "
                           f"bare={self.bare!r}, repeated={self.repeated!r})")


@dataclass
class Report:
    """Problems and warnings collected while checking."""

    problems: list[ConfigError]
    warnings: list[ConfigWarning]

    def error(self, loc: Location, message: str) -> None:
        """Record a problem."""
        self.problems.append(ConfigError(message, loc))

    def warn(self, loc: Location, message: str) -> None:
        """Record a warning."""
        self.warnings.append(ConfigWarning(message, loc))


def _names(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)


def check_value(opt: Opt, value: str) -> str | None:
    """None when ``value`` suits ``opt``, else what is wrong (for the message)."""
    kind = opt.kind
    if kind == "int" and not _INT.match(value):
        return f"{value!r} is not a non-negative integer"
    if kind == "yesno" and value.lower() not in _YES:
        return f"{value!r} is not yes or no"
    if kind == "mac" and not _MAC.match(value):
        return f"{value!r} is not a MAC address (aa:bb:cc:dd:ee:ff)"
    if kind == "hostpci" and not _HOSTPCI.match(value):
        return f"{value!r} is not a host PCI address ([dddd:]bb:ss.f)"
    if kind == "guestaddr":
        m = _GUESTADDR.match(value)
        if not m or int(m.group(2), 16) > 0x1F:
            return f"{value!r} is not a guest PCI slot (hex 0..1f, optionally .function)"
    if kind == "hostfwd" and not _HOSTFWD.match(value):
        return (f"{value!r} is not [tcp|udp]:[hostaddr]:hostport-[guestaddr]:[guestport]")
    if kind == "cpulist" and not all(_INT.match(w) for w in value.split()):
        return f"{value!r} is not a space separated list of CPU numbers"
    if kind == "choice" and value not in opt.choices:
        return f"{value!r} is not valid; valid: {_names(opt.choices)}"
    if kind == "path" and (not value or "\0" in value or "\n" in value):
        return "an empty path or one with NUL/newline is not valid"
    if kind == "words":
        try:
            if not shlex.split(value):
                return "empty command"
        except ValueError as exc:
            return f"cannot split {value!r} into words: {exc}"
    return None


def yes(value: str) -> bool:
    """``yes``/``no`` (any case) as a bool; the value was checked before."""
    return _YES[value.lower()]


def normalise_hostfwd(value: str) -> str:
    """``[proto]:[haddr]:hport-[gaddr]:[gport]`` with tcp, 127.0.0.1 and 22 filled in."""
    m = _HOSTFWD.match(value)
    assert m is not None
    proto, haddr, hport, gaddr, gport = m.groups()
    return f"{proto or 'tcp'}:{haddr or '127.0.0.1'}:{hport}-{gaddr}:{gport or '22'}"


def parse_settings(value: str) -> tuple[tuple[str, str], ...] | None:
    """``a=b,c=d`` as pairs; None when malformed."""
    pairs: list[tuple[str, str]] = []
    for item in value.split(","):
        name, sep, val = item.partition("=")
        if not sep or not re.match(r"^[A-Za-z0-9_.-]+$", name):
            return None
        pairs.append((name, val))
    return tuple(pairs)


def _merge_bare(key: str, opts: dict[str, str], entry: RawEntry, rep: Report) -> None:
    """Judge tokens without ``=``: ``cpupin=4,5,6,7`` means pins 4 5 6 7 (legacy typo)."""
    bare = [t for t in entry.bare if t.strip()]
    if not bare:
        return
    loc = replace(entry.origin, key=key)
    if key == "cpu" and "cpupin" in opts and all(_INT.match(t) for t in bare):
        pins = " ".join([opts["cpupin"], *bare])
        rep.warn(loc, f"cpupin written with commas; read as cpupin={pins!r} "
                      "(write the CPUs separated by spaces)")
        opts["cpupin"] = pins
        return
    for tok in bare:
        rep.error(loc, f"{tok!r} is not an option (name=value)")


def check_entry(key: str, entry: RawEntry, rep: Report) -> dict[str, str] | None:
    """Validated options of one entry, defaults filled in; None when the entry is dropped.

    ``key`` is canonical (aliases resolved). Problems and warnings go to ``rep``.
    """
    loc = replace(entry.origin, key=key)
    if key in LEGACY_KEYS:
        rep.warn(loc, f"{key!r} has no effect here: {LEGACY_KEYS[key]}")
        return None
    schema = PARAMS.get(key)
    if schema is None:
        rep.error(loc, f"unknown parameter {key!r}; valid: {_names(_valid_keys())}")
        return None
    opts = {k.strip(): v.strip() for k, v in entry.options.items()}
    for name in entry.repeated:
        rep.warn(loc, f"option {name!r} written more than once in one entry; the last value, "
                      f"{opts.get(name, '')!r}, is used (as legacy DTS did)")
    _merge_bare(key, opts, entry, rep)
    if key == "device" and "driver" not in opts and SCENE_DEVICE_OPTIONS & set(opts):
        rep.warn(loc, "scene-style device entry (pf_idx/vf_idx/guestpci) skipped: scene "
                      "configs are not supported; use driver=vfio-pci,opt_host=...")
        return None
    if key == "qga":
        if opts.get("enable", "yes").lower() == "no":
            rep.error(loc, "qga enable=no is not possible: the framework needs the guest "
                           "agent")
            return None
        rep.warn(loc, "qga has no effect: the guest agent is always on")
    variant: str | None = None
    if schema.selector is not None:
        variant = opts.get(schema.selector)
        if variant is None:
            rep.error(loc, f"missing {schema.selector}=; valid: "
                           f"{_names(list(schema.variants))}")
            return None
        if variant not in schema.variants:
            rep.error(loc, f"{schema.selector}={variant!r} is not valid; valid: "
                           f"{_names(list(schema.variants))}")
            return None
    valid = {o.name: o for o in schema.options_for(variant)}
    what = f"{key} {schema.selector}={variant}" if variant else key
    out: dict[str, str] = {}
    for name, value in opts.items():
        if name in schema.legacy:
            if key == "disk" and name == "type":
                rep.warn(loc, f"disk type={value} read as opt_format={value}")
                out.setdefault("opt_format", value)
            else:
                rep.warn(loc, f"option {name!r} has no effect: {schema.legacy[name]}")
            continue
        opt = valid.get(name)
        if opt is None:
            rep.error(loc, f"unknown option {name!r} for {what}; valid: "
                           f"{_names(list(valid))}")
            continue
        if key == "monitor" and name == "path" and value == "":
            continue
        bad = check_value(opt, value)
        if bad is not None:
            rep.error(loc, f"{name}: {bad}")
            continue
        out[name] = value
    for opt in valid.values():
        if opt.name not in out:
            if opt.required:
                rep.error(loc, f"missing required option {opt.name!r} for {what}")
                return None
            if opt.default is not None:
                out[opt.name] = opt.default
    return out


__all__ = ["RawEntry", "Report", "check_entry", "check_value", "normalise_hostfwd",
           "parse_settings", "yes"]
