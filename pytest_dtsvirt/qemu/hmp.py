"""The human monitor (HMP) of the reference design: a tiny client and an ``info pci`` parser.

The plugin itself talks QMP (:mod:`pytest_dtsvirt.qemu.qmp`); the HMP socket stays for humans
(``nc -U``) and for diagnostics. Over a socket HMP prints a banner and a ``(qemu) `` prompt and
echoes every command through its line editor (ANSI escape codes and ``\\r``), which
:class:`Hmp` strips.

``info pci`` prints bus and device numbers in DECIMAL (``device  31`` is slot 0x1f);
:func:`parse_info_pci` reads them as such (the legacy parser read them as hex).
"""

from __future__ import annotations

import re
import socket
import time

from pytest_dtsvirt.errors import VmError
from pytest_dtsvirt.unixsock import SocketClient

PROMPT = b"(qemu) "
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[@-Z\\-_]")
_SLOT = re.compile(r"^\s*Bus\s+(\d+),\s*device\s+(\d+),\s*function\s+(\d+):\s*$")
_ID = re.compile(r'^\s*id\s+"([^"]*)"\s*$')


def strip_terminal(text: str) -> str:
    """``text`` without ANSI escape sequences and carriage returns."""
    return _ANSI.sub("", text).replace("\r", "")


def parse_info_pci(text: str) -> dict[str, str]:
    """``{device id: "bb:ss.f"}`` from the output of HMP ``info pci``.

    Bus, device and function are printed in decimal and returned in the usual hex form
    (``Bus  0, device  31, function 0`` -> ``00:1f.0``). Devices without an id are left out.
    """
    result: dict[str, str] = {}
    current: str | None = None
    for line in strip_terminal(text).splitlines():
        slot = _SLOT.match(line)
        if slot:
            bus, dev, fn = (int(g) for g in slot.groups())
            current = f"{bus:02x}:{dev:02x}.{fn:x}"
            continue
        ident = _ID.match(line)
        if ident and current is not None and ident.group(1):
            result[ident.group(1)] = current
    return result


class Hmp(SocketClient):
    """An HMP session on an already connected socket; waits for the first prompt.

    Owns the socket (:meth:`close`). One command at a time. A command that times out leaves
    its answer on the way; the next command reads that answer up to its prompt and drops it
    before it sends its own line, so every answer goes to the command that asked for it."""

    connect_error = VmError
    connect_what = "HMP socket"

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self._sock = sock
        self.timeout = timeout
        self._buf = b""
        self._unanswered: str | None = None  # a command whose prompt has not been read yet
        self.banner = strip_terminal(self._read_prompt(time.monotonic() + timeout,
                                                       "banner").decode(errors="replace"))

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    def _read_prompt(self, deadline: float, what: str) -> bytes:
        while not self._buf.endswith(PROMPT):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise VmError(f"HMP: no prompt after {what}; got {self._buf[-300:]!r}")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                raise VmError(f"HMP: connection lost during {what}: {exc}") from exc
            if not chunk:
                raise VmError(f"HMP: connection closed (EOF) during {what}")
            self._buf += chunk
        data, self._buf = self._buf[: -len(PROMPT)], b""
        return data

    def command(self, line: str, timeout: float | None = None) -> str:
        """Run one HMP command line and return its output, cleaned (no echo, no prompt)."""
        if "\n" in line or "\r" in line:
            raise ValueError(f"HMP command must be one line: {line!r}")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if self._unanswered is not None:
            self._read_prompt(deadline, f"the late answer to {self._unanswered!r}")
            self._unanswered = None
        self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            self._sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise VmError(f"HMP: cannot send {line!r}: {exc}") from exc
        self._unanswered = line
        raw = self._read_prompt(deadline, repr(line)).decode(errors="replace")
        self._unanswered = None
        _echo, _, output = raw.partition("\n")  # the line editor's echo ends at the first \n
        return strip_terminal(output)

    def info_pci(self, timeout: float | None = None) -> dict[str, str]:
        """``info pci`` parsed: ``{device id: "bb:ss.f"}``."""
        return parse_info_pci(self.command("info pci", timeout))
