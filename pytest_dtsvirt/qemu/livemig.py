"""Live migration on one DUT, the legacy way (mixed into ``QEMUKvm``).

A *target* VM (the legacy "backup") has ``migration = enable=yes,port=P;`` in its cfg
section and the same devices as the source; its qemu waits with ``-incoming
tcp:127.0.0.1:P`` (the DUT's loopback only: the stream is not authenticated)::

    backup.start_incoming()                  # qemu up, waiting for the stream
    host_vm.start_migration("127.0.0.1", backup.migrate_port)
    host_vm.wait_migration_done()            # MigrationError with qemu's reason
    vm_dut = backup.migrated_start()         # agent, SSH: the migrated guest

``start_incoming`` runs the target's normal boot in a thread that stops after QMP and
waits there for the stream (``QEMUKvm._boot`` calls :meth:`LiveMigration._await_incoming`);
once the guest arrives, the same boot goes on (agent, login, SSH) with a fresh budget, and
:meth:`LiveMigration.migrated_start` returns its guest DUT or raises what failed. A failed
boot of the target stops it as any failed start does. After a completed migration the
source's guest is paused for good: its guest session and agent are closed without the
guest courtesy steps, so the source's teardown is a quick QMP ``quit`` and independent of
the target's. The QMP protocol itself is :mod:`pytest_dtsvirt.qemu.migration`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from pytest_dtsvirt.errors import ConfigError, Location, MigrationError, VmError
from pytest_dtsvirt.qemu import migration

if TYPE_CHECKING:
    from pytest_dtsvirt.qemu.qga import GuestAgent
    from pytest_dtsvirt.qemu.qmp import Qmp
    from pytest_dtsvirt.runtime.ladder import Ladder
    from pytest_dtsvirt.runtime.supervisor import Supervised
    from pytest_dtsvirt.session.dut import VmDut

log = logging.getLogger("pytest_dtsvirt")

#: how long a target waits for the stream to begin and load (legacy: 180 s)
INCOMING_WAIT_S = 600.0
#: the legacy wait_migration_done budget
MIGRATION_DONE_S = 180.0
#: bytes/s: qemu 7.2's default (32 MiB/s) makes a 512 MB guest take 16 s on loopback
MAX_BANDWIDTH = 4 << 30
#: how long start_incoming waits for the target's qemu to listen
LISTEN_WAIT_S = 300.0


class LiveMigration:
    """``start_incoming``/``migrated_start`` (target), ``start_migration``/
    ``wait_migration_done`` (source)."""

    vm_name: str
    _vm_dut: VmDut | None
    _agent: GuestAgent | None
    _qmp: Qmp | None
    _proc: Supervised | None

    #: the target's listening port (legacy name), known once start_incoming returned
    migrate_port: int | None = None
    #: True once this (source) VM's migration completed
    migration_done: bool = False
    _incoming: threading.Thread | None = None
    _incoming_error: BaseException | None = None
    _listening: threading.Event | None = None
    _loaded: threading.Event | None = None  # target: the stream loaded, or failed to
    _load_error: str | None = None
    _target: LiveMigration | None = None  # source: the target of this process it feeds

    def start(self) -> VmDut:
        raise NotImplementedError

    def _qemu_exit_reason(self) -> str | None:
        raise NotImplementedError

    @property
    def qmp(self) -> Qmp:
        raise NotImplementedError

    # -- target ------------------------------------------------------------------------------
    def start_incoming(self, timeout: float = LISTEN_WAIT_S) -> None:
        """Start qemu waiting for an incoming migration (the cfg's ``migration`` entry);
        returns once it listens (:attr:`migrate_port`). VmStartError if it does not come
        up; a ConfigError when the cfg has no ``migration = enable=yes``."""
        if self._incoming is not None:
            raise VmError(f"{self.vm_name}: start_incoming() twice")
        self._listening = listening = threading.Event()

        def boot() -> None:
            try:
                self.start()
            except BaseException as exc:  # handed to migrated_start()
                self._incoming_error = exc
            finally:
                listening.set()

        self._incoming = threading.Thread(target=boot, name=f"incoming-{self.vm_name}",
                                          daemon=True)
        self._incoming.start()
        if not listening.wait(timeout):
            raise VmError(f"{self.vm_name}: qemu did not listen for the migration within "
                          f"{timeout:g} s")
        if self._incoming_error is not None:
            raise self._incoming_error

    def _await_incoming(self, spec: Any, ladder: Ladder) -> None:
        """In the boot: for a target, announce the port, wait for the stream to load and
        give the rest of the boot a fresh budget; nothing for other VMs."""
        if spec.migration is None:
            return
        if self._listening is None:
            raise ConfigError(f"{self.vm_name}: the cfg's 'migration = enable=yes' makes this "
                              "VM wait for an incoming migration; start it with "
                              "start_incoming(), then migrated_start() after the source's "
                              "wait_migration_done()", Location(key="migration"))
        qmp = self.qmp
        self.migrate_port = spec.migration.port or listening_port(migration.query(qmp))
        log.info("%s: waiting for an incoming migration on %s", self.vm_name,
                 migration.tcp_uri(spec.migration.host, self.migrate_port))
        self._loaded = threading.Event()
        _TARGETS[self.migrate_port] = self
        self._listening.set()
        began = time.monotonic()
        try:
            state = migration.wait_incoming(qmp, INCOMING_WAIT_S, poll=0.2)
        except MigrationError as exc:  # qemu says why on its stderr, then exits
            said = self._qemu_said()
            self._load_error = f"{exc}{'; ' + said if said else ''}"
            raise MigrationError(self._load_error, exc.status, exc.desc) from exc
        finally:
            self._loaded.set()
            _TARGETS.pop(self.migrate_port, None)
        log.info("%s: incoming migration loaded after %.1f s (run state %s)", self.vm_name,
                 time.monotonic() - began, state)
        if state == "paused":  # the source was paused, or -S for vCPU pinning
            qmp.cont()
        ladder.deadline = time.monotonic() + ladder.budget_s

    def _qemu_said(self) -> str | None:
        """qemu's exit status and last log lines once it exited (bounded wait)."""
        if self._proc is not None:
            self._proc.wait_exit(3.0)
        return self._qemu_exit_reason()

    def migrated_start(self, set_target: bool = True, cpu_topo: str = "",
                       timeout: float | None = None) -> VmDut:
        """The target's guest DUT once the migrated guest answers (agent, SSH); the boot's
        error if it failed (the target is stopped then). ``set_target``/``cpu_topo`` are the
        legacy arguments (nothing to build in the guest here)."""
        if self._incoming is None:
            raise VmError(f"{self.vm_name}: migrated_start() without start_incoming()")
        self._incoming.join(timeout)
        if self._incoming.is_alive():
            raise VmError(f"{self.vm_name}: the migrated guest did not come up within "
                          f"{timeout:g} s")
        if self._incoming_error is not None:
            raise self._incoming_error
        assert self._vm_dut is not None
        return self._vm_dut

    # -- source ------------------------------------------------------------------------------
    def start_migration(self, remote_ip: str = "127.0.0.1", remote_port: int | None = None
                        ) -> bool:
        """Begin migrating this running VM to ``tcp:remote_ip:remote_port`` (a target's
        :attr:`migrate_port`); True when qemu reports it under way. MigrationError with
        qemu's reason when it failed at once (nothing listens, ...)."""
        if remote_port is None:
            raise VmError(f"{self.vm_name}: start_migration() needs the target's port "
                          "(its migrate_port)")
        qmp = self.qmp
        migration.set_parameters(qmp, {"max-bandwidth": MAX_BANDWIDTH})
        uri = migration.tcp_uri(remote_ip, remote_port)
        log.info("%s: migrating to %s", self.vm_name, uri)
        self._target = _TARGETS.get(remote_port) if _is_loopback(remote_ip) else None
        migration.start(qmp, uri)
        info = migration.query(qmp)
        status = str(info.get("status", ""))
        if status in ("failed", "cancelled"):
            raise MigrationError(f"{self.vm_name}: migration to {uri}: "
                                 f"{migration.failure_text(info)}", status,
                                 str(info.get("error-desc", "")))
        return status in ("setup", "active", "pre-switchover", "device", "completed")

    def wait_migration_done(self, timeout: float = MIGRATION_DONE_S) -> bool:
        """Wait until the migration started by :meth:`start_migration` completed (True).
        MigrationError with qemu's own reason (``query-migrate`` ``error-desc``) when it
        failed, or when it did not finish within ``timeout`` (then it is cancelled and this
        guest runs on). Afterwards this VM's guest is paused for good: its session and
        agent are closed, its teardown only ends qemu."""
        qmp = self.qmp
        try:
            migration.wait(qmp, timeout, f"{self.vm_name}: migration", poll=0.2)
        except MigrationError as exc:
            if migration.query(qmp).get("status") not in migration.DONE_STATES:
                qmp.execute("migrate_cancel")
            why = self._target_failure(5.0)
            if why is None:
                raise
            raise MigrationError(f"{exc}; the target {why}", exc.status, exc.desc) from exc
        # qemu's "completed" means sent: a target of this process must also have loaded it
        why = self._target_failure(timeout)
        if why is not None:
            qmp.cont()  # the stream went nowhere: this guest runs on
            raise MigrationError(f"{self.vm_name}: migration: the target {why}; this VM's "
                                 "guest runs on", "failed")
        self.migration_done = True
        self._retire_guest()
        log.info("%s: migration completed; this VM's guest now runs on the target",
                 self.vm_name)
        return True

    def _target_failure(self, timeout: float) -> str | None:
        """Why the target this process started could not load the stream (None: it did,
        or it is not ours)."""
        target = self._target
        if target is None or target._loaded is None:
            return None
        if not target._loaded.wait(timeout):
            return f"{target.vm_name} did not load the stream within {timeout:g} s"
        return None if target._load_error is None else \
            f"{target.vm_name} could not load it: {target._load_error}"

    def _retire_guest(self) -> None:
        vm_dut, agent = self._vm_dut, self._agent
        self._vm_dut = None
        self._agent = None
        for what, close in (("guest session", vm_dut.session.close if vm_dut else None),
                            ("guest agent", agent.close if agent else None)):
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # the guest is gone from here; nothing to save
                log.debug("%s: closing the migrated-away %s: %s", self.vm_name, what, exc)


#: targets of this process waiting for a stream, by port (a source finds its target here)
_TARGETS: dict[int, LiveMigration] = {}


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "localhost")


def listening_port(info: dict[str, Any]) -> int:
    """The port from an incoming ``query-migrate`` reply's ``socket-address`` (for
    ``port=0``); MigrationError when qemu does not say."""
    for addr in info.get("socket-address") or ():
        port = str(addr.get("port", ""))
        if port.isdigit():
            return int(port)
    raise MigrationError(f"incoming migration: qemu did not report its port ({info!r:.200})")


__all__ = ["INCOMING_WAIT_S", "MIGRATION_DONE_S", "LiveMigration", "listening_port"]
