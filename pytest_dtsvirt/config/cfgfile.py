"""The DTS suite config reader.

Pure: text in, frozen records out. Keeps the line of every section, key and entry.

The INI layer behaves as the stdlib ``configparser.ConfigParser()`` the legacy DTS used
(``[DEFAULT]``, full-line ``#``/``;`` comments also inside multi-line values, ``=`` or ``:``
as delimiter, lowercased keys, indented continuation lines, blank lines inside values, no
inline comments), written line by line so every item keeps its line. The value layer
reproduces the legacy splits (``;`` ends an entry, ``,`` separates options, the first ``=``
splits name and value) with these deliberate differences (the legacy "traps"):

- a line break also ends an entry (legacy merged a two-line entry into one dict);
- whitespace around option names and values is stripped (legacy kept ``' number'``);
- ``%`` is literal: no interpolation (legacy raised on a lone ``%``, turned ``%%`` into ``%``);
- duplicate keys and sections (also a repeated ``[DEFAULT]``) are errors naming both lines;
- control characters (NUL, escape, DEL, C1; a tab is whitespace) and a byte-order mark
  anywhere but at the very start are errors naming the line; a UTF-8 byte-order mark at the
  start of the file is skipped (legacy ConfigParser failed on it with "File contains no
  section headers"), so a file reads the same with or without it;
- empty entries (``;;``) and empty tokens (``file=x,;``) are skipped (legacy made ``{'': ''}``);
- tokens without a name and ``=`` (``cpupin=4,5,6`` -> ``5``, ``6``) go to :attr:`Entry.bare`
  and options written twice in one entry are listed in :attr:`Entry.repeated` (the later value
  wins, as in legacy), so the model can judge them; the reader never rejects them because
  non-VM sections (``[suite]``) hold Python-looking values. Values are never ``eval``ed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pytest_dtsvirt.config.kinds import is_control
from pytest_dtsvirt.errors import ConfigError, Location

DEFAULT_SECTION = "DEFAULT"
_COMMENT_PREFIXES = ("#", ";")
BOM = "\ufeff"


def _bad_char(line: str) -> str | None:
    """What is wrong with a line holding a control character or a byte-order mark."""
    for col, c in enumerate(line, start=1):
        if c == BOM:
            return (f"byte-order mark (U+FEFF) in column {col} is not allowed (only at the "
                    "start of the file)")
        if c != "\t" and is_control(c):
            return f"control character {c!r} in column {col} is not allowed"
    return None


@dataclass(frozen=True)
class Entry:
    """One entry of a key's value (ended by ``;`` or a line break): ordered options."""

    options: Mapping[str, str]  # option name -> value, in written order (a dict, never mutated)
    line: int  # line of the entry (an entry never spans lines, so also the line of each option)
    bare: tuple[str, ...] = ()  # tokens without 'name=' (legacy read them as {token: ''})
    repeated: tuple[str, ...] = ()  # option names written more than once (last value kept)

    def as_dict(self) -> dict[str, str]:
        """The options as a fresh dict (the legacy entry dict, without bare tokens)."""
        return dict(self.options)


@dataclass(frozen=True)
class Param:
    """One key of a section (``cpu = ...``) with its entries."""

    key: str  # lowercased, as ConfigParser's optionxform
    entries: tuple[Entry, ...]
    line: int  # line of ``key =``

    def location(self, file: str, section: str | None = None) -> Location:
        """Where this key was written."""
        return Location(file, self.line, section, self.key)


@dataclass(frozen=True)
class Section:
    """One ``[name]`` section (with the ``[DEFAULT]`` keys merged in, as ConfigParser does)."""

    name: str
    line: int
    params: tuple[Param, ...]
    raw: Mapping[str, str]  # key -> raw value text (for non-VM sections like [suite]); never eval'd

    def as_params(self) -> list[dict[str, list[dict[str, str]]]]:
        """The DTS "params" list: ``[{key: [{opt: value}, ...]}, ...]`` as in the reference."""
        return [{p.key: [e.as_dict() for e in p.entries]} for p in self.params]

    def param(self, key: str) -> Param | None:
        """The param called ``key`` (case-insensitive), or None."""
        wanted = key.lower()
        return next((p for p in self.params if p.key == wanted), None)

    def location(self, file: str, key: str | None = None) -> Location:
        """Where this section (or one of its keys, if given and present) was written."""
        found = self.param(key) if key is not None else None
        line = found.line if found is not None else self.line
        return Location(file, line, self.name, key)


@dataclass(frozen=True)
class CfgFile:
    """A parsed config file. ``sections`` excludes ``[DEFAULT]`` (kept in ``defaults``)."""

    path: str
    sections: tuple[Section, ...]
    defaults: Section | None = field(default=None)

    def section(self, name: str) -> Section:
        """The section called ``name``; ConfigError naming the valid sections if absent."""
        for sec in self.sections:
            if sec.name == name:
                return sec
        names = ", ".join(f"[{s.name}]" for s in self.sections) or "none"
        raise ConfigError(f"no section [{name}] in this file; sections: {names}",
                          Location(self.path))

    def names(self) -> tuple[str, ...]:
        """The section names in file order."""
        return tuple(s.name for s in self.sections)


@dataclass
class _Key:
    name: str
    line: int
    lines: list[tuple[int, str]]  # (line number, stripped text); '' marks a blank line


@dataclass
class _Sec:
    name: str
    line: int
    keys: dict[str, _Key] = field(default_factory=dict)


def _parse_entries(lines: list[tuple[int, str]]) -> tuple[Entry, ...]:
    entries: list[Entry] = []
    for lineno, text in lines:
        for piece in text.split(";"):
            options: dict[str, str] = {}
            bare: list[str] = []
            repeated: list[str] = []
            for tok in piece.split(","):
                tok = tok.strip()
                name, eq, value = tok.partition("=")
                name = name.strip()
                if not tok:
                    continue
                if not eq or not name:
                    bare.append(tok)
                    continue
                if name in options and name not in repeated:
                    repeated.append(name)
                options[name] = value.strip()
            if options or bare:
                entries.append(Entry(options, lineno, tuple(bare), tuple(repeated)))
    return tuple(entries)


def _raw_value(lines: list[tuple[int, str]]) -> str:
    return "\n".join(text for _, text in lines).rstrip()


def _split_key(text: str) -> tuple[str, str] | None:
    """``key = value`` or ``key: value`` at the first ``=``/``:``; None if neither."""
    cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
    if cut < 0:
        return None
    return text[:cut].strip(), text[cut + 1:].strip()


def _where(path: str, lineno: int, line: str, cur: _Sec | None, key: _Key | None,
           indent_level: int) -> Location:
    """The location of ``line`` for a message: its section, and its key when it is a
    continuation line of that key or a ``key = value`` line."""
    if cur is None or line.strip().startswith("["):
        return Location(path, lineno)
    indent = len(line) - len(line.lstrip())
    if key is not None and indent > indent_level and line.strip():
        return Location(path, lineno, cur.name, key.name)
    split = _split_key(line.strip())
    name = split[0].lower() if split is not None and split[0] else None
    return Location(path, lineno, cur.name, name if name and not _bad_char(name) else None)


def _read_lines(text: str, path: str) -> tuple[list[_Sec], _Sec | None]:
    sections: dict[str, _Sec] = {}
    defaults: _Sec | None = None
    cur: _Sec | None = None
    key: _Key | None = None
    indent_level = 0
    lines = text.removeprefix(BOM).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, line in enumerate(lines, start=1):
        if (bad := _bad_char(line)) is not None:
            raise ConfigError(bad, _where(path, lineno, line, cur, key, indent_level))
        stripped = line.strip()
        if stripped.startswith(_COMMENT_PREFIXES):
            continue  # a full-line comment, also inside a multi-line value
        if not stripped:
            if key is not None:
                key.lines.append((lineno, ""))  # ConfigParser keeps blank lines in values
            continue
        indent = len(line) - len(line.lstrip())
        where = Location(path, lineno, cur.name if cur else None)
        if cur is not None and key is not None and indent > indent_level:
            key.lines.append((lineno, stripped))  # continuation line
            continue
        indent_level = indent
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise ConfigError(f"malformed section header {stripped!r}: expected [name]",
                                  where)
            name = stripped[1:-1]
            seen = defaults if name == DEFAULT_SECTION else sections.get(name)
            if seen is not None:
                raise ConfigError(f"duplicate section [{name}] (first at line {seen.line})",
                                  Location(path, lineno, name))
            cur = _Sec(name, lineno)
            if name == DEFAULT_SECTION:
                defaults = cur
            else:
                sections[name] = cur
            key = None
            continue
        if cur is None:
            raise ConfigError(f"text before the first [section] header: {stripped!r}", where)
        split = _split_key(stripped)
        if split is None or not split[0]:
            raise ConfigError(f"expected 'key = value', a continuation line (indented) "
                              f"or a comment, got {stripped!r}", where)
        kname, first = split[0].lower(), split[1]
        if kname in cur.keys:
            raise ConfigError(f"duplicate key {kname!r} (first at line {cur.keys[kname].line})",
                              Location(path, lineno, cur.name, kname))
        key = _Key(kname, lineno, [(lineno, first)])
        cur.keys[kname] = key
    return list(sections.values()), defaults


def _build(sec: _Sec, defaults: _Sec | None) -> Section:
    merged = dict(defaults.keys) if defaults is not None and sec is not defaults else {}
    merged.update(sec.keys)  # an overridden default keeps its position, as in ConfigParser
    params = tuple(Param(k.name, _parse_entries(k.lines), k.line) for k in merged.values())
    raw = {k.name: _raw_value(k.lines) for k in merged.values()}
    return Section(sec.name, sec.line, params, raw)


def parse_cfg(text: str, path: str = "<string>") -> CfgFile:
    """Parse config text. Raises ConfigError (with file and line) for malformed text; a
    leading byte-order mark is skipped."""
    sections, defaults = _read_lines(text, path)
    return CfgFile(
        path,
        tuple(_build(s, defaults) for s in sections),
        _build(defaults, None) if defaults is not None else None,
    )


def read_cfg(path: str | Path) -> CfgFile:
    """Read and parse a UTF-8 file (a leading byte-order mark is skipped); ConfigError for a
    missing, unreadable or non-UTF-8 file."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError("config file not found", Location(name))
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror or exc}", Location(name))
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"cannot read config file: {exc}", Location(repr(name)))
    return parse_cfg(decode_text(data, name), name)


def decode_text(data: bytes, name: str) -> str:
    """A config file's bytes as text; ConfigError naming the line of a byte that is not
    UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", Location(name, line))


__all__ = ["CfgFile", "ConfigError", "Entry", "Param", "Section", "parse_cfg", "read_cfg"]
