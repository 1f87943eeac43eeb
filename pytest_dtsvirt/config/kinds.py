"""Value kinds of VM options: how a written value is checked and what it becomes (pure).

Every :class:`~pytest_dtsvirt.config.schema.Opt` carries one :class:`Kind` instance: its
``check`` says what is wrong with a value (for the error message), its ``convert`` turns a
checked value into what the model field holds. Bounds live in the kind instance
(``Int(1, 512)``), so an option's type, bounds and conversion are written once, in the schema.
A kind the validator does not know cannot exist: an option whose kind is not a :class:`Kind`
is refused when the schema is imported.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

_DIGITS = re.compile(r"[0-9]+")  # ASCII only: int() would also take '٣' and '²'
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_HOSTPCI = re.compile(r"([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[0-1]?[0-9a-fA-F]\.[0-7]")
_GUESTADDR = re.compile(r"(0x)?([0-9a-fA-F]{1,2})(\.[0-7])?")
_HOSTFWD = re.compile(r"(tcp|udp)?:([0-9.]*):([0-9]{1,5})-([0-9.]*):([0-9]{0,5})")
_SETTING_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_YES = {"yes": True, "no": False}
#: longest integer text looked at (far below Python's 4300-digit conversion limit)
MAX_INT_DIGITS = 20


def is_control(c: str) -> bool:
    """True for C0 (tab included), DEL and C1 controls, the line and paragraph separators
    U+2028/U+2029 and the byte-order mark U+FEFF."""
    code = ord(c)
    return code < 0x20 or 0x7F <= code < 0xA0 or code in (0x2028, 0x2029, 0xFEFF)


def control_chars(value: str) -> str | None:
    """What is wrong with a value holding NUL or other control characters, else None."""
    bad = sorted({c for c in value if is_control(c)})
    if not bad:
        return None
    return f"control character{'s' if len(bad) > 1 else ''} " \
           f"{', '.join(repr(c) for c in bad)} not allowed"


def shown(value: str) -> str:
    """``value`` quoted for a message, cut when long."""
    return repr(value) if len(value) <= 40 else f"'{value[:20]}...({len(value)} characters)'"


def ascii_int(value: str, lo: int, hi: int) -> int | None:
    """``value`` as an int when it is ASCII digits within ``lo..hi``, else None."""
    if not _DIGITS.fullmatch(value) or len(value.lstrip("0")) > MAX_INT_DIGITS:
        return None
    number = int(value)
    return number if lo <= number <= hi else None


class Kind:
    """A value kind: :meth:`check` a written value, :meth:`convert` a checked one."""

    #: the kind's name in docs/parameters.md
    label = "text"

    def check(self, value: str) -> str | None:
        """None when ``value`` is valid, else what is wrong (without the option name)."""
        raise NotImplementedError

    def convert(self, value: str) -> object:
        """The model value of a checked ``value``."""
        return value

    def describe(self) -> str:
        """What is valid, for docs/parameters.md."""
        return self.label


@dataclass(frozen=True)
class Str(Kind):
    """Free text (no control characters); ``aliases`` maps a written value to the held one."""

    aliases: tuple[tuple[str, str], ...] = ()
    label = "text"

    def check(self, value: str) -> str | None:
        """Refuses control characters only."""
        return control_chars(value)

    def convert(self, value: str) -> object:
        """The text, an alias replaced."""
        return dict(self.aliases).get(value, value)


@dataclass(frozen=True)
class Int(Kind):
    """A non-negative decimal integer of ASCII digits within ``lo..hi``."""

    lo: int = 0
    hi: int = 2**31 - 1
    label = "integer"

    def check(self, value: str) -> str | None:
        """ASCII digits within the bounds."""
        if ascii_int(value, self.lo, self.hi) is not None:
            return None
        return f"{shown(value)} is not an integer {self.lo}-{self.hi}"

    def convert(self, value: str) -> object:
        """The int."""
        return int(value)

    def describe(self) -> str:
        """``integer LO-HI``."""
        return f"integer {self.lo}-{self.hi}"


@dataclass(frozen=True)
class Seconds(Int):
    """An integer number of seconds, held as a float."""

    def convert(self, value: str) -> object:
        """The float."""
        return float(int(value))


@dataclass(frozen=True)
class YesNo(Kind):
    """``yes`` or ``no`` (any case), held as a bool."""

    label = "yes, no"

    def check(self, value: str) -> str | None:
        """yes or no."""
        return None if value.lower() in _YES else f"{shown(value)} is not yes or no"

    def convert(self, value: str) -> object:
        """The bool."""
        return _YES[value.lower()]


@dataclass(frozen=True)
class Choice(Kind):
    """One of ``choices``; held as written, or as a bool when ``true`` names the yes-value."""

    choices: tuple[str, ...] = ()
    true: str | None = None  # e.g. "on": the model holds value == "on"

    def check(self, value: str) -> str | None:
        """One of the choices."""
        if value in self.choices:
            return None
        return f"{shown(value)} is not valid; valid: {', '.join(self.choices)}"

    def convert(self, value: str) -> object:
        """The choice, or the bool it stands for."""
        return value if self.true is None else value == self.true

    def describe(self) -> str:
        """The choices."""
        return ", ".join(self.choices)


@dataclass(frozen=True)
class Pattern(Kind):
    """Text matching a regular expression; ``what`` names the form for messages."""

    regex: re.Pattern[str]
    what: str
    label = "text"

    def check(self, value: str) -> str | None:
        """Matches the pattern."""
        return None if self.regex.fullmatch(value) else f"{shown(value)} is not {self.what}"

    def describe(self) -> str:
        """The form."""
        return self.what


MAC = Pattern(_MAC, "a MAC address (aa:bb:cc:dd:ee:ff)")
HOSTPCI = Pattern(_HOSTPCI, "a host PCI address ([dddd:]bb:ss.f)")


@dataclass(frozen=True)
class GuestAddr(Kind):
    """A guest PCI slot: hex 0..1f, optionally ``.function``."""

    label = "guest PCI slot"

    def check(self, value: str) -> str | None:
        """hex 0..1f[.f]."""
        m = _GUESTADDR.fullmatch(value)
        if not m or int(m.group(2), 16) > 0x1F:
            return f"{shown(value)} is not a guest PCI slot (hex 0..1f, optionally .function)"
        return None


@dataclass(frozen=True)
class HostFwd(Kind):
    """``[tcp|udp]:[hostaddr]:hostport-[guestaddr]:[guestport]``, held normalised."""

    label = "hostfwd rule"

    def check(self, value: str) -> str | None:
        """The form; host port 0-65535 (0: qemu picks a free one), guest port 1-65535."""
        m = _HOSTFWD.fullmatch(value)
        if m and ascii_int(m.group(3), 0, 65535) is not None and (
                not m.group(5) or ascii_int(m.group(5), 1, 65535) is not None):
            return None
        return (f"{shown(value)} is not [tcp|udp]:[hostaddr]:hostport-[guestaddr]:[guestport] "
                "(host port 0-65535, 0: any free one; guest port 1-65535)")

    def convert(self, value: str) -> object:
        """tcp, 127.0.0.1 and guest port 22 filled in."""
        m = _HOSTFWD.fullmatch(value)
        assert m is not None
        proto, haddr, hport, gaddr, gport = m.groups()
        return f"{proto or 'tcp'}:{haddr or '127.0.0.1'}:{hport}-{gaddr}:{gport or '22'}"


@dataclass(frozen=True)
class Path(Kind):
    """A non-empty path (no control characters)."""

    label = "path"

    def check(self, value: str) -> str | None:
        """Non-empty, no control characters."""
        return "an empty path is not valid" if not value else control_chars(value)


@dataclass(frozen=True)
class Words(Kind):
    """Arguments split like a shell would (never run by one), held as a tuple."""

    label = "words"

    def check(self, value: str) -> str | None:
        """Splits into at least one word."""
        if (bad := control_chars(value)) is not None:
            return bad
        try:
            return None if shlex.split(value) else "empty command"
        except ValueError as exc:
            return f"cannot split {shown(value)} into words: {exc}"

    def convert(self, value: str) -> object:
        """The words."""
        return tuple(shlex.split(value))


@dataclass(frozen=True)
class IntList(Kind):
    """Integers ``lo..hi`` separated by spaces, held as a tuple (``cpupin``)."""

    lo: int = 0
    hi: int = 8191
    label = "integers"

    def check(self, value: str) -> str | None:
        """Every word an integer within the bounds."""
        if (bad := control_chars(value)) is not None:
            return bad
        if all(ascii_int(w, self.lo, self.hi) is not None for w in value.split(" ") if w):
            return None
        return f"{shown(value)} is not a space separated list of integers {self.lo}-{self.hi}"

    def convert(self, value: str) -> object:
        """The ints."""
        return tuple(int(w) for w in value.split(" ") if w)

    def describe(self) -> str:
        """``integers LO-HI, space separated``."""
        return f"integers {self.lo}-{self.hi}, space separated"


@dataclass(frozen=True)
class Settings(Kind):
    """``name=value`` pairs joined by ``,``, held as a tuple of pairs."""

    label = "name=value,..."

    def check(self, value: str) -> str | None:
        """Each item ``name=value``."""
        if (bad := control_chars(value)) is not None:
            return bad
        if parse_settings(value) is None:
            return f"{shown(value)} is not name=value pairs joined by ','"
        return None

    def convert(self, value: str) -> object:
        """The pairs."""
        return parse_settings(value) or ()


def parse_settings(value: str) -> tuple[tuple[str, str], ...] | None:
    """``a=b,c=d`` as pairs; None when malformed."""
    pairs: list[tuple[str, str]] = []
    for item in value.split(","):
        name, sep, val = item.partition("=")
        if not sep or not _SETTING_NAME.fullmatch(name):
            return None
        pairs.append((name, val))
    return tuple(pairs)


__all__ = ["HOSTPCI", "MAC", "MAX_INT_DIGITS", "Choice", "GuestAddr", "HostFwd", "Int",
           "IntList", "Kind", "Path", "Pattern", "Seconds", "Settings", "Str", "Words",
           "YesNo", "ascii_int", "control_chars", "parse_settings"]
