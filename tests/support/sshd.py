"""A real OpenSSH server for tests, on a loopback address.

``start_sshd(tmp_path)`` generates a host key, a client key, a config and a known_hosts
file in a private directory, starts ``/usr/sbin/sshd -D -e -f <cfg>`` (key-only login for
the current user, root included), waits until it accepts connections and returns an
:class:`SshdHandle`. ``handle.stop()`` ends the server and every per-connection child by
PID. Importable from any test module (``from support.sshd import start_sshd``).
"""

from __future__ import annotations

import contextlib
import ctypes
import getpass
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"


@dataclass
class SshdHandle:
    """A running sshd: where it listens and how to log in."""

    host: str
    port: int
    user: str
    key_path: str
    known_hosts: str
    pid: int
    log_path: str
    directory: str
    _proc: subprocess.Popen[bytes] = field(repr=False)

    def children(self, sshd_only: bool = False) -> list[int]:
        """PIDs of every descendant of the listener (per-connection sshd and sessions);
        with ``sshd_only`` just the sshd processes that hold the connections."""
        parents: dict[int, int] = {}
        names: dict[int, str] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                text = stat.read_text()
                pid = int(text.split(" ", 1)[0])
                parents[pid] = int(text.rpartition(") ")[2].split()[1])
                names[pid] = text[text.index("(") + 1: text.rindex(")")]
        found: list[int] = []
        frontier = {self.pid}
        while frontier:
            new = {pid for pid, ppid in parents.items() if ppid in frontier} - set(found)
            found.extend(sorted(new))
            frontier = new
        return [p for p in found if names.get(p) == "sshd"] if sshd_only else found

    def kill_connections(self) -> list[int]:
        """Drop every connection like a network failure would: SIGKILL the per-connection
        sshd processes (not the user's processes); return their PIDs."""
        pids = self.children(sshd_only=True)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return pids

    def log(self) -> str:
        """What sshd wrote to its log so far."""
        with contextlib.suppress(OSError):
            return Path(self.log_path).read_text(errors="replace")
        return ""

    def stop(self) -> None:
        """End the listener and its children by PID; idempotent."""
        self.kill_connections()
        children = self.children()
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait(timeout=10)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dtsvirt-test",
                    "-f", str(path)], check=True)


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL or a
    timeout, so an interrupted run leaves no sshd listening."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def start_sshd(tmp_path: Path, address: str = "127.0.0.2", port: int | None = None,
               password_auth: bool = False, timeout: float = 10.0,
               extra_config: Sequence[str] = (), max_sessions: int = 50) -> SshdHandle:
    """Start sshd on ``address`` (a loopback address) and a free port; see module doc.
    ``extra_config`` lines are appended to sshd_config (e.g. ``SetEnv PATH=...``);
    ``max_sessions=10`` is OpenSSH's own default."""
    d = Path(tmp_path) / f"sshd-{address}"
    d.mkdir(mode=0o700, parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation directory
    host_key, client_key = d / "host_key", d / "client_key"
    if not host_key.exists():
        _keygen(host_key)
        _keygen(client_key)
    (d / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    user = getpass.getuser()
    last_error = ""
    for _ in range(5):
        use_port = port or _free_port(address)
        cfg = d / "sshd_config"
        cfg.write_text("\n".join([
            f"ListenAddress {address}:{use_port}",
            f"HostKey {host_key}",
            f"PidFile {d / 'sshd.pid'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            "PermitRootLogin yes" if password_auth else "PermitRootLogin prohibit-password",
            f"PasswordAuthentication {'yes' if password_auth else 'no'}",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication yes",
            "StrictModes no",
            "UsePAM no",
            "AllowTcpForwarding yes",
            "AllowStreamLocalForwarding yes",
            "X11Forwarding no",
            "PrintMotd no",
            f"MaxSessions {max_sessions}",
            "MaxStartups 50",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            *extra_config,
            "",
        ]))
        (d / "known_hosts").write_text(
            f"[{address}]:{use_port} {(d / 'host_key.pub').read_text().split(' ')[0]} "
            f"{(d / 'host_key.pub').read_text().split(' ')[1]}\n")
        log_path = d / "sshd.log"
        log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=log_file, start_new_session=True,
                                preexec_fn=_die_with_parent)
        log_file.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection((address, use_port), 1):
                return SshdHandle(address, use_port, user, str(client_key),
                                  str(d / "known_hosts"), proc.pid, str(log_path), str(d),
                                  proc)
            time.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        last_error = log_path.read_text(errors="replace")[-2000:]
        if port:
            break
    raise RuntimeError(f"sshd did not start on {address}: {last_error}")
