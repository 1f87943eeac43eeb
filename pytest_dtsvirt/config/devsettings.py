"""``device`` entries: ``opt_settings`` keys that collide with properties the plugin sets.

A legacy config often repeats in ``opt_settings`` what an option (or the plugin) already
sets on the same virtio-net-pci device (``vectors=N``, ``mq=on``, ``mac=...``). Emitted as
is, qemu would get the property twice and the later one wins silently (a legacy
``vectors=N`` after the plugin's ``vectors=0`` crashes qemu 7.2 under TCG, exit 139). So
each such key is merged into the option it duplicates, with a warning, or refused when it
contradicts the option or names something the plugin assigns itself. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_dtsvirt.config.build import generic
from pytest_dtsvirt.config.kinds import ascii_int, parse_settings
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.config.table import Checked, ParamSchema, Report
from pytest_dtsvirt.errors import Location

#: the option a settings key duplicates, or why the plugin owns it (a str starting "!")
_OWNED: Mapping[str, Mapping[str, str]] = {
    "vhost-user": {"mac": "opt_mac", "vectors": "opt_vectors", "mq": "opt_queue",
                   "netdev": "!the plugin connects the device to its vhost-user netdev",
                   "chardev": "!the socket is opt_path (and opt_server)"},
    "virtio-net-pci": {"netdev": "opt_netdev", "id": "opt_id", "bus": "opt_bus",
                       "addr": "opt_addr", "mac": "opt_mac", "vectors": "opt_vectors"},
    "vhost-cuse": {"mac": "opt_mac",
                   "netdev": "!the plugin connects the device to its tap netdev",
                   "id": "!the plugin names the device after its netdev"},
}
_ON = ("on", "true", "yes", "1")


def build_devices(param: ParamSchema, items: Sequence[Checked], spec: VmSpec, rep: Report
                  ) -> VmSpec:
    """:func:`~pytest_dtsvirt.config.build.generic` on the entries with their
    ``opt_settings`` merged (see :func:`merge_settings`); ``opt_reconnect`` only in client
    mode."""
    merged: list[Checked] = []
    for opts, loc in items:
        driver = opts.get("driver", "")
        fixed = merge_settings(param, driver, opts, loc, rep)
        if fixed is None:
            continue
        if driver == "vhost-user" and "opt_reconnect" in fixed and \
                fixed.get("opt_server", "no").lower() in _ON:
            rep.error(loc, "opt_reconnect is for client mode (opt_server=no); in server mode "
                           "qemu takes a restarted backend back by itself")
            continue
        merged.append((fixed, loc))
    return generic(param, merged, spec, rep)


def merge_settings(param: ParamSchema, driver: str, opts: Mapping[str, str], loc: Location,
                   rep: Report) -> dict[str, str] | None:
    """``opts`` with every ``opt_settings`` key the plugin sets moved into its option (a
    warning each); None after an error (reported in ``rep``)."""
    out = dict(opts)
    owned = _OWNED.get(driver, {})
    pairs = parse_settings(opts.get("opt_settings", "")) if opts.get("opt_settings") else ()
    if not pairs or not owned:
        return out
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    ok = True
    for key, value in pairs:
        where = f"opt_settings {key}={value}"
        if key in seen:
            rep.error(loc, f"opt_settings names {key} twice; qemu would get both")
            ok = False
            continue
        seen.add(key)
        target = owned.get(key)
        if target is None:
            kept.append((key, value))
        elif target.startswith("!"):
            rep.error(loc, f"{where}: the plugin sets {key} itself ({target[1:]}); remove it")
            ok = False
        elif key == "mq":
            ok = _merge_mq(out, value, loc, rep) and ok
        else:
            ok = _merge_into(param, driver, out, where, target, value, loc, rep) and ok
    if not ok:
        return None
    if kept:
        out["opt_settings"] = ",".join(f"{k}={v}" for k, v in kept)
    else:
        out.pop("opt_settings")
    return out


def _merge_into(param: ParamSchema, driver: str, out: dict[str, str], where: str,
                target: str, value: str, loc: Location, rep: Report) -> bool:
    if target in out:
        if out[target].lower() == value.lower():
            rep.warn(loc, f"{where} repeats {target}; dropped (qemu would get it twice)")
            return True
        rep.error(loc, f"{where} contradicts {target}={out[target]}; keep one of them")
        return False
    opt = next(o for o in param.options_for(driver) if o.name == target)
    problem = opt.kind.check(value)
    if problem is not None:
        rep.error(loc, f"{where}: {problem} (read as {target}; valid: {opt.kind.describe()})")
        return False
    out[target] = value
    rep.warn(loc, f"{where} read as {target}={value} (the plugin sets {target.removeprefix('opt_')}"
                  " itself; set in opt_settings too, qemu would get it twice)")
    return True


def _merge_mq(out: dict[str, str], value: str, loc: Location, rep: Report) -> bool:
    queues = ascii_int(out.get("opt_queue", "1"), 1, 1024) or 1
    on = value.lower() in _ON
    if on == (queues > 1):
        rep.warn(loc, f"opt_settings mq={value} dropped: the plugin sets mq from opt_queue "
                      f"(opt_queue={queues})")
        return True
    need = "opt_queue=N with N>1 (queue pairs on the netdev)" if on else "opt_queue=1"
    rep.error(loc, f"opt_settings mq={value} contradicts opt_queue={queues}; mq={value} needs "
                   f"{need}")
    return False


__all__ = ["build_devices", "merge_settings"]
