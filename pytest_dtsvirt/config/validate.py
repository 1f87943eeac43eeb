"""Check one parameter entry against the schema (pure): options, values, legacy idioms.

Used by :mod:`pytest_dtsvirt.config.load`. Every problem becomes a ConfigError with the
entry's location; every legacy idiom a ConfigWarning; nothing is silently ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pytest_dtsvirt import secret
from pytest_dtsvirt.config.schema import LEGACY_KEYS, PARAMS, SCENE_DEVICE_OPTIONS, Opt
from pytest_dtsvirt.config.schema import valid_keys as _valid_keys
from pytest_dtsvirt.config.table import Report
from pytest_dtsvirt.errors import ConfigError, Location


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


def _names(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)


#: the largest integer a call or marker may pass (far beyond any option's bounds)
MAX_INT_BITS = 64


def option_text(value: object, where: str, location: Location | None = None) -> str:
    """An option value from Python (``set_vm_*`` call, marker) as the cfg would hold it:
    bool -> yes/no, int -> decimal, str as is. ConfigError (``where`` names the option) for
    an integer too large to be any option's value or any other type."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise ConfigError(f"{where}: integer of {value.bit_length()} bits is too large "
                              "for any option", location)
        return str(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: value {value!r} has type {type(value).__name__}; "
                      "allowed: str, int, bool", location)


def check_value(opt: Opt, value: str) -> str | None:
    """None when ``value`` suits ``opt``, else what is wrong (for the message)."""
    return opt.kind.check(value)


def _merge_bare(key: str, opts: dict[str, str], entry: RawEntry, rep: Report) -> None:
    """Judge tokens without ``=``: ``cpupin=4,5,6,7`` means pins 4 5 6 7 (legacy typo)."""
    bare = [t for t in entry.bare if t.strip()]
    if not bare:
        return
    loc = replace(entry.origin, key=key)
    if key == "cpu" and "cpupin" in opts and all(t.isascii() and t.isdigit() for t in bare):
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
                bad = check_value(valid["opt_format"], value) if value else "empty value"
                if bad is not None:
                    rep.error(loc, f"type (read as opt_format): {bad}")
                    continue
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
        bad = check_value(opt, value)
        if bad is None and value == "":
            bad = "empty value; leave the option out" + (
                f" for its default ({opt.default})" if opt.default is not None else "")
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


__all__ = ["MAX_INT_BITS", "RawEntry", "Report", "check_entry", "check_value", "option_text"]
