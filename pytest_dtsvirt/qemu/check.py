"""Does this host's qemu accept a VM's command line? (``dtsvirt check``)

Starts qemu with the generated argv plus ``-S`` (no guest code runs) in a private run dir,
asks QMP ``query-status``, sends ``quit``, waits for the exit and removes everything. qemu is
always ended by PID. Devices whose backend must exist on the host (vhost-user sockets served
by a backend, host PCI devices, tap/bridge networking, vhost-cuse taps) cannot be checked
this way; :func:`not_checkable` names them and :func:`check_spec` refuses them.

vhost-user in particular: qemu connects to the socket and then blocks in the vhost-user
handshake until a real backend answers, so a dummy listening socket does not help.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_dtsvirt.config.model import Passthrough, VhostCuse, VhostUser, VmSpec
from pytest_dtsvirt.errors import NotCheckable, QmpError
from pytest_dtsvirt.qemu.argv import build_argv
from pytest_dtsvirt.qemu.placement import Accel, Placement, probe_hugepage_dir
from pytest_dtsvirt.qemu.qmp import Qmp

STATUS_OK = ("prelaunch", "paused", "inmigrate")


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``ok``; ``status`` from QMP; ``message`` (qemu's error)."""

    ok: bool
    argv: tuple[str, ...]
    status: str = ""
    message: str = ""
    seconds: float = 0.0


def not_checkable(spec: VmSpec) -> list[str]:
    """Why ``spec`` cannot be checked with a plain ``-S`` start (empty: it can)."""
    out: list[str] = []
    for d in spec.devices:
        if isinstance(d, VhostUser):
            out.append(f"vhost-user device {d.path}: needs a running vhost-user backend")
        elif isinstance(d, Passthrough):
            out.append(f"passthrough device {d.host}: needs a host PCI device bound to vfio")
        elif isinstance(d, VhostCuse):
            out.append("vhost-cuse device: needs root to create the tap with vhost=on")
    for pair in spec.nets:
        if pair.backend.kind in ("tap", "bridge"):
            out.append(f"{pair.backend.kind} backend (opt_vlan={pair.backend.vlan}): needs a "
                       "host bridge and root or qemu-bridge-helper")
    return out


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def resolve_qemu(paths: tuple[str, ...]) -> str:
    """The first of ``paths`` that exists (PATH lookup for bare names); else the first."""
    for p in paths:
        found = shutil.which(p)
        if found:
            return found
    return paths[0]


def local_placement(spec: VmSpec, accel: Accel, run_dir: str, *,
                    hostfwd_port: int | None = None, vnc_display: int | None = None
                    ) -> Placement:
    """Where ``spec`` runs on this host: a free SSH forward port unless given, the first
    qemu of ``spec.qemu_paths`` that exists, the hugetlbfs mount when hugepages are asked."""
    hugepage_dir = (probe_hugepage_dir(lambda p: Path(p).read_text(encoding="utf-8"))
                    if spec.mem.hugepage else None)
    return Placement(run_dir=run_dir, accel=accel,
                     hostfwd_port=free_port() if hostfwd_port is None else hostfwd_port,
                     qemu=resolve_qemu(spec.qemu_paths), vnc_display=vnc_display,
                     hugepage_dir=hugepage_dir)


def _qmp_status(path: str, timeout: float) -> str:
    with Qmp.open(path, timeout) as qmp:
        status = qmp.query_status()
        with contextlib.suppress(QmpError):  # quit may race with the connection closing
            qmp.quit()
        return status


def _wait_socket(proc: subprocess.Popen[bytes], path: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def check_spec(spec: VmSpec, accel: Accel = "tcg", *, timeout: float = 10.0) -> CheckResult:
    """Start qemu paused with ``spec``'s argv on this host, confirm through QMP, quit.

    Raises :class:`NotCheckable` for specs needing host backends, ConfigError when the
    placement cannot serve the spec (e.g. hugepages without hugetlbfs)."""
    reasons = not_checkable(spec)
    if reasons:
        raise NotCheckable(reasons)
    start = time.monotonic()
    run_dir = tempfile.mkdtemp(prefix="dtsvirt-check-")  # mode 0700
    proc: subprocess.Popen[bytes] | None = None
    try:
        vnc = None
        if spec.vnc is not None and spec.vnc.display is None:
            vnc = free_port() % 1000 + 5000  # a display of no one's, above the usual range
        placement = local_placement(spec, accel, run_dir, vnc_display=vnc)
        argv = [*build_argv(spec, placement), "-S"]
        with open(placement.qemu_log, "wb") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True)
        deadline = time.monotonic() + timeout
        status = ""
        if _wait_socket(proc, placement.qmp_socket, deadline):
            # a client that connects while qemu is still initialising may see EOF: retry
            while True:
                try:
                    status = _qmp_status(placement.qmp_socket, timeout)
                    break
                except QmpError as exc:
                    status = f"QMP failed: {exc!r}"
                    if proc.poll() is not None or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.5, deadline - time.monotonic()))
        ok = status in STATUS_OK
        message = ""
        if not ok:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            message = Path(placement.qemu_log).read_text(errors="replace").strip()
            message = message or status or f"qemu exited with status {proc.returncode}"
        return CheckResult(ok=ok, argv=tuple(argv), status=status, message=message,
                           seconds=time.monotonic() - start)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


__all__ = ["CheckResult", "NotCheckable", "check_spec", "free_port", "not_checkable",
           "resolve_qemu"]
