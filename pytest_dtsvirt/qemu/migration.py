"""QMP migration, shared by snapshots (save to / restore from a file) and live migration.

Pure helpers build the URIs and the ``-incoming`` argv part; the QMP helpers take anything
with an ``execute(name, args, timeout=...)`` method (:class:`~pytest_dtsvirt.qemu.qmp.Qmp`).

::

    stop(qmp)                                      # pause the source
    migrate(qmp, save_uri("/run/vm.snap"), 60)     # write the stream, wait for "completed"
    # new qemu: same argv + incoming_argv(restore_uri("/run/vm.snap")), or
    # incoming_argv(fd_uri(4)) with the file open as its fd 4 (runtime/supervisor.py)
    wait_incoming(qmp2, 30)                        # stream loaded, guest paused
    cont(qmp2)

A snapshot taken of a paused guest restores paused (qemu keeps the source's run state), so
the caller may pin vCPUs or set anything up before :func:`cont` -- unless the source ran
with ``-global migration.store-global-state=off`` (snapshots do, see ``qemu/fresh.py``):
then the target runs as soon as it is loaded, or stays paused under ``-S`` until a
``cont``, which qemu also accepts during the load.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping
from typing import Any, Protocol

from pytest_dtsvirt.errors import MigrationError, QmpError

#: ``query-migrate`` states that end a migration
DONE_STATES = frozenset({"completed", "failed", "cancelled"})
#: how often ``query-migrate`` is polled
POLL_S = 0.05


class QmpLike(Protocol):
    """What the helpers need of a QMP client."""

    def execute(self, name: str, args: Mapping[str, object] | None = None,
                timeout: float | None = None) -> Any: ...


# -- pure: URIs and argv -------------------------------------------------------------------

def save_uri(path: str) -> str:
    """``exec:cat > PATH``: qemu writes the stream to ``path`` (quoted for qemu's sh -c)."""
    return f"exec:cat > {shlex.quote(path)}"


def restore_uri(path: str) -> str:
    """``exec:cat PATH``: qemu reads the stream from ``path``."""
    return f"exec:cat {shlex.quote(path)}"


def fd_uri(fd: int) -> str:
    """``fd:N``: qemu reads the stream from its inherited file descriptor ``fd`` (a
    snapshot file opened for it: no ``cat`` process, no pipe)."""
    if fd < 3:
        raise ValueError(f"fd_uri: {fd} is a standard stream")
    return f"fd:{fd}"


def tcp_uri(host: str, port: int) -> str:
    """``tcp:HOST:PORT`` (IPv6 literals bracketed)."""
    if not 0 <= port <= 65535:
        raise ValueError(f"tcp_uri: port {port} is not in 0..65535")
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"


def incoming_argv(uri: str) -> list[str]:
    """The argv part that makes a new qemu wait for the stream from ``uri``."""
    if not uri or uri.startswith("-"):
        raise ValueError(f"incoming_argv: {uri!r} is not a migration URI")
    return ["-incoming", uri]


def strip_incoming(argv: list[str]) -> list[str]:
    """``argv`` without any ``-incoming URI`` pair."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "-incoming":
            skip = True
            continue
        out.append(arg)
    return out


def failure_text(info: Mapping[str, Any]) -> str:
    """The words for a ``query-migrate`` reply that did not complete."""
    status = str(info.get("status", "?"))
    desc = str(info.get("error-desc", "")).strip()
    return f"migration {status}" + (f": {desc}" if desc else " (qemu gave no reason)")


# -- QMP -----------------------------------------------------------------------------------

def stop(qmp: QmpLike, timeout: float | None = None) -> None:
    """``stop``: pause the guest's vCPUs."""
    qmp.execute("stop", timeout=timeout)


def cont(qmp: QmpLike, timeout: float | None = None) -> None:
    """``cont``: run the guest (after ``-S`` or a restore of a paused guest)."""
    qmp.execute("cont", timeout=timeout)


def set_capabilities(qmp: QmpLike, caps: Mapping[str, bool]) -> None:
    """``migrate-set-capabilities`` for each ``{name: state}`` (e.g. ``events``)."""
    if caps:
        qmp.execute("migrate-set-capabilities", {"capabilities": [
            {"capability": name, "state": bool(state)} for name, state in caps.items()]})


def set_parameters(qmp: QmpLike, params: Mapping[str, object]) -> None:
    """``migrate-set-parameters`` (e.g. ``{"max-bandwidth": 1 << 30}``)."""
    if params:
        qmp.execute("migrate-set-parameters", dict(params))


def start(qmp: QmpLike, uri: str) -> None:
    """``migrate`` to ``uri``; returns at once (the stream runs in qemu's background)."""
    try:
        qmp.execute("migrate", {"uri": uri})
    except QmpError as exc:
        raise MigrationError(f"migrate to {uri}: {exc.desc or exc}", "", exc.desc) from exc


def query(qmp: QmpLike) -> dict[str, Any]:
    """The ``query-migrate`` reply (``{}`` before any migration)."""
    return dict(qmp.execute("query-migrate") or {})


def wait(qmp: QmpLike, timeout: float, what: str = "migration",
         poll: float = POLL_S) -> dict[str, Any]:
    """Poll ``query-migrate`` until it completes; its last reply. MigrationError when it
    failed or was cancelled (with qemu's ``error-desc``) or is not done within ``timeout``."""
    deadline = time.monotonic() + timeout
    info: dict[str, Any] = {}
    while True:
        info = query(qmp)
        status = str(info.get("status", ""))
        if status == "completed":
            return info
        if status in DONE_STATES:
            raise MigrationError(f"{what}: {failure_text(info)}", status,
                                 str(info.get("error-desc", "")))
        if time.monotonic() >= deadline:
            raise MigrationError(f"{what}: not completed within {timeout:g} s "
                                 f"(status {status or 'none'})", status)
        time.sleep(poll)


def migrate(qmp: QmpLike, uri: str, timeout: float) -> dict[str, Any]:
    """:func:`start` then :func:`wait`; the final ``query-migrate`` reply."""
    start(qmp, uri)
    return wait(qmp, timeout, f"migration to {uri}")


class QmpEvents(QmpLike, Protocol):
    """A QMP client that also waits for events (:class:`~pytest_dtsvirt.qemu.qmp.Qmp`)."""

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]: ...


def wait_running(qmp: QmpEvents, timeout: float) -> str:
    """On a qemu started with ``-incoming`` from a source without a saved run state
    (``-global migration.store-global-state=off``): wait until the guest runs, i.e. for
    qemu's ``RESUME`` event (nothing is polled). qemu starts the guest when the stream is
    loaded, unless ``-S`` holds it (then a ``cont``, also during the load, starts it). A
    stream with a saved "paused" state loads paused: it is continued here. Returns the run
    state found first (``inmigrate``, ``running`` or ``paused``). MigrationError for any
    other state or when the event does not come within ``timeout`` (a stream qemu cannot
    load makes it exit)."""
    try:
        status = str(qmp.execute("query-status")["status"])
        if status == "paused":
            cont(qmp)
        elif status == "inmigrate":
            qmp.wait_event("RESUME", timeout)
        elif status != "running":
            raise MigrationError(f"incoming migration: run state {status}", status)
    except QmpError as exc:
        raise MigrationError(f"incoming migration: the guest did not start running ({exc}); "
                             "qemu rejects a stream it cannot load by exiting") from exc
    return status


def wait_incoming(qmp: QmpLike, timeout: float, poll: float = POLL_S) -> str:
    """On a qemu started with ``-incoming``: wait until the stream is loaded; the run state
    then (``paused`` for a snapshot of a paused guest, else ``running``). MigrationError when
    the load failed (qemu reports it, or exits) or took longer than ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            status = str(qmp.execute("query-status")["status"])
            info = query(qmp)
        except QmpError as exc:
            raise MigrationError(f"incoming migration: qemu stopped answering ({exc}); "
                                 "it rejects a stream it cannot load by exiting") from exc
        mig = str(info.get("status", ""))
        if mig in ("failed", "cancelled"):
            raise MigrationError(f"incoming {failure_text(info)}", mig,
                                 str(info.get("error-desc", "")))
        if status != "inmigrate" and mig in ("", "completed"):
            return status
        if time.monotonic() >= deadline:
            raise MigrationError(f"incoming migration: not loaded within {timeout:g} s "
                                 f"(run state {status}, migration {mig or 'none'})", mig)
        time.sleep(poll)
