"""The DUT config file: which hosts tests run on and how to reach them.

Compatible in spirit with DTS ``crbs.cfg``: an INI file with one section per DUT::

    [dut1]
    # host: "local" (the default) is this machine, reached without SSH
    host = 10.0.0.5
    port = 22
    user = root
    # key (a private key file) or password
    key = ~/.ssh/id_ed25519
    known_hosts = ~/.ssh/known_hosts
    host_key_check = yes
    qemu = qemu-system-x86_64
    workdir = /tmp/dtsvirt-root
    memory_channels = 4

The legacy crbs.cfg names ``dut_ip``, ``dut_user``, ``dut_passwd`` and ``channels`` are
accepted as aliases; other crbs.cfg keys (tester, packet generator...) load with a warning.
Everything here is pure; :func:`pytest_dtsvirt.session.dut.connect` opens a DUT from a config.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
from dataclasses import dataclass, field

from pytest_dtsvirt import secret
from pytest_dtsvirt.config.cfgfile import decode_text
from pytest_dtsvirt.config.kinds import ascii_int, control_chars, shown
from pytest_dtsvirt.config.model import DEFAULT_QEMU
from pytest_dtsvirt.errors import ConfigError, Location

log = logging.getLogger(__name__)

LOCAL = "local"
DEFAULT_MEMORY_CHANNELS = 4

KEYS = ("host", "port", "user", "password", "key", "known_hosts", "host_key_check", "qemu",
        "workdir", "memory_channels")
ALIASES = {"dut_ip": "host", "dut_user": "user", "dut_passwd": "password",
           "channels": "memory_channels"}
#: crbs.cfg keys that describe things this framework does not drive (tester, traffic gen)
IGNORED_LEGACY = frozenset({
    "os", "dut_arch", "dut_cores", "bypass_core0", "tester_ip", "tester_passwd",
    "pktgen_group", "ixia_group", "snapshot_load_side", "dut_port_ctl",
})
MAX_MEMORY_CHANNELS = 64
_INLINE_COMMENT = re.compile(r"\s[;#]")
_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}


@dataclass(frozen=True)
class DutConfig:
    """How to reach one DUT and what to use there. ``password`` never appears in repr."""

    name: str = LOCAL
    host: str = LOCAL
    port: int = 22
    user: str | None = None  # None: the current user locally, root over SSH
    password: str | None = field(default=None, repr=False)
    key: str | None = None
    known_hosts: str | None = None
    host_key_check: bool = True
    qemu: str = DEFAULT_QEMU
    workdir: str = ""  # "" -> /tmp/dtsvirt-<login user> (filled in at construction)
    memory_channels: int = DEFAULT_MEMORY_CHANNELS

    def __post_init__(self) -> None:
        secret.register(self.password)
        if not self.workdir:
            object.__setattr__(self, "workdir", f"/tmp/dtsvirt-{self.login}")

    @property
    def is_local(self) -> bool:
        """True for this machine (host ``local``): reached without SSH."""
        return self.host == LOCAL

    @property
    def login(self) -> str:
        """The user name to log in as (resolving the default)."""
        if self.user:
            return self.user
        return getpass.getuser() if self.is_local else "root"


def local_dut_config(name: str = LOCAL) -> DutConfig:
    """The config of this machine as a DUT."""
    return DutConfig(name=name)


def guest_dut_config(name: str, user: str, password: str | None = None,
                     memory_channels: int = DEFAULT_MEMORY_CHANNELS) -> DutConfig:
    """The config of a guest as a DUT (for :class:`VmDut`): reached over SSH through the
    host DUT, host key not checked (a throwaway guest's key changes with every image)."""
    return DutConfig(name=name, host=name, user=user, password=password,
                     host_key_check=False, memory_channels=memory_channels)


def _convert(key: str, value: str, loc: Location) -> object:
    if (bad := control_chars(value)) is not None:
        raise ConfigError(bad, loc)
    if key != "password" and _INLINE_COMMENT.search(value):
        raise ConfigError(f"{shown(value)}: inline comments are not supported (a ';' or '#' after "
                          "a space would be part of the value); put the comment on a line "
                          "of its own", loc)
    if key == "port":
        port = ascii_int(value, 1, 65535)
        if port is None:
            raise ConfigError(f"must be a number 1-65535, not {shown(value)}", loc)
        return port
    if key == "memory_channels":
        channels = ascii_int(value, 1, MAX_MEMORY_CHANNELS)
        if channels is None:
            raise ConfigError(f"must be a positive number up to {MAX_MEMORY_CHANNELS}, "
                              f"not {shown(value)}", loc)
        return channels
    if key == "host_key_check":
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ConfigError(f"must be yes or no, not {shown(value)}", loc)
    if not value and key not in ("password",):
        raise ConfigError("empty value", loc)
    if key in ("host", "user") and any(c.isspace() for c in value):
        raise ConfigError(f"{shown(value)}: a {key} name has no spaces", loc)
    if key in ("key", "known_hosts"):
        return os.path.expanduser(value)
    return value


def parse_dut_configs(text: str, filename: str = "<string>") -> list[DutConfig]:
    """Parse DUT config text (pure); ConfigError with file:line for every problem.

    As in ConfigParser, a comment is a whole line starting with ``#`` or ``;``; there are no
    inline comments, so a value with `` ;`` or `` #`` after a space is refused (a comment
    written after a value would otherwise become part of it), except for ``password``, which
    is the rest of the line verbatim. Control characters are refused; a leading UTF-8
    byte-order mark is skipped."""
    problems: list[ConfigError] = []
    sections: list[tuple[str, int, dict[str, object]]] = []
    seen_sections: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    current: dict[str, object] | None = None
    section = None
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        loc = Location(filename, lineno, section)
        if (bad := control_chars(raw.replace("\t", " "))) is not None:
            problems.append(ConfigError(bad, loc))
            continue
        header = re.fullmatch(r"\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip()
            if section in seen_sections:
                problems.append(ConfigError(
                    f"duplicate section (first at line {seen_sections[section]})",
                    Location(filename, lineno, section)))
            seen_sections[section] = lineno
            current, seen_keys = {}, {}
            sections.append((section, lineno, current))
            continue
        parts = re.split(r"\s*([=:])\s*", line, maxsplit=1)
        if len(parts) != 3 or current is None:
            problems.append(ConfigError("expected 'key = value' inside a [section]", loc))
            continue
        key, _, value = parts
        value = value.strip()  # no inline comments, as in ConfigParser (passwords may hold ;)
        key = key.strip().lower()
        loc = Location(filename, lineno, section, key)
        if key in IGNORED_LEGACY:
            log.warning("%s: legacy crbs.cfg key has no effect here", loc)
            continue
        name = ALIASES.get(key, key)
        if name not in KEYS:
            problems.append(ConfigError(
                f"unknown key; valid keys: {', '.join(KEYS)} "
                f"(legacy aliases: {', '.join(ALIASES)})", loc))
            continue
        if name in seen_keys:
            problems.append(ConfigError(f"duplicate key (first at line {seen_keys[name]})", loc))
            continue
        seen_keys[name] = lineno
        if name == "password":
            secret.register(value)
        try:
            current[name] = _convert(name, value, loc)
        except ConfigError as exc:
            problems.append(exc)
    if problems:
        raise ConfigError.collect(problems)
    configs = [DutConfig(name=name, **values) for name, _, values in sections]  # type: ignore[arg-type]
    if not configs:
        raise ConfigError("no DUT section found", Location(filename))
    for cfg in configs:
        if cfg.password is not None and cfg.key is not None:
            raise ConfigError("give either password or key, not both",
                              Location(filename, seen_sections[cfg.name], cfg.name))
    return configs


def load_dut_configs(path: str) -> list[DutConfig]:
    """Read and parse a DUT config file; ConfigError if it cannot be read or is wrong."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read DUT config: {exc.strerror}", Location(path))
    except ValueError as exc:  # a NUL in the path
        raise ConfigError(f"cannot read DUT config: {exc}", Location(repr(path)))
    return parse_dut_configs(decode_text(data, path), path)


def parse_dut_spec(spec: str) -> DutConfig:
    """``[user@]host[:port]`` (``[v6addr]:port`` for IPv6) or ``local`` from ``--dut``."""
    match = re.fullmatch(r"(?:([^@\s]+)@)?(\[[0-9A-Fa-f:.]+\]|[^:@\s\[\]]+)(?::(\d+))?", spec)
    loc = Location("--dut", key=spec)
    if not match:
        raise ConfigError("expected [user@]host[:port] or 'local'", loc)
    user, host, port = match.groups()
    host = host.strip("[]")
    if host == LOCAL:
        if user or port:
            raise ConfigError("'local' takes no user or port", loc)
        return local_dut_config()
    port_value = _convert("port", port, loc) if port else 22
    assert isinstance(port_value, int)
    return DutConfig(name=spec, host=host, port=port_value, user=user)

