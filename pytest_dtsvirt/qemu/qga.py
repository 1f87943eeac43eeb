"""A small synchronous client of the qemu guest agent (qemu-ga).

The agent speaks JSON lines over the virtio-serial port that qemu exposes on the host as a
unix socket. :class:`GuestAgent` takes an already connected stream socket (from a Session's
``open_unix``, so a remote DUT works like a local one) and bounds every call by a timeout.

Protocol facts this client relies on (observed with qemu 7.2 and Debian 12's qemu-ga):

- ``connect()`` succeeds long before qemu-ga runs; requests wait in the socket. So readiness
  is "sync with a short timeout, retry" (:meth:`GuestAgent.wait_ready`).
- ``guest-sync-delimited``: send a 0xFF byte, then the request. qemu-ga answers the 0xFF with
  a parse-error line, then ``\\xff{"return": id}``. Everything before the sentinel is dropped
  and replies to older ids (of an earlier, timed-out sync) are skipped.
- After a timeout or a garbled reply the stream is no longer trusted; the next call syncs
  again first.
- ``guest-shutdown`` never replies; the socket reaches EOF when qemu exits.
- One client at a time per socket: qemu serves a second connection only after the first
  closes.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pytest_dtsvirt.errors import AgentError, AgentReplyError, AgentTimeout
from pytest_dtsvirt.unixsock import SocketClient

log = logging.getLogger(__name__)

SENTINEL = b"\xff"
SHUTDOWN_MODES = ("powerdown", "reboot", "halt")
#: seconds :meth:`GuestAgent.exec` spends killing a process that outlived its timeout
KILL_TIMEOUT = 2.0
_MAX_LINE = 16 * 1024 * 1024


class GuestAddress(NamedTuple):
    """One IP address of a guest interface."""

    type: Literal["ipv4", "ipv6"]
    address: str
    prefix: int


@dataclass(frozen=True)
class GuestInterface:
    """A network interface as ``guest-network-get-interfaces`` reports it."""

    name: str
    hardware_address: str | None
    addresses: tuple[GuestAddress, ...]

    @property
    def ipv4(self) -> list[str]:
        """The interface's IPv4 addresses, in the agent's order."""
        return [a.address for a in self.addresses if a.type == "ipv4"]


@dataclass(frozen=True)
class ExecResult:
    """The outcome of :meth:`GuestAgent.exec`.

    ``exit_code`` is the process's exit status, or ``-N`` when signal N killed it (as
    :mod:`subprocess` does). Output is decoded as UTF-8 (invalid bytes replaced)."""

    exit_code: int
    stdout: str
    stderr: str
    truncated: bool = False


def parse_interfaces(reply: Any) -> list[GuestInterface]:
    """Typed interfaces from the ``return`` value of ``guest-network-get-interfaces``."""
    if not isinstance(reply, list):
        raise AgentError(f"guest-network-get-interfaces: expected a list, got {reply!r:.200}")
    result = []
    for item in reply:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise AgentError(f"guest-network-get-interfaces: bad interface {item!r:.200}")
        addresses = []
        for addr in item.get("ip-addresses", []):
            kind = addr.get("ip-address-type") if isinstance(addr, dict) else None
            if kind not in ("ipv4", "ipv6") or not isinstance(addr.get("ip-address"), str):
                raise AgentError(f"guest-network-get-interfaces: bad address {addr!r:.200}")
            addresses.append(GuestAddress(kind, addr["ip-address"], int(addr.get("prefix", 0))))
        hwaddr = item.get("hardware-address")
        result.append(GuestInterface(item["name"], hwaddr if isinstance(hwaddr, str) else None,
                                     tuple(addresses)))
    return result


class GuestAgent(SocketClient):
    """A qemu guest agent client on an already connected socket.

    ``timeout`` is the default bound of each call; every method accepts its own. The client
    owns the socket: :meth:`close` closes it. Not thread-safe; one caller at a time."""

    connect_error = AgentError
    connect_what = "guest agent socket"

    def __init__(self, sock: socket.socket, timeout: float = 10.0,
                 label: str = "guest agent") -> None:
        self._sock = sock
        self.timeout = timeout
        #: starts every error message: which agent (e.g. ``vm0 on DUT local: guest agent``)
        self.label = label
        self._buf = b""
        self._synced = False
        self._closed = False

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._closed = True
        self._sock.close()

    # -- transport -------------------------------------------------------------------------

    def _send(self, data: bytes, deadline: float) -> None:
        self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
        try:
            self._sock.sendall(data)
        except TimeoutError as exc:
            self._synced = False
            raise self._failed(AgentTimeout(f"{self.label}: timed out sending a request"),
                               lost=False) from exc
        except OSError as exc:
            self._synced = False
            raise self._failed(AgentError(f"{self.label}: connection lost while sending: "
                                          f"{exc}"), lost=True) from exc

    def _fill(self, deadline: float, what: str) -> None:
        """Read one chunk into the buffer, bounded by ``deadline``."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._synced = False
            raise self._failed(AgentTimeout(f"{self.label}: no answer to {what}"), lost=False)
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError as exc:
            self._synced = False
            raise self._failed(AgentTimeout(f"{self.label}: no answer to {what}"),
                               lost=False) from exc
        except OSError as exc:
            self._synced = False
            raise self._failed(AgentError(f"{self.label}: connection lost waiting for {what}: "
                                          f"{exc}"), lost=True) from exc
        if not chunk:
            self._synced = False
            raise self._failed(AgentError(f"{self.label}: connection closed (EOF) waiting for "
                                          f"{what}"), lost=True)
        self._buf += chunk
        if len(self._buf) > _MAX_LINE:
            self._buf = b""
            self._synced = False
            raise AgentError(f"{self.label}: reply to {what} exceeds {_MAX_LINE} bytes")

    def _readline(self, deadline: float, what: str) -> bytes:
        while b"\n" not in self._buf:
            self._fill(deadline, what)
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def _request(self, name: str, args: Mapping[str, Any] | None) -> bytes:
        msg: dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = dict(args)
        return json.dumps(msg).encode() + b"\n"

    # -- sync ------------------------------------------------------------------------------

    def sync(self, timeout: float | None = None) -> None:
        """Synchronise the stream with ``guest-sync-delimited`` and a fresh random id.

        Everything the agent sent before its answer to this id is discarded, including
        answers to earlier syncs that timed out. Raises AgentTimeout if the agent does not
        answer in time (then retry: the stale answer is skipped next time)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        sync_id = random.randrange(1, 2**31)
        self._synced = False
        self._send(SENTINEL + self._request("guest-sync-delimited", {"id": sync_id}), deadline)
        what = f"guest-sync-delimited (id {sync_id})"
        while True:
            while SENTINEL not in self._buf:
                self._buf = b""  # nothing before a sentinel is of interest
                self._fill(deadline, what)
            self._buf = self._buf[self._buf.index(SENTINEL) + 1:]
            while b"\n" not in self._buf and SENTINEL not in self._buf:
                self._fill(deadline, what)
            if SENTINEL in self._buf.partition(b"\n")[0]:
                continue  # a sentinel without a line: start over at the next one
            line, _, self._buf = self._buf.partition(b"\n")
            try:
                reply = json.loads(line)
            except ValueError:
                log.debug("guest agent: skipping unparsable line after sentinel: %r", line)
                continue
            if isinstance(reply, dict) and reply.get("return") == sync_id:
                self._synced = True
                return
            log.debug("guest agent: skipping stale sync reply %r", reply)

    def wait_ready(self, timeout: float, attempt: float = 1.0) -> float:
        """Sync repeatedly (each attempt at most ``attempt`` s) until the agent answers.

        Returns the seconds it took; AgentTimeout when ``timeout`` passes first. A connection
        error (EOF) is raised at once: the caller decides whether qemu died."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeout(f"{self.label}: not answering after {timeout:g} s")
            try:
                self.sync(min(attempt, remaining))
                return time.monotonic() - start
            except AgentTimeout:
                continue

    # -- commands --------------------------------------------------------------------------

    def command(self, name: str, args: Mapping[str, Any] | None = None,
                timeout: float | None = None) -> Any:
        """Run agent command ``name`` and return its ``return`` value.

        Syncs first when the stream is not trusted (first use, after a timeout). An error
        reply raises AgentReplyError with the agent's class and description."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._synced:
            self.sync(deadline - time.monotonic())
        self._send(self._request(name, args), deadline)
        line = self._readline(deadline, name)
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict) or not ("return" in reply or "error" in reply):
            self._synced = False
            raise AgentError(f"{self.label}: unexpected reply to {name}: {line[:300]!r}")
        if "error" in reply:
            err = reply["error"] if isinstance(reply["error"], dict) else {}
            raise AgentReplyError(name, str(err.get("class", "?")), str(err.get("desc", "")))
        return reply["return"]

    def ping(self, timeout: float | None = None) -> None:
        """``guest-ping``: returns when the agent answered."""
        self.command("guest-ping", timeout=timeout)

    def info(self, timeout: float | None = None) -> dict[str, Any]:
        """``guest-info``: the agent's version and supported commands."""
        ret = self.command("guest-info", timeout=timeout)
        return ret if isinstance(ret, dict) else {}

    def network_interfaces(self, timeout: float | None = None) -> list[GuestInterface]:
        """The guest's interfaces from ``guest-network-get-interfaces``, parsed."""
        return parse_interfaces(self.command("guest-network-get-interfaces", timeout=timeout))

    def ipv4_of(self, name: str, timeout: float | None = None) -> str | None:
        """The first IPv4 address of interface ``name``; None if it has none or does not
        exist (yet): readiness loops poll this."""
        for iface in self.network_interfaces(timeout):
            if iface.name == name and iface.ipv4:
                return iface.ipv4[0]
        return None

    def set_user_password(self, user: str, password: str,
                          timeout: float | None = None, *, crypted: bool = False) -> None:
        """``guest-set-user-password``: the guest runs ``chpasswd`` (``-e`` when
        ``crypted``: ``password`` is a ``crypt(3)`` hash) for ``user``. The password travels
        base64-encoded over the private agent socket, never logged."""
        encoded = base64.b64encode(password.encode()).decode()
        self.command("guest-set-user-password",
                     {"username": user, "password": encoded, "crypted": crypted},
                     timeout=timeout)

    def read_file(self, path: str, timeout: float | None = None) -> bytes:
        """A guest file's bytes through ``guest-file-open/read/close`` (no process is
        started in the guest)."""
        handle = self.command("guest-file-open", {"path": path, "mode": "r"}, timeout=timeout)
        chunks: list[bytes] = []
        try:
            while True:
                ret = self.command("guest-file-read", {"handle": handle, "count": 65536},
                                   timeout=timeout)
                chunks.append(base64.b64decode(str(ret.get("buf-b64", ""))))
                if ret.get("eof") or not ret.get("count"):
                    break
        finally:
            self.command("guest-file-close", {"handle": handle}, timeout=timeout)
        return b"".join(chunks)

    def write_file(self, path: str, data: bytes, timeout: float | None = None) -> None:
        """Replace a guest file's content in place (``guest-file-open`` mode ``w``: an
        existing file keeps its owner and mode; no process is started in the guest)."""
        handle = self.command("guest-file-open", {"path": path, "mode": "w"}, timeout=timeout)
        try:
            self.command("guest-file-write", {"handle": handle,
                                              "buf-b64": base64.b64encode(data).decode()},
                         timeout=timeout)
        finally:
            self.command("guest-file-close", {"handle": handle}, timeout=timeout)

    def shutdown(self, mode: str = "powerdown", timeout: float | None = None) -> None:
        """``guest-shutdown``; returns once the request is sent (the agent never answers).

        Syncs first, so the request reaches a live agent. Use :meth:`wait_closed` to wait
        for qemu to exit."""
        if mode not in SHUTDOWN_MODES:
            raise ValueError(f"shutdown mode {mode!r}: expected one of {SHUTDOWN_MODES}")
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        if not self._synced:
            self.sync(deadline - time.monotonic())
        self._synced = False
        self._send(self._request("guest-shutdown", {"mode": mode}), deadline)

    def wait_closed(self, timeout: float) -> None:
        """Wait until the peer closes the connection (qemu exited); discard any data.

        AgentTimeout if it is still open after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self._synced = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AgentTimeout(f"{self.label}: connection still open after {timeout:g} s")
            self._sock.settimeout(remaining)
            try:
                if not self._sock.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:  # reset by peer: closed as well
                return

    def exec(self, argv: Sequence[str], timeout: float | None = None,
             input: bytes | None = None) -> ExecResult:
        """Run ``argv`` in the guest with ``guest-exec`` and wait for it to finish.

        Output is captured (base64 on the wire, decoded here). AgentTimeout when the process
        has not exited within ``timeout``; it is then killed (SIGKILL, within
        :data:`KILL_TIMEOUT` more seconds) and the error says whether that worked."""
        if not argv:
            raise ValueError("exec: empty argv")
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        pid = self._start(argv, input, deadline)
        status = self._wait_exited(pid, deadline)
        if status is None:
            outcome = self._kill(pid)
            raise AgentTimeout(f"{self.label}: guest-exec {list(argv)!r}: still running "
                               f"after {limit:g} s (pid {pid}); {outcome}")
        return _exec_result(status)

    def _start(self, argv: Sequence[str], input: bytes | None, deadline: float) -> int:
        """``guest-exec``: start ``argv`` with its output captured; its guest PID."""
        args: dict[str, Any] = {"path": argv[0], "arg": list(argv[1:]), "capture-output": True}
        if input is not None:
            args["input-data"] = base64.b64encode(input).decode()
        started = self.command("guest-exec", args, timeout=deadline - time.monotonic())
        pid = started.get("pid") if isinstance(started, dict) else None
        if not isinstance(pid, int):
            raise AgentError(f"guest-exec: reply has no pid: {started!r:.200}")
        return pid

    def _wait_exited(self, pid: int, deadline: float) -> Mapping[str, Any] | None:
        """Poll ``guest-exec-status`` until ``pid`` exited (its status; qemu-ga then forgets
        it) or ``deadline`` passes (None)."""
        delay = 0.02
        while True:
            status = self.command("guest-exec-status", {"pid": pid},
                                  timeout=max(deadline - time.monotonic(), 0.001))
            if not isinstance(status, dict):
                raise AgentError(f"guest-exec-status: unexpected reply {status!r:.200}")
            if status.get("exited"):
                return status
            if time.monotonic() + delay >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.25)

    def _kill(self, pid: int) -> str:
        """SIGKILL the guest process ``pid`` left by a timed-out exec and collect its status;
        what happened, in words."""
        deadline = time.monotonic() + KILL_TIMEOUT
        try:
            killer = self._start(["/bin/sh", "-c", 'kill -KILL "$1"', "sh", str(pid)], None,
                                 deadline)
            killer_status = self._wait_exited(killer, deadline)
            if self._wait_exited(pid, deadline) is not None:
                return "killed it"
        except AgentError as exc:
            return f"could not kill it: {exc}"
        if killer_status is None:
            return f"could not kill it: kill did not finish within {KILL_TIMEOUT:g} s"
        result = _exec_result(killer_status)
        if result.exit_code == 0:
            return f"sent it SIGKILL, but it had not exited {KILL_TIMEOUT:g} s later"
        return (f"could not kill it: kill exited {result.exit_code}: "
                f"{result.stderr.strip()[:200]}")


def _exec_result(status: Mapping[str, Any]) -> ExecResult:
    def text(key: str) -> str:
        data = status.get(key)
        return base64.b64decode(data).decode(errors="replace") if isinstance(data, str) else ""

    if isinstance(status.get("exitcode"), int):
        code = int(status["exitcode"])
    elif isinstance(status.get("signal"), int):
        code = -int(status["signal"])
    else:
        raise AgentError(f"guest-exec-status: exited without code or signal: {status!r:.200}")
    truncated = bool(status.get("out-truncated") or status.get("err-truncated"))
    return ExecResult(code, text("out-data"), text("err-data"), truncated)
