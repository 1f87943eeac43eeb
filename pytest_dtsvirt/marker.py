"""The ``@pytest.mark.vm(...)`` marker: signature check, value conversion, merging (pure).

A marker asks for per-test VM parameters in the vocabulary of the suite cfg::

    @pytest.mark.vm(device=[{"driver": "vhost-user", "opt_path": p, "opt_mac": m}],
                    mem={"size": 1024})

Each parameter is one entry (a dict) or a list of entries; option values may be ``str``,
``int`` or ``bool`` and are converted to the strings the cfg would hold (``True`` -> ``"yes"``).
Applied to a VM as one ``vm.set_vm_param(key, **options)`` call per entry, in order: entries
of appending parameters (``device``, ``net``) are added to the cfg's, the others replace it.

This module does not import pytest; the plugin turns :class:`ConfigError` into a setup error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_dtsvirt import secret
from pytest_dtsvirt.config import schema
from pytest_dtsvirt.config.validate import option_text
from pytest_dtsvirt.errors import ConfigError, Location

#: the marker's name
MARKER = "vm"

#: the line shown by ``pytest --markers``
MARKER_HELP = (
    "vm(name='vm0', suite=None, **params): per-test VM parameters in the suite cfg's "
    "vocabulary, one dict or a list of dicts per parameter; device/net entries are added "
    "to the cfg's, other parameters replace it. Example: "
    "@pytest.mark.vm(mem={'size': 1024}, device=[{'driver': 'virtio-net-pci'}])"
)

#: an option list: ((option, value), ...) in written order
Options = tuple[tuple[str, str], ...]


def valid_keys() -> tuple[str, ...]:
    """The parameter names a marker may use (the cfg's keys)."""
    return tuple(schema.valid_keys())


def is_appending(key: str) -> bool:
    """True when entries of ``key`` are added to the cfg's rather than replacing it."""
    param = schema.PARAMS.get(key)
    return param is not None and param.append


def _is_valid_key(key: str) -> bool:
    return bool(schema.is_vm_key(key))


@dataclass(frozen=True)
class VmRequest:
    """What markers ask of one VM: its name, an optional suite, and parameter entries.

    Hashable, so a boot failure can be memoized per (suite, name, entries)."""

    name: str = "vm0"
    suite: str | None = None
    entries: tuple[tuple[str, Options], ...] = ()

    def calls(self) -> list[tuple[str, dict[str, str]]]:
        """``(key, options)`` for each ``set_vm_param`` call, in order."""
        return [(key, dict(opts)) for key, opts in self.entries]

    def describe(self) -> str:
        """A short human form, e.g. ``vm0 mem(size=1024) +device(driver=virtio-net-pci)``."""
        parts = [self.name]
        for key, opts in self.entries:
            sign = "+" if is_appending(key) else ""
            parts.append(f"{sign}{key}({','.join(f'{k}={v}' for k, v in opts)})")
        return secret.mask(" ".join(parts))

    def __repr__(self) -> str:  # a login entry holds a password
        return secret.mask(f"VmRequest(name={self.name!r}, suite={self.suite!r}, "
                           f"entries={self.entries!r})")


def convert_value(value: object, where: str, location: Location | None = None) -> str:
    """An option value as the cfg would hold it: bool -> yes/no, int -> decimal, str as is.
    ConfigError (``where`` names the option) for any other type or an absurdly large int."""
    return option_text(value, where, location)


def _entry(entry: object, where: Location) -> Options:
    if not isinstance(entry, Mapping):
        raise ConfigError(
            "an entry must be a dict of options (or a list of dicts), "
            f"got {type(entry).__name__} {entry!r}", where)
    options: list[tuple[str, str]] = []
    for opt, value in entry.items():
        if not isinstance(opt, str) or not opt:
            raise ConfigError(f"option names must be non-empty strings, got {opt!r}",
                              where)
        text = convert_value(value, f"option {opt}", where)
        if opt == "password":  # login={"password": ...}: never in an output
            secret.register(text)
        options.append((opt, text))
    if not options:
        raise ConfigError("an entry needs at least one option", where)
    return tuple(options)


def parse_marker(args: Sequence[Any], kwargs: Mapping[str, Any],
                 where: str = "@pytest.mark.vm") -> VmRequest:
    """Check a ``vm`` marker's arguments and convert them into a :class:`VmRequest`.

    ``where`` names the test for messages. Raises :class:`ConfigError` naming what is allowed.
    """
    loc = Location(file=where, key="@pytest.mark.vm")
    if len(args) > 2:
        raise ConfigError(f"takes at most 2 positional arguments (name, suite), got {len(args)}",
                          loc)
    bound: dict[str, Any] = dict(zip(("name", "suite"), args, strict=False))
    for k in ("name", "suite"):
        if k in bound and k in kwargs:
            raise ConfigError(f"got multiple values for {k!r}", loc)
    bound.update(kwargs)
    name = bound.pop("name", "vm0")
    suite = bound.pop("suite", None)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty str (the cfg section), got {name!r}", loc)
    if suite is not None and (not isinstance(suite, str) or not suite):
        raise ConfigError(f"suite must be a non-empty str or None, got {suite!r}", loc)
    unknown = sorted(k for k in bound if not _is_valid_key(k))
    if unknown:
        raise ConfigError(
            f"unknown VM parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: name, suite, {', '.join(k for k in valid_keys() if k != 'name')}", loc)
    entries: list[tuple[str, Options]] = []
    for key, value in bound.items():
        key_loc = Location(file=where, key=f"@pytest.mark.vm {key}")
        items = value if isinstance(value, list | tuple) else [value]
        if not items:
            raise ConfigError("empty list; give one dict or a list of dicts", key_loc)
        if len(items) > 1 and not schema.PARAMS[key].append:
            raise ConfigError(f"takes one entry (a dict) in a marker, which replaces the "
                              f"cfg's; a list of {len(items)} given", key_loc)
        entries.extend((key, _entry(item, key_loc)) for item in items)
    return VmRequest(name=name, suite=suite, entries=tuple(entries))


def merge(requests: Iterable[VmRequest], name: str) -> VmRequest:
    """Merge the markers of one test for VM ``name``, given farthest first (module, class,
    function): entries keep that order (later replace/append calls win), the closest
    suite wins."""
    suite: str | None = None
    entries: list[tuple[str, Options]] = []
    for req in requests:
        if req.name != name:
            continue
        if req.suite is not None:
            suite = req.suite
        entries.extend(req.entries)
    return VmRequest(name=name, suite=suite, entries=tuple(entries))


def default_suite(module_name: str, attribute: object | None = None) -> str:
    """The suite of a test module: its ``dtsvirt_suite`` attribute if set, else the module's
    last name component without a ``test_`` prefix (``tests.test_vxlan_sample`` ->
    ``vxlan_sample``)."""
    if attribute is not None:
        if not isinstance(attribute, str) or not attribute:
            raise ConfigError(f"dtsvirt_suite must be a non-empty str, got {attribute!r}",
                              Location(file=module_name, key="dtsvirt_suite"))
        return attribute
    base = module_name.rpartition(".")[2]
    return base.removeprefix("test_") or base


__all__ = ["MARKER", "MARKER_HELP", "VmRequest", "convert_value", "default_suite", "is_appending",
           "merge", "parse_marker", "valid_keys"]
