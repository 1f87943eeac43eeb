"""``QEMUKvm``: one qemu VM on a DUT, in the reference's shape (hypervisor name ``kvm``).

::

    vm = QEMUKvm(dut, "vm0", "vxlan_sample")
    vm.set_vm_device(driver="vhost-user", opt_path="./vhost-net", opt_mac="00:00:20:00:00:20")
    vm_dut = vm.start()          # VmDut: the host DUT's API, inside the guest
    vm_dut.send_expect("uname -a", "# ")
    vm.stop()                    # powers down, removes everything; idempotent

``start()`` builds the spec (defaults, global cfg, suite cfg, ``set_vm_*`` calls), picks the
accelerator, makes a private run dir on the DUT, starts qemu under a supervisor that ends it
if we die, then climbs the readiness ladder: QMP -> agent -> ``host_connect`` address -> SSH.
Any failure (or Ctrl-C) tears down what was started and raises ``VmStartError`` carrying the
diagnostics. ``stop()`` works in stages (courtesy: guest ``kill_all``, agent powerdown;
soft: QMP ``quit``, SIGTERM; hard: SIGKILL; post: close, remove the run dir), each step
bounded. A VM whose qemu died, stopped or lost its DUT link while in use says so wherever it
is touched (guest session, ``qmp``, ``agent``, and a QMP or agent call it died during) and
``stop()`` raises :class:`VmDied`.

Made without ``options`` inside pytest, the VM takes the running plugin's options
(``--dtsvirt-*``, the conf dir beside the test module) and belongs to a factory that stops it
(:func:`pytest_dtsvirt.hypervisor.current_home`: in a test its ``function_vm_factory``, in a
module or session fixture the session's ``vm_factory``); elsewhere (a script) it reads
``conf/`` of the current directory.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Mapping
from typing import Any

from pytest_dtsvirt import hypervisor, secret
from pytest_dtsvirt.config.load import VmParams, call_origin, load_vm_params
from pytest_dtsvirt.errors import (
    ConfigError,
    DtsvirtError,
    Fatal,
    GuestAuthError,
    NotYet,
    VmDied,
    VmError,
    VmStartError,
)
from pytest_dtsvirt.hypervisor import Hypervisor, VmOptions
from pytest_dtsvirt.qemu import accel as accel_mod
from pytest_dtsvirt.qemu import dutfacts, guestboot, migration, overlay, shape
from pytest_dtsvirt.qemu.access import Access
from pytest_dtsvirt.qemu.argv import build_argv, notes
from pytest_dtsvirt.qemu.fresh import RESTORE_BUDGET_S, FreshPlan, Restorable
from pytest_dtsvirt.qemu.livemig import LiveMigration
from pytest_dtsvirt.qemu.placement import Placement
from pytest_dtsvirt.qemu.qga import GuestAgent
from pytest_dtsvirt.qemu.qmp import Qmp
from pytest_dtsvirt.qemu.teardown import StagedTeardown
from pytest_dtsvirt.runtime import rundir, workdir
from pytest_dtsvirt.runtime.ladder import Ladder
from pytest_dtsvirt.runtime.supervisor import (
    STREAM_FD,
    Supervised,
    describe_status,
    start_supervised,
)
from pytest_dtsvirt.session.base import Session
from pytest_dtsvirt.session.dut import Dut, VmDut
from pytest_dtsvirt.shacrypt import MIN_ROUNDS, sha512_crypt, shadow_with_hash

log = logging.getLogger("pytest_dtsvirt")

CONSOLE_TAIL_LINES = 60
#: default bound of each QMP and guest agent call once the VM runs
QMP_TIMEOUT_S = 10.0
AGENT_TIMEOUT_S = 10.0
#: how often the QMP socket is tried while qemu starts (a connect attempt is a cheap local
#: call; a restore is ready in well under a second, so 50 ms steps would show)
QMP_POLL_S = 0.01


class QEMUKvm(LiveMigration, Restorable, StagedTeardown, Hypervisor):
    """A qemu/KVM (or TCG) VM of a suite on a DUT. See the module docstring."""

    def __init__(self, dut: Dut, vm_name: str, suite: str,
                 options: VmOptions | None = None) -> None:
        self.dut = dut
        self.vm_name = vm_name
        self.suite = suite
        factory = hypervisor.current_home() if options is None else None
        if factory is not None:  # inside a test: the plugin's options, conf dir, tracking
            options = factory.vm_options(suite, fresh=dut is factory.dut)
        self.options = options or VmOptions()
        self.params: VmParams = load_vm_params(
            self.options.cfg_path or self.options.conf_dir or "conf", suite, vm_name)
        self._argv: list[str] = []
        self._timings: dict[str, float] = {}
        self._run_dir: str | None = None
        self._proc: Supervised | None = None
        self._qmp: Qmp | None = None
        self._agent: GuestAgent | None = None
        self._vm_dut: VmDut | None = None
        self._hostfwd_port: int | None = None
        self._placement: Placement | None = None
        self.pci_maps: dict[str, str] = {}
        self._pt_hosts: dict[str, str] = {}  # pt_N -> host PCI address of passthrough N
        self.accel_reason = ""
        self._stopped = False
        self._stopping = False  # teardown began: qemu ending is expected from now on
        self._kept = False
        #: this VM's own connection to the DUT for its long-lived channels (see _open_link)
        self._link: Dut | None = None
        #: the guest login and VNC, with their secrets (in memory; see qemu/access.py)
        self._access = Access(vm_name)
        self._no_restore = False  # a restore failed: this VM boots cold
        if factory is not None:
            factory.adopt(self)

    # -- configuration ------------------------------------------------------------------
    def set_vm_param(self, key: str, **options: str) -> None:
        if self._proc is not None:
            raise VmError(f"{self.vm_name}: set_vm_{key}() after start()")
        self.params.add(key, options, call_origin(key, self.vm_name))

    @property
    def argv(self) -> list[str]:
        return list(self._argv)

    @property
    def phase_timings(self) -> Mapping[str, float]:
        return dict(self._timings)

    @property
    def vm_dut(self) -> VmDut | None:
        return self._vm_dut

    @property
    def agent(self) -> GuestAgent:
        """The guest agent client; VmDied when the VM died."""
        self._raise_if_dead()
        if self._agent is None:
            raise VmError(f"{self.vm_name}: the guest agent is not connected")
        return self._agent

    @property
    def qmp(self) -> Qmp:
        """The QMP client; VmDied when the VM died."""
        self._raise_if_dead()
        if self._qmp is None:
            raise VmError(f"{self.vm_name}: QMP is not connected")
        return self._qmp

    def _client_failed(self, err: Exception, lost: bool) -> None:
        """A QMP or agent call of the running VM got no answer (``lost``: the connection
        ended; else a timeout): :class:`VmDied` with the cause (qemu's exit status or
        signal and the console tail, a stopped qemu, a dropped DUT link) when that is why;
        otherwise ``err`` stands."""
        cause = self.fault(wait=1.5 if lost else 0.0)
        if cause is not None:
            raise VmDied(f"{self.vm_name}: {cause}") from err

    def _raise_if_dead(self) -> None:
        cause = self.death_reason()
        if cause is not None:
            raise VmDied(f"{self.vm_name}: {cause}")

    @property
    def run_dir(self) -> str | None:
        return self._run_dir

    @property
    def hostfwd_port(self) -> int | None:
        """The DUT-loopback port forwarded to the guest's SSH port."""
        return self._hostfwd_port

    @property
    def vnc_display(self) -> int | None:
        """The VNC display qemu took (None: no VNC); its password is set per VM."""
        return self._access.vnc_display

    @property
    def monitor_socket(self) -> str | None:
        """The HMP monitor socket on the DUT (``nc -U`` it by hand)."""
        return self._placement.monitor_socket if self._placement else None

    def get_pci_mappings(self) -> list[dict[str, str]]:
        """The reference's form: ``[{"hostpci": "08:10.0", "guestpci": "00:04.0"}, ...]``."""
        return [{"hostpci": self._pt_hosts.get(dev_id, ""), "guestpci": guest}
                for dev_id, guest in sorted(self.pci_maps.items())]

    # -- start --------------------------------------------------------------------------
    def start(self) -> VmDut:
        if self._vm_dut is not None:
            return self._vm_dut
        if self._stopped:
            raise VmError(f"{self.vm_name}: start() after stop(); create a new VM")
        try:
            return self._boot()
        except BaseException as exc:
            diagnostics = self.diagnostics()
            try:
                self.stop()
            except DtsvirtError as td:
                log.error("%s: teardown after a failed start also failed: %s", self.vm_name, td)
            if isinstance(exc, VmStartError):
                exc.diagnostics = {**diagnostics, **exc.diagnostics}
                raise
            if isinstance(exc, ConfigError | KeyboardInterrupt | SystemExit):
                raise
            if isinstance(exc, DtsvirtError | OSError):
                raise VmStartError(f"{self.vm_name}: {exc}", diagnostics) from exc
            raise

    def _boot(self) -> VmDut:
        spec, warnings = self.params.build()
        for warning in warnings:
            log.warning("%s", warning)
        self._pt_hosts = {f"pt_{i}": host for i, host in enumerate(spec.passthrough_hosts)}
        session = self.dut.session
        budget = self.options.boot_timeout or spec.boot_timeout
        accel, self.accel_reason = accel_mod.choose_accel(
            self.options.accel, spec.enable_kvm, *accel_mod.probe(session.read_file))
        if self.accel_reason:
            log.info("%s: %s", self.vm_name, self.accel_reason)
        dutfacts.check_on_dut(self.params, spec, session, self.dut.config.name)
        if spec.uses_default_guest:
            if not self.dut.config.is_local:  # the guest is staged in the work dir: ours?
                workdir.ensure_workdir(session, self.dut.config.workdir)
            spec = guestboot.with_default_guest(spec, self.dut, self.options.cache_dir,
                                                self.options.guest_ssh)
        hugepage_dir = guestboot.hugepage_dir(session, spec) if spec.mem.hugepage else None
        self._run_dir = rundir.make_run_dir(session, self.dut.config.workdir, self.vm_name,
                                            self.options.run_id or rundir.current_run_id())
        full = rundir.space_problem(session, self._run_dir)
        if full is not None:
            raise VmStartError(f"{self.vm_name}: {full}")
        self._placement = placement = Placement(
            run_dir=self._run_dir, accel=accel, hostfwd_port=0,
            vnc_display=spec.vnc.display if spec.vnc else None,
            hugepage_dir=hugepage_dir,
            qemu=spec.qemu_paths[0] if spec.qemu_paths else self.dut.config.qemu)
        argv = build_argv(spec, placement) + shape.VMGENID
        for note in notes(spec, placement):
            log.warning("%s: %s", self.vm_name, note)
        store = None if self._no_restore else self.options.snapshots
        if store is not None:
            argv += shape.NO_GLOBAL_STATE
        disks: list[overlay.Overlay] = []
        if store is not None and overlay.bases(argv):  # snapshot=on -> explicit overlays
            argv, disks = overlay.rewrite(argv, self._run_dir, overlay.probe_formats(
                session, overlay.bases(argv)))
        plan = self._fresh_plan(store, session, argv, self._run_dir, placement.qemu,
                                tuple(spec.usercmd), [d.base for d in disks],
                                self.options.snapshot_demand)
        if plan is not None:
            plan.disks = disks
        if plan is not None and plan.restore is not None:
            try:
                overlay.copy(session, [(overlay.saved_name(plan.restore, i), d.path)
                                       for i, d in enumerate(disks)])
                return self._launch(spec, placement, argv, min(budget, RESTORE_BUDGET_S), plan)
            except (DtsvirtError, OSError) as exc:
                return self._boot_cold_after(plan, exc)
        overlay.create(session, disks)
        try:
            return self._launch(spec, placement, argv, budget, plan)
        finally:
            if plan is not None and plan.save_tmp is not None:  # failed before the save
                plan.store.abandon(plan.fingerprint, plan.save_tmp)

    def _boot_cold_after(self, plan: FreshPlan, exc: BaseException) -> VmDut:
        """A restore failed: say why, mark the snapshot bad, clean up, boot cold."""
        log.warning("%s: restoring from snapshot %s failed (%s); booting cold, and this "
                    "shape boots cold for the rest of the run", self.vm_name,
                    plan.fingerprint, secret.mask(str(exc)))
        plan.store.mark_bad(plan.fingerprint)
        try:
            self.stop()
        except DtsvirtError as td:
            log.warning("%s: cleaning up the failed restore: %s", self.vm_name, td)
        self._stopped = self._stopping = False
        self._proc = self._qmp = self._agent = None  # type: ignore[assignment]
        self._run_dir = self._placement = self._hostfwd_port = None  # type: ignore[assignment]
        self._link = None
        self._no_restore = True
        self.restored, self.restored_from = False, None
        self.cold_reason = f"restore failed: {exc}"
        self._access = Access(self.vm_name)
        return self._boot()

    def _launch(self, spec: Any, placement: Placement, argv: list[str], budget: float,
                plan: FreshPlan | None) -> VmDut:
        """Start qemu (cold, or restoring ``plan.restore``) and climb the ladder."""
        assert self._run_dir is not None
        restore = plan.restore if plan is not None else None
        pins = spec.cpu.pins
        if pins:
            argv = [*argv, "-S"]  # pin vCPU threads before the guest runs
        if restore is not None:  # a snapshot of a paused guest loads paused
            argv = [*argv, *migration.incoming_argv(migration.fd_uri(STREAM_FD))]
        self._argv = argv
        session = self.dut.session
        what = (f", restoring snapshot {plan.fingerprint} ({restore} as fd {STREAM_FD})"
                if restore is not None and plan is not None else "")
        log.info("%s: starting qemu on %s (%s)%s: %s", self.vm_name, session.name,
                 placement.accel, what, shlex.join(argv))
        ladder = Ladder(self.vm_name, budget, self._qemu_exit_reason,
                        console=lambda: self._read_run_file(lambda p: p.console_log))
        link = self._open_link()
        self._proc = start_supervised(link, argv, self._run_dir, stream=restore)
        proc = self._proc
        ladder.phase("qemu", lambda: proc.wait_started(ladder.attempt_timeout(5)))
        self._qmp = ladder.phase("qmp", lambda: Qmp(link.open_unix(
            placement.qmp_socket, ladder.attempt_timeout(2)), timeout=ladder.attempt_timeout(5)),
            poll=QMP_POLL_S)
        self._qmp.timeout = QMP_TIMEOUT_S  # the handshake had the boot budget; calls get this
        qmp = self._qmp
        if spec.vnc is not None:
            self._access.setup_vnc(self._qmp.command, spec.vnc.display)
        if pins:  # a restore may still be loading: its vCPU threads exist already
            self._pin_vcpus(pins)
            self._qmp.cont()  # during a load: the guest runs as soon as it is loaded
        self._hostfwd_port = self._read_hostfwd_port()
        if restore is not None:
            ladder.phase("load", lambda: self._wait_running(qmp, ladder))
        self._await_incoming(spec, ladder)  # a live migration target waits here
        self._agent = ladder.phase("agent", lambda: self._agent_probe(ladder))
        self._agent.timeout = AGENT_TIMEOUT_S
        agent = self._agent
        if plan is not None and plan.pending is not None:
            self._settle(plan)
        if plan is not None and plan.save_tmp is not None:  # saved before any password
            ladder.phase("host_connect", lambda: self._host_connect_probe(ladder))
            port = self._hostfwd_port
            ladder.phase("sshd", lambda: self._sshd_greets(link, port, ladder.attempt_timeout(3)))
            ladder.phase("save", lambda: self._save_snapshot(qmp, plan))
            ladder.phase("clock", lambda: self._set_clock(agent, ladder))
            self._set_guest_password(spec, ladder)
        else:
            self._set_guest_password(spec, ladder)
            if restore is None:
                ladder.phase("host_connect", lambda: self._host_connect_probe(ladder))
            else:  # a restored guest's address is in its snapshot; its clock is stale
                ladder.phase("clock", lambda: self._set_clock(agent, ladder))
        # after the guest ran: firmware numbers the buses behind bridges
        self.pci_maps = self._qmp.pci_map()
        guest_session = ladder.phase("ssh", lambda: self._ssh_probe(spec, ladder))
        self._timings = dict(ladder.timings)
        self._timings["total"] = round(time.monotonic() - ladder.started, 3)
        guest_session.fault_hint = self.fault
        self._qmp.on_failure = self._agent.on_failure = self._client_failed
        self._vm_dut = VmDut(guest_session, self._guest_config(spec), vm=self)
        if restore is not None and plan is not None:
            self.restored, self.restored_from = True, plan.fingerprint
            how = f"restored from {plan.fingerprint} in"
        else:
            how = "booted in"
        log.info("%s: %s %.2f s (%s)", self.vm_name, how, self._timings["total"],
                 ", ".join(f"{k} {v:.2f}" for k, v in ladder.timings.items()))
        return self._vm_dut

    def _stop_courtesy(self) -> None:
        """A VM of a restorable shape keeps nothing past qemu (no writable disk): no
        guest kill_all or powerdown, qemu is told to quit at once (saves 1-2 s per test)."""
        if self.fingerprint:
            return
        super()._stop_courtesy()

    def _open_link(self) -> Session:
        """The session for this VM's long-lived channels (supervisor, QMP, agent, guest SSH).

        On an SSH DUT each VM gets its own connection: these channels stay open as long as
        the VM runs, and OpenSSH allows 10 sessions per connection by default (MaxSessions),
        which a few VMs plus shells on one shared connection would exhaust. Closing it (or
        losing it) makes the supervisor end qemu, like losing the DUT."""
        if self.dut.config.is_local:
            return self.dut.session
        if self._link is None:
            from pytest_dtsvirt.session.dut import connect

            self._link = connect(self.dut.config)
        return self._link.session

    def _qemu_exit_reason(self) -> str | None:
        if self._proc is None or not self._proc.exited:
            return None
        why = f"exit status {self._proc.exit_status}; qemu said: {self._qemu_log_tail(20)}"
        full = None if self._run_dir is None else rundir.space_problem(self.dut.session,
                                                                        self._run_dir)
        return why if full is None else f"{why}; {full}"

    def _pin_vcpus(self, pins: tuple[int, ...]) -> None:
        threads = self.qmp.vcpu_threads()
        for index, tid in enumerate(threads):
            cpu = pins[index % len(pins)]
            self.dut.session.run(["taskset", "-pc", str(cpu), str(tid)], check=True, timeout=10)
            log.info("%s: vCPU %d (thread %d) pinned to host CPU %d", self.vm_name, index, tid,
                     cpu)

    def _read_hostfwd_port(self) -> int:
        """The ephemeral port qemu bound for the guest's SSH (``hostfwd=...:0-:22``)."""
        text = str(self.qmp.command("human-monitor-command", **{"command-line": "info usernet"}))
        port = guestboot.parse_hostfwd_port(text)
        if port is None:
            raise VmStartError(f"{self.vm_name}: no SSH host forward in 'info usernet':\n{text}")
        return port

    def _agent_probe(self, ladder: Ladder) -> GuestAgent:
        sock = self._open_link().open_unix(self._placement.qga_socket if self._placement else "",
                                          ladder.attempt_timeout(2))
        agent = GuestAgent(sock, timeout=ladder.attempt_timeout(5),
                           label=f"{self.vm_name} on DUT {self.dut.config.name}: guest agent")
        try:
            # the answer to a fresh sync id proves the agent reads and answers: no ping
            agent.sync(timeout=ladder.attempt_timeout(1.0))
        except BaseException:
            agent.close()
            raise
        return agent

    def _set_guest_password(self, spec: Any, ladder: Ladder) -> None:
        """Choose the login password (see qemu/access.py); the test guest gets it through
        the agent, whose socket only the DUT user can reach."""
        password = self._access.choose_login(spec)
        if not spec.uses_default_guest:
            return
        # hashed here and written through the agent's file commands: no chpasswd in the
        # guest (0.1-0.4 s under TCG); a generated password is 128 random bits, so the
        # fewest rounds (cheaper logins) lose nothing
        hashed = sha512_crypt(password, rounds=MIN_ROUNDS if self._access.generated else None)

        def set_password() -> None:
            timeout = ladder.attempt_timeout(AGENT_TIMEOUT_S)
            shadow = self._snapshot_shadow()  # a restore: the saved one (3 round trips less)
            if shadow is None:
                shadow = self.agent.read_file("/etc/shadow", timeout).decode(errors="replace")
                self._remember_shadow(shadow)
            updated = shadow_with_hash(shadow, spec.login.user, hashed)
            if updated is None:
                raise Fatal(f"{self.vm_name}: setting the password of {spec.login.user!r} "
                            "in the guest failed (no such user in /etc/shadow); the test "
                            "guest has the user root only (check the cfg's 'login = "
                            "user=...')")
            self.agent.write_file("/etc/shadow", updated.encode(), timeout)

        ladder.phase("password", set_password)

    def _host_connect_probe(self, ladder: Ladder) -> str:
        address = self.agent.ipv4_of("host_connect", timeout=ladder.attempt_timeout(2.0))
        if not address:
            raise NotYet("host_connect has no IPv4 address yet")
        return address

    def _ssh_probe(self, spec: Any, ladder: Ladder) -> Any:
        from pytest_dtsvirt.session.ssh import SshSession

        assert self._hostfwd_port is not None
        sock = self._open_link().open_tcp("127.0.0.1", self._hostfwd_port,
                                         ladder.attempt_timeout(3))
        try:
            return SshSession.for_guest(
                name=f"{self.vm_name}@{self.dut.config.name}", sock=sock,
                user=spec.login.user, password=self._access.password,
                timeout=ladder.attempt_timeout(10))
        except GuestAuthError as exc:
            raise Fatal(f"{self.vm_name}: SSH login as {spec.login.user!r} refused: {exc} "
                        "(check the cfg's 'login = user=...,password=...')") from exc

    def _guest_config(self, spec: Any) -> Any:
        from pytest_dtsvirt.session.dutconfig import guest_dut_config

        return guest_dut_config(self.vm_name, spec.login.user)

    # -- stop ---------------------------------------------------------------------------
    def keep(self) -> str:
        """Leave the VM running after this process ends; returns how to reach it."""
        if self._proc is not None:
            self._proc.keep()
        if self._run_dir is not None:
            self._access.write_files(self.dut.session.write_file, self._run_dir)
        self._kept = True
        self._stopped = True
        self._close_clients()
        reach = self.reach()
        self._close_link()
        return reach

    def reach(self) -> str:
        """How a human reaches this VM (SSH command, HMP socket, console log); never the
        password itself."""
        host = self.dut.config.name
        via = "" if self.dut.config.is_local else f" (on the DUT {host})"
        lines = self._access.reach_lines(self._hostfwd_port, via)
        if self._placement:
            lines.append(f"nc -U {self._placement.monitor_socket}   # HMP monitor")
            lines.append(f"tail -f {self._placement.console_log}   # serial console")
        if self._proc and self._proc.pid:
            lines.append(f"kill {self._proc.pid}   # qemu PID, when done")
        return "\n".join(lines)

    # -- diagnostics --------------------------------------------------------------------
    def _read_run_file(self, path_of: Callable[[Placement], str]) -> str:
        """A file of the run dir (``path_of(placement)``), or "" if it cannot be read."""
        if self._placement is None:
            return ""
        try:
            return self.dut.session.read_file(path_of(self._placement)).decode(errors="replace")
        except DtsvirtError:
            return ""

    def _console_tail(self, lines: int) -> str:
        text = self._read_run_file(lambda p: p.console_log).strip()
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def _qemu_log_tail(self, lines: int) -> str:
        text = self._read_run_file(lambda p: p.qemu_log).strip()
        return "\n".join(text.splitlines()[-lines:]) or "(nothing on stderr)"

    def diagnostics(self) -> dict[str, str]:
        diag: dict[str, str] = {}
        if self._argv:
            diag["qemu argv"] = shlex.join(self._argv)
        if self._run_dir:
            diag["run dir"] = f"{self.dut.config.name}:{self._run_dir}"
            diag["qemu log"] = self._qemu_log_tail(200)
            console = self._read_run_file(lambda p: p.console_log).splitlines()
            diag["console tail"] = "\n".join(console[-CONSOLE_TAIL_LINES:]) or "(empty)"
        if self._proc is not None and self._proc.exited:
            diag["qemu exit status"] = (
                f"{self._proc.exit_status} ({describe_status(self._proc.exit_status)})"
                if not self._proc.link_lost else "unknown: the link to the DUT dropped")
        elif self._qmp is not None:
            try:
                diag["qmp status"] = self._qmp.query_status()
            except Exception as exc:
                diag["qmp status"] = f"unavailable: {exc}"
        if self._agent is not None and self._proc is not None and not self._proc.exited:
            diag["guest state (agent)"] = self._guest_state()
        if self._timings:
            diag["boot phases (s)"] = ", ".join(f"{k}={v}" for k, v in self._timings.items())
        if self.accel_reason:
            diag["accelerator"] = self.accel_reason
        if self._kept or (self._proc is not None and not self._proc.exited):
            diag["reach"] = self.reach()
        return {title: secret.mask(text) for title, text in diag.items()}


    def _guest_state(self) -> str:
        """Interfaces and processes of the guest through the agent (works without SSH)."""
        lines = []
        try:
            for i in self.agent.network_interfaces(timeout=2.0):
                lines.append(f"{i.name} {i.hardware_address or '-'} {' '.join(i.ipv4)}")
            ps = self.agent.exec(["/bin/ps"], timeout=3.0)
            lines += ["", ps.stdout.rstrip()]
        except DtsvirtError as exc:
            lines.append(f"(agent: {exc})")
        return "\n".join(lines)


def _factory(dut: Dut, vm_name: str, suite: str, options: VmOptions) -> Hypervisor:
    return QEMUKvm(dut, vm_name, suite, options)


hypervisor.register("kvm", _factory)
