"""Builders: checked parameter entries -> the part of the :class:`VmSpec` they set (pure).

Each :class:`~pytest_dtsvirt.config.schema.ParamSchema` names its builder. Most parameters use
:func:`generic`, which needs nothing but the schema: every option's kind converts its value and
its ``field`` names the model attribute it fills, so a new option is one ``Opt`` line in the
schema (plus the typed field on the model class, which the schema checks at import). Only
parameters with cross-entry meaning (``net`` pairing, ``cpu`` pins, ``migration``) have their
own builder, which starts from :func:`generic`'s conversion too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pytest_dtsvirt.config.kinds import YesNo
from pytest_dtsvirt.config.model import CONTROL_ADDR, Backend, Migration, NetPair, Nic, VmSpec
from pytest_dtsvirt.config.table import Builder, Checked, ParamSchema, Report
from pytest_dtsvirt.errors import Location

YESNO = YesNo()

#: the control pair when no ``net`` entry provides one
DEFAULT_CONTROL_PAIR = NetPair(Nic(addr=CONTROL_ADDR), Backend("user", control=True))


def _model(param: ParamSchema, opts: Mapping[str, str]) -> Any:
    variant = opts.get(param.selector) if param.selector else None
    return param.model_for(variant)(**param.values(opts))


def generic(param: ParamSchema, items: Sequence[Checked], spec: VmSpec, rep: Report) -> VmSpec:
    """The schema-driven builder.

    - a ``model`` class: one instance per entry, set as ``spec.<spec_field>`` (a tuple of them
      for ``multi`` parameters, else the last entry's);
    - no model: the options fill VmSpec fields directly (the last entry's), or for ``multi``
      parameters each field collects the values of every entry into a tuple.
    """
    if not items:
        return spec
    if param.model is not None:
        assert param.spec_field is not None
        built = [_model(param, o) for o, _ in items]
        changes: dict[str, Any] = {param.spec_field: tuple(built) if param.multi else built[-1]}
        return replace(spec, **changes)
    if not param.multi:
        return replace(spec, **param.values(items[-1][0]))
    collected: dict[str, list[Any]] = {}
    for o, _ in items:
        for name, value in param.values(o).items():
            seq = collected.setdefault(name, [])
            seq.extend(value if isinstance(value, tuple) else (value,))
    lists: dict[str, Any] = {k: tuple(v) for k, v in collected.items()}
    return replace(spec, **lists)


def nothing(param: ParamSchema, items: Sequence[Checked], spec: VmSpec, rep: Report) -> VmSpec:
    """For parameters accepted for compatibility only (qga, daemon)."""
    return spec


def cpu(param: ParamSchema, items: Sequence[Checked], spec: VmSpec, rep: Report) -> VmSpec:
    """:func:`generic`, and a warning when cpupin does not list one CPU per vCPU."""
    spec = generic(param, items, spec, rep)
    pins, number = spec.cpu.pins, spec.cpu.number
    if items and pins and len(pins) != number:
        rep.warn(items[-1][1], f"cpupin lists {len(pins)} CPUs for {number} vCPUs; vCPU i is "
                               "pinned to cpupin[i mod len]")
    return spec


def migration(param: ParamSchema, items: Sequence[Checked], spec: VmSpec, rep: Report
              ) -> VmSpec:
    """``-incoming`` only with enable=yes, which needs a port."""
    if not items:
        return spec
    opts, loc = items[-1]
    if not YESNO.convert(opts["enable"]):
        return spec
    values = param.values(opts)
    if "port" not in values:
        rep.error(loc, "enable=yes needs port=")
        return spec
    return replace(spec, migration=Migration(**values))


def net(param: ParamSchema, items: Sequence[Checked], spec: VmSpec, rep: Report) -> VmSpec:
    """Pair each nic with the first unused backend of the same opt_vlan; mark the control
    pair (see :func:`with_control`)."""
    nics: list[tuple[Nic, Location]] = []
    backs: list[tuple[Backend, Location]] = []
    for o, loc in items:
        values = param.values(o)
        if o["type"] == "nic":
            nics.append((Nic(**values), loc))
        else:
            backs.append((Backend(kind=o["type"], **values), loc))  # type: ignore[arg-type]
    pairs: list[NetPair] = []
    used: set[int] = set()
    for nic, loc in nics:
        match = next((i for i, (b, _) in enumerate(backs)
                      if i not in used and b.vlan == nic.vlan), None)
        if match is None:
            rep.error(loc, f"nic with opt_vlan={nic.vlan} has no user, tap or bridge backend "
                           "with the same opt_vlan")
            continue
        used.add(match)
        pairs.append(NetPair(nic, backs[match][0]))
    for i, (b, loc) in enumerate(backs):
        if i not in used:
            rep.error(loc, f"{b.kind} backend with opt_vlan={b.vlan} has no nic with the same "
                           "opt_vlan")
    return replace(spec, nets=with_control(pairs))


def with_control(pairs: Sequence[NetPair]) -> tuple[NetPair, ...]:
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


__all__ = ["DEFAULT_CONTROL_PAIR", "Builder", "Checked", "cpu", "generic", "migration", "net",
           "nothing", "with_control"]
