"""The types of the parameter table: an option, a parameter, a builder, a problem report.

The table itself (``schema.py``) names a builder per parameter (``build.py``); builders take
the parameter they build. Both sides import these types from here, so neither imports the
other's module for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_dtsvirt.config.kinds import Kind, Str
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError, ConfigWarning, Location

TEXT = Str()
_DERIVE = "<derive>"

#: one checked entry: validated option strings (defaults filled in) and where it was written
Checked = tuple[Mapping[str, str], Location]
#: builds one parameter's checked entries into the spec
Builder = Callable[["ParamSchema", Sequence[Checked], VmSpec, "Report"], VmSpec]


@dataclass(frozen=True)
class Opt:
    """One option of a parameter entry.

    ``field``: the model attribute it fills (default: the name without ``opt_``; None: not a
    model field, e.g. a selector). ``qemu``: the qemu property of the model's device/drive
    it becomes, emitted by the argv builder in table order."""

    name: str
    doc: str
    kind: Kind = TEXT
    required: bool = False
    default: str | None = None
    field: str | None = _DERIVE
    qemu: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Kind):
            raise TypeError(f"option {self.name}: kind {self.kind!r} is not a config.kinds.Kind")
        if self.field == _DERIVE:
            object.__setattr__(self, "field", self.name.removeprefix("opt_"))
        if self.default is not None and (bad := self.kind.check(self.default)) is not None:
            raise TypeError(f"option {self.name}: default {bad}")

    def convert(self, value: str) -> object:
        """The model value of a checked ``value``."""
        return self.kind.convert(value)


@dataclass(frozen=True)
class ParamSchema:
    """One parameter (cfg key).

    ``model``: the class one entry builds (per selector value for variant parameters), set as
    ``VmSpec.<spec_field>``; None: the options fill VmSpec fields themselves. ``build``: the
    builder (:func:`~pytest_dtsvirt.config.build.generic` unless the parameter needs more)."""

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
    model: type | Mapping[str, type] | None = None
    spec_field: str | None = None
    #: the builder; None: :func:`~pytest_dtsvirt.config.build.generic`
    build: Builder | None = None

    def options_for(self, variant: str | None) -> tuple[Opt, ...]:
        """The options valid for an entry (selector included) of ``variant``."""
        if self.selector is None or variant is None:
            return self.options
        return self.options + self.variants.get(variant, ())

    def option_names(self, variant: str | None) -> tuple[str, ...]:
        """Names of the valid options, for messages."""
        return tuple(o.name for o in self.options_for(variant))

    def model_for(self, variant: str | None) -> type:
        """The class an entry of ``variant`` builds (VmSpec when the options fill it)."""
        if self.model is None:
            return VmSpec
        if isinstance(self.model, Mapping):
            assert variant is not None
            return self.model[variant]
        return self.model

    def values(self, opts: Mapping[str, str]) -> dict[str, Any]:
        """Checked option strings -> ``{model field: converted value}``."""
        variant = opts.get(self.selector) if self.selector else None
        return {o.field: o.convert(opts[o.name]) for o in self.options_for(variant)
                if o.field is not None and o.name in opts}


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
