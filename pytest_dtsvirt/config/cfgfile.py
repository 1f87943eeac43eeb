"""The DTS suite config reader (design section 3). INTERFACE STUB: to be implemented.

Pure: text in, frozen records out. Keeps the line of every section, key and entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pytest_dtsvirt.errors import ConfigError, Location


@dataclass(frozen=True)
class Entry:
    """One entry of a key's value (ended by ``;`` or a line break): ordered options."""

    options: Mapping[str, str]  # option name -> value, in written order (a dict, never mutated)
    line: int  # line where the entry starts
    bare: tuple[str, ...] = ()  # tokens without '=' (legacy read them as {token: ''}), for the model to judge


@dataclass(frozen=True)
class Param:
    """One key of a section (``cpu = ...``) with its entries."""

    key: str
    entries: tuple[Entry, ...]
    line: int


@dataclass(frozen=True)
class Section:
    """One ``[name]`` section."""

    name: str
    line: int
    params: tuple[Param, ...]
    raw: Mapping[str, str]  # key -> raw value text (for non-VM sections like [suite]); never eval'd

    def as_params(self) -> list[dict[str, list[dict[str, str]]]]:
        """The DTS "params" list: ``[{key: [{opt: value}, ...]}, ...]`` as in the reference."""
        raise NotImplementedError

    def location(self, file: str, key: str | None = None) -> Location:
        raise NotImplementedError


@dataclass(frozen=True)
class CfgFile:
    """A parsed config file."""

    path: str
    sections: tuple[Section, ...]

    def section(self, name: str) -> Section:
        """The section called ``name``; ConfigError naming the valid sections if absent."""
        raise NotImplementedError


def parse_cfg(text: str, path: str = "<string>") -> CfgFile:
    """Parse config text. Raises ConfigError (with file and line) for malformed text."""
    raise NotImplementedError


def read_cfg(path: str) -> CfgFile:
    """Read and parse a file; ConfigError for a missing or unreadable file."""
    raise NotImplementedError


__all__ = ["CfgFile", "ConfigError", "Entry", "Param", "Section", "parse_cfg", "read_cfg"]
