"""A host reached over SSH (paramiko) as a :class:`Session`.

* commands: an exec channel running ``shlex.join(argv)`` (so no value reaches the remote
  shell unquoted), wrapped so that the remote PID is known and a timeout can kill the
  command's process group by PID;
* streams: TCP through ``direct-tcpip`` channels, unix sockets through an exec channel running
  ``socat`` on the host (paramiko has no ``direct-streamlocal``); both relayed to a local
  socketpair (:mod:`relay`) so callers get a real socket;
* files: SFTP, or ``cat`` over an exec channel when the host has no SFTP server (dropbear);
* shells: a pty shell with the deterministic prompt of :meth:`Shell.sync`.

``sock=`` opens the session *through* an existing byte stream, e.g. a guest's SSH port
reached from the DUT: ``SshSession("127.0.0.1", port, sock=dut.open_tcp("127.0.0.1", port))``.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import re
import select
import shlex
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import paramiko

from pytest_dtsvirt.errors import CommandTimeout, GuestAuthError, SessionError
from pytest_dtsvirt.session.base import (
    BufferedShell,
    CommandResult,
    PipedProcess,
    Session,
    Shell,
    raise_on_failure,
)
from pytest_dtsvirt.session.channel import Pty, start_channel
from pytest_dtsvirt.session.relay import Relay

log = logging.getLogger(__name__)
#: a bound on opening the channel of start_piped
PIPED_OPEN_TIMEOUT_S = 30.0
#: a bound on each SFTP request (read_file, write_file, put, get)
SFTP_TIMEOUT_S = 60.0

_AUTO_ADD_WARNED: set[str] = set()
_AUTO_ADD_LOCK = threading.Lock()
# Waits for the client's go line, prints the PID of the command (sshd made it a session
# leader) on stderr, then execs argv. The go line is sent once the server has confirmed the
# exec request: dropbear 2022.83 may start a command on a channel it has already closed
# (see session/channel.py) and exits on that command's first output; so a command never
# confirmed never starts, and writes nothing.
_RUN_WRAPPER = 'IFS= read -r _ || exit 0; echo "$$" >&2; exec "$@"'
# The same for an interactive shell: the login shell starts (and prints its prompt) only after
# the go line, so a shell request dropbear did not confirm never prints. (Socket relays use
# _RUN_WRAPPER with socat.)
_SHELL_WRAPPER = shlex.join(["sh", "-c", 'IFS= read -r _ || exit 0; exec "${SHELL:-/bin/sh}" -l'])
# Relays stdin/stdout to the unix socket "$2" in directory "$1" (both positional: no shell
# parses them; socat sees the file name only).
_SOCAT_IN_DIR = 'cd -- "$1" || exit 1; exec socat -d -d - "UNIX-CONNECT:$2"'
# Characters with a meaning in socat address syntax; a socket *name* with one is refused.
_SOCAT_UNSAFE = re.compile(r"[\s,:!\"'\\(){}\[\]]")


class SshShell(BufferedShell):
    """An interactive pty shell on an SSH channel."""

    def __init__(self, session: SshSession, timeout: float = 15.0, init: str = "") -> None:
        super().__init__(session.name)
        self._session = session
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        with session._errors("open a shell"):
            self._chan = session._start(_SHELL_WRAPPER, timeout, Pty())
            self._chan.sendall(b"\n")  # the go line (its echo is dropped by sync)
        try:
            self.sync(timeout, init)
        except Exception:
            self.close()
            raise

    def expect(self, pattern: str, timeout: float) -> str:
        try:
            return super().expect(pattern, timeout)
        except CommandTimeout as exc:
            hint = self._session.fault(wait=0.0)
            if not hint:
                raise
            raise CommandTimeout(exc.command, exc.expected, exc.timeout, exc.output,
                                 hint) from None

    def _write(self, data: bytes) -> None:
        with self._session._errors("write to the shell"):
            self._chan.sendall(data)

    def _recv(self, wait: float) -> str | None:
        if not self._chan.recv_ready():
            if self._chan.closed or self._chan.eof_received:
                return None
            ready, _, _ = select.select([self._chan], [], [], wait)
            if not ready:
                return ""
        with self._session._errors("read from the shell"):
            data = self._chan.recv(65536)
        return self._decoder.decode(data) if data else None

    def _on_eof(self) -> SessionError:
        """The channel ended: the shell exited (it sent an exit status) or the connection
        is gone (paramiko closes every channel when the transport dies)."""
        # Only a received exit status proves the shell exited: paramiko also sets
        # status_event (exit_status_ready()) on every channel of a dying transport, and it
        # does so just before it marks the transport inactive.
        if self._chan.exit_status == -1:
            deadline = time.monotonic() + 2.0
            while self._session._transport.is_active() and time.monotonic() < deadline:
                time.sleep(0.02)
        self._session._transport_ok()
        return super()._on_eof()

    def _close(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.close()


class SshPiped(PipedProcess):
    """A process in an exec channel: the channel is its stdin and stdout; a dropped link
    closes the channel, which the process on the host reads as EOF."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan

    def lines(self) -> Iterator[str]:
        buf = b""
        while True:
            try:
                data = self._chan.recv(4096)
            except Exception:  # paramiko raises several unrelated types on a dead link
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode(errors="replace")
        if buf:
            yield buf.decode(errors="replace")

    def write(self, data: bytes) -> None:
        with contextlib.suppress(Exception):
            self._chan.sendall(data)

    def close_stdin(self) -> None:
        with contextlib.suppress(Exception):
            self._chan.shutdown_write()

    def exit_status(self) -> int | None:
        # paramiko sets -1 on every channel of a dropped connection: no status came
        if not self._chan.status_event.wait(2.0):
            return None
        status = self._chan.exit_status
        return None if status == -1 else int(status)


def _no_delay(sock: object) -> None:
    """TCP_NODELAY on a TCP socket, before the handshake: the client sends some messages
    back to back (NEWKEYS then SERVICE_REQUEST, a channel open then its requests), and
    Nagle holds the second until the first is ACKed, up to 40 ms per stall (delayed ACK)."""
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SshSession(Session):
    """A host reached over SSH with key or password authentication.

    Host keys are checked against ``known_hosts`` (default ``~/.ssh/known_hosts``); with
    ``host_key_check=False`` unknown keys are accepted (one warning per host), which is meant
    for throwaway guests only. The password is never logged or put into an error message.
    """

    def __init__(self, host: str, port: int = 22, user: str = "root", *,
                 password: str | None = None, key_filename: str | None = None,
                 known_hosts: str | None = None, host_key_check: bool = True,
                 sock: socket.socket | None = None, timeout: float = 15.0,
                 name: str | None = None, _guest: bool = False) -> None:
        self.host, self.port, self.user = host, port, user
        self.name = name or f"{user}@{host}:{port}"
        #: says why the host cannot answer (``hint(wait_seconds)``), e.g. that a guest's
        #: qemu died; appended to "connection lost" and timeout errors
        self.fault_hint: Callable[[float], str | None] | None = None
        self._closed = False
        self._relays: list[Relay] = []
        self._shells: list[SshShell] = []
        self._sftp_handle: paramiko.SFTPClient | None = None
        self._sftp_missing = False
        self._sftp_lock = threading.Lock()  # VM boot threads share a DUT's session
        self._has_socat: bool | None = None
        self._client = paramiko.SSHClient()
        where = known_hosts or "~/.ssh/known_hosts"
        if host_key_check:
            try:
                if known_hosts:
                    self._client.load_host_keys(known_hosts)
                else:
                    self._client.load_system_host_keys()
            except OSError as exc:
                raise SessionError(f"{self.name}: cannot read known_hosts {where}: {exc}")
            self._client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            with _AUTO_ADD_LOCK:
                # a guest's keys are made at boot and it is reached only through our own
                # channel: nothing to check, nothing to warn about
                if not _guest and self.name not in _AUTO_ADD_WARNED:
                    _AUTO_ADD_WARNED.add(self.name)
                    log.warning("%s: host key not checked (host_key_check = no)", self.name)
            self._client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=timeout)
            _no_delay(sock)
            self._client.connect(
                hostname=host, port=port, username=user, password=password,
                key_filename=key_filename, sock=sock, timeout=timeout, banner_timeout=timeout,
                auth_timeout=timeout, allow_agent=False,
                look_for_keys=password is None and key_filename is None,
            )
        except paramiko.BadHostKeyException as exc:
            self._client.close()
            raise SessionError(
                f"{self.name}: host key mismatch: the server offered a {exc.key.get_name()} "
                f"key that differs from the one in {where}; refusing to connect (possible "
                "man-in-the-middle, or the host was reinstalled: fix the known_hosts entry)"
            ) from None
        except paramiko.AuthenticationException:
            self._client.close()
            how = "password" if password is not None else f"key {key_filename or '(default)'}"
            raise GuestAuthError(f"{self.name}: authentication failed ({how})") from None
        except paramiko.SSHException as exc:
            self._client.close()
            if "known_hosts" in str(exc):
                raise SessionError(f"{self.name}: host key not found in {where}; add it "
                                   "(ssh-keyscan) or set host_key_check = no") from None
            raise SessionError(f"{self.name}: SSH connection failed: {exc}") from None
        except (OSError, EOFError) as exc:
            self._client.close()
            raise SessionError(f"{self.name}: cannot connect: {exc}") from None
        finally:
            if self._client.get_transport() is None and isinstance(sock, socket.socket):
                sock.close()  # connect failed before paramiko took the socket over
        transport = self._client.get_transport()
        assert transport is not None
        self._transport = transport
        transport.set_keepalive(15)

    @classmethod
    def for_guest(cls, *, name: str, sock: socket.socket, user: str,
                  password: str | None = None, key_filename: str | None = None,
                  timeout: float = 15.0) -> SshSession:
        """A session to a guest through ``sock`` (e.g. the DUT's ``open_tcp`` to the
        guest's SSH host forward), host key not checked. GuestAuthError if the login is
        refused; SessionError for anything else (not up yet...)."""
        try:
            return cls("127.0.0.1", 22, user, password=password, key_filename=key_filename,
                       host_key_check=False, sock=sock, timeout=timeout, name=name,
                       _guest=True)
        except BaseException:
            sock.close()
            raise

    # -- plumbing ----------------------------------------------------------------------

    @property
    def transport(self) -> paramiko.Transport:
        """The live SSH transport (for extra channels: the qemu supervisor, a tty bridge);
        SessionError when the connection is closed or lost."""
        return self._transport_ok()

    def fault(self, wait: float = 1.5) -> str | None:
        """What :attr:`fault_hint` says about the host (e.g. "qemu died: ..."), or None."""
        if self.fault_hint is None:
            return None
        try:
            return self.fault_hint(wait)
        except Exception as exc:  # a hint must never hide the error it explains
            log.debug("%s: fault hint failed: %s", self.name, exc)
            return None

    def _lost(self, what: str = "") -> SessionError:
        """The error for a dropped connection, with the cause when the hint knows it."""
        during = f" (while trying to {what})" if what else ""
        hint = self.fault()
        return SessionError(f"connection to DUT {self.name} lost{during}"
                            + (f": {hint}" if hint else ""))

    def _transport_ok(self) -> paramiko.Transport:
        if self._closed:
            raise SessionError(f"{self.name}: the session is closed")
        if not self._transport.is_active():
            raise self._lost()
        return self._transport

    def _start(self, command: str | None, timeout: float,
               pty: Pty | None = None) -> paramiko.Channel:
        """A new session channel running ``command`` (see :func:`start_channel`)."""
        return start_channel(self._transport_ok(), command, name=self.name, timeout=timeout,
                             pty=pty)

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn paramiko/socket errors into SessionError ('connection lost' if it is)."""
        try:
            yield
        except SessionError:
            raise
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if not self._closed and not (isinstance(exc, OSError) and exc.errno):
                # paramiko closes the channels of a dropped connection a moment before it
                # marks the transport inactive; give it that moment (errno errors are SFTP's)
                self._transport.join(0.5)
            if self._closed or not self._transport.is_active():
                raise self._lost(what) from None
            hint = self.fault(wait=0.0)
            raise SessionError(f"{self.name}: cannot {what}: {exc}"
                               + (f" ({hint})" if hint else "")) from None

    def _exec(self, argv: Sequence[str], timeout: float | None,
              input: bytes | None = None) -> tuple[int, bytes, bytes]:
        """Run argv; (status, stdout, stderr) as bytes."""
        command = shlex.join(["sh", "-c", _RUN_WRAPPER, "sh", *argv])
        deadline = None if timeout is None else time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        with self._errors(f"run {list(argv)!r}"):
            chan = self._start(command, 30.0)
            try:
                chan.sendall(b"\n" + (input or b""))
                chan.shutdown_write()
                pause = 0.0005
                while True:
                    busy = False
                    while chan.recv_ready():
                        out += chan.recv(65536)
                        busy = True
                    while chan.recv_stderr_ready():
                        err += chan.recv_stderr(65536)
                        busy = True
                    drained = not (chan.recv_ready() or chan.recv_stderr_ready())
                    if drained and (chan.closed or (chan.exit_status_ready()
                                                    and chan.eof_received)):
                        break
                    if deadline is not None and time.monotonic() > deadline:
                        hint = self.fault(wait=0.0)
                        if not hint:  # a host that cannot answer cannot kill either
                            self._kill_timed_out(bytes(err), argv)
                        raise SessionError(f"{self.name}: {list(argv)!r} timed out after "
                                           f"{timeout} s" + (f" ({hint})" if hint else ""))
                    if not busy:
                        time.sleep(pause)
                        pause = min(pause * 2, 0.02)
                    else:
                        pause = 0.0005
                status = chan.recv_exit_status()
            finally:
                chan.close()
        if status == -1:
            self._transport_ok()
            raise SessionError(f"{self.name}: {list(argv)!r} ended without an exit status")
        pid_line, _, rest = bytes(err).partition(b"\n")
        return status, bytes(out), rest if pid_line.strip().isdigit() else bytes(err)

    def _kill_timed_out(self, err: bytes, argv: Sequence[str]) -> None:
        pid_text = err.partition(b"\n")[0].strip()
        if pid_text.isdigit() and int(pid_text) > 1:
            with contextlib.suppress(SessionError):
                self.kill_tree(int(pid_text), signal.SIGKILL)
        else:
            log.warning("%s: cannot kill timed out %r (PID unknown)", self.name, list(argv))

    # -- Session -------------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: bytes | None = None, env: Mapping[str, str] | None = None) -> CommandResult:
        argv = [str(a) for a in argv]
        if env and not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k) for k in env):
            raise SessionError(f"{self.name}: invalid environment variable name in {list(env)}")
        full = ["env", "--", *(f"{k}={v}" for k, v in env.items()), *argv] if env else argv
        status, out, err = self._exec(full, timeout, input)
        result = CommandResult(tuple(argv), status, out.decode(errors="replace"),
                               err.decode(errors="replace"))
        return raise_on_failure(self.name, result) if check else result

    def _relay(self, chan: paramiko.Channel, what: str) -> socket.socket:
        self._relays = [r for r in self._relays if r.alive or _release(r)]
        relay = Relay(chan, f"{self.name} {what}")
        self._relays.append(relay)
        return relay.socket

    def open_tcp(self, host: str, port: int, timeout: float = 10.0) -> socket.socket:
        transport = self._transport_ok()
        try:
            chan = transport.open_channel("direct-tcpip", (host, int(port)), ("127.0.0.1", 0),
                                          timeout=timeout)
        except paramiko.ChannelException as exc:
            raise SessionError(f"{self.name}: cannot connect to {host}:{port} from that "
                               f"host: {exc.text}") from None
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._transport_ok()
            raise SessionError(f"{self.name}: cannot open a channel to {host}:{port}: "
                               f"{exc}") from None
        return self._relay(chan, f"tcp {host}:{port}")

    def open_unix(self, path: str, timeout: float = 10.0) -> socket.socket:
        # socat parses its address (",", ":", "!", quotes, spaces...): it gets only the
        # socket's file name, and the shell changes into its directory, which may hold any
        # character (a DUT work dir such as "/tmp/my dir,1")
        directory, _, base = path.rpartition("/")
        if not base or _SOCAT_UNSAFE.search(base):
            raise SessionError(f"{self.name}: unix socket name {base!r} has characters socat "
                               "cannot take in an address")
        if self._has_socat is None:
            self._has_socat = self.run(["sh", "-c", "command -v socat"], timeout=30.0).ok
        if not self._has_socat:
            raise SessionError(f"{self.name}: socat is not installed on that host; it is "
                               "needed to reach unix sockets (QMP, QGA) there over SSH")
        command = shlex.join(["sh", "-c", _RUN_WRAPPER, "sh", "sh", "-c", _SOCAT_IN_DIR, "sh",
                              directory or "/", base])
        err = b""
        with self._errors(f"connect to unix socket {path}"):
            chan = self._start(command, timeout)
            chan.sendall(b"\n")  # the go line
            deadline = time.monotonic() + timeout
            while b"starting data transfer loop" not in err:
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready() or time.monotonic() > deadline:
                    chan.close()
                    lines = err.decode(errors="replace").strip().splitlines()
                    reason = lines[-1] if lines else "timed out"
                    raise SessionError(f"{self.name}: cannot connect to unix socket {path}: "
                                       f"{reason}")
                else:
                    time.sleep(0.002)
        return self._relay(chan, f"unix {path}")

    @contextlib.contextmanager
    def _sftp(self) -> Iterator[paramiko.SFTPClient | None]:
        """The SFTP client (None without an SFTP server), held for one operation: paramiko's
        client drops the responses of a thread's request that another thread reads."""
        with self._sftp_lock:
            yield self._sftp_client()

    def _sftp_client(self) -> paramiko.SFTPClient | None:
        if self._sftp_handle is None and not self._sftp_missing:
            chan = None
            try:
                chan = start_channel(self._transport_ok(), None, name=self.name,
                                     timeout=30.0, subsystem="sftp")
                # a stalled DUT must not block a file operation until TCP gives up
                chan.settimeout(SFTP_TIMEOUT_S)
                self._sftp_handle = paramiko.SFTPClient(chan)
            except (SessionError, paramiko.SSHException, EOFError, OSError):
                self._transport_ok()
                self._sftp_missing = True  # e.g. dropbear without sftp-server: use cat
            if chan is not None and self._sftp_handle is None:
                # Let the server reap the probe's process (it reports the exit status) before
                # the next channel opens: dropbear 2022.83 closes a channel that is new when
                # a child exits (session/channel.py).
                chan.status_event.wait(5.0)
                chan.close()
        return self._sftp_handle

    def read_file(self, path: str) -> bytes:
        with self._sftp() as sftp, self._errors(f"read {path}"):
            if sftp is not None:
                with sftp.open(path, "rb") as f:
                    return bytes(f.read())
        with self._errors(f"read {path}"):
            status, out, err = self._exec(["cat", "--", path], 300.0)
        if status != 0:
            raise SessionError(f"{self.name}: cannot read {path}: {err.decode().strip()}")
        return out

    def write_file(self, path: str, data: bytes, mode: int = 0o600) -> None:
        with self._sftp() as sftp, self._errors(f"write {path}"):
            if sftp is not None:
                with sftp.open(path, "wb") as f:
                    sftp.chmod(path, mode)
                    f.write(data)
                return
        with self._errors(f"write {path}"):
            status, _, err = self._exec(
                ["sh", "-c", 'umask 077 && cat >"$1" && chmod "$2" "$1"', "sh", path,
                 f"{mode:o}"], 300.0, data)
        if status != 0:
            raise SessionError(f"{self.name}: cannot write {path}: {err.decode().strip()}")

    def put(self, local_path: str, remote_path: str) -> None:
        with self._sftp() as sftp, self._errors(f"copy {local_path} to {remote_path}"):
            if sftp is not None:
                sftp.put(local_path, remote_path)
                return
        with open(local_path, "rb") as f:
            self.write_file(remote_path, f.read(), 0o644)

    def get(self, remote_path: str, local_path: str) -> None:
        with self._sftp() as sftp, self._errors(f"copy {remote_path} to {local_path}"):
            if sftp is not None:
                sftp.get(remote_path, local_path)
                return
        data = self.read_file(remote_path)
        with open(local_path, "wb") as f:
            f.write(data)

    def start_piped(self, argv: Sequence[str]) -> PipedProcess:
        try:
            chan = start_channel(self._transport_ok(), shlex.join([str(a) for a in argv]),
                                 name=self.name, timeout=PIPED_OPEN_TIMEOUT_S)
        except SessionError:
            raise
        except Exception as exc:  # paramiko raises several unrelated types here
            self._transport_ok()
            raise SessionError(f"{self.name}: cannot start {list(argv)[:3]!r}...: {exc}") \
                from None
        return SshPiped(chan)

    def shell(self, init: str = "") -> Shell:
        shell = SshShell(self, init=init)
        self._shells.append(shell)
        return shell

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for relay in self._relays:
            relay.close()
        for shell in self._shells:
            shell.close()
        self._relays, self._shells = [], []
        if self._sftp_handle is not None:
            with contextlib.suppress(Exception):
                self._sftp_handle.close()
        with contextlib.suppress(Exception):
            self._client.close()


def _release(relay: Relay) -> bool:
    """Free a finished relay's thread resources; the caller keeps its socket."""
    relay.close(close_socket=False)
    return False
