"""Teardown in stages and the faults of a running VM, for :class:`~pytest_dtsvirt.qemu.kvm.QEMUKvm`.

``stop()`` follows QEMU's ``python/qemu/machine/machine.py``: courtesy (guest ``kill_all``,
agent powerdown), soft (QMP ``quit``, SIGTERM), hard (SIGKILL), post (close the clients and
the VM's DUT link, remove the run dir); idempotent. A Ctrl-C skips to hard, and hard and post
finish before it goes on. :meth:`StagedTeardown.fault` tells why a VM cannot answer (qemu
died, stopped, or its DUT link dropped) for the errors of its guest session, QMP and agent.
The state lives in ``QEMUKvm``; this mixin only reads and ends it.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from pytest_dtsvirt.errors import DtsvirtError, VmDied, VmError
from pytest_dtsvirt.qemu.qga import GuestAgent
from pytest_dtsvirt.qemu.qmp import Qmp
from pytest_dtsvirt.runtime import rundir
from pytest_dtsvirt.runtime.supervisor import Supervised, describe_status
from pytest_dtsvirt.session.dut import Dut, VmDut

log = logging.getLogger("pytest_dtsvirt")

#: how long teardown gives the guest's own kill_all before powering the VM down anyway
GUEST_COURTESY_S = 10.0


class StagedTeardown:
    """``stop()`` in stages and fault reporting (mixed into ``QEMUKvm``)."""

    dut: Dut
    vm_name: str
    _proc: Supervised | None
    _vm_dut: VmDut | None
    _agent: GuestAgent | None
    _qmp: Qmp | None
    _run_dir: str | None
    _link: Dut | None
    _stopped: bool
    _stopping: bool

    def _qemu_log_tail(self, lines: int) -> str:
        raise NotImplementedError

    def _console_tail(self, lines: int) -> str:
        raise NotImplementedError

    def stop(self) -> None:
        """Tear down in stages, like QEMU's ``machine.py``; idempotent.

        courtesy (guest ``kill_all``, agent powerdown) -> soft (QMP ``quit``, SIGTERM) ->
        hard (SIGKILL) -> post (close clients and link, remove the run dir). Each step is
        bounded and a failed one escalates; a stopped (SIGSTOP) qemu goes straight to hard.
        Ctrl-C during teardown skips to hard, and hard and post finish before it is raised
        again (a second Ctrl-C waits for them), so no run dir is left behind. Raises
        :class:`VmDied` when qemu had died, stopped responding or lost its DUT link while
        the VM was in use, :class:`VmError` when qemu survives SIGKILL or the run dir cannot
        be removed.
        """
        if self._stopped:
            return
        self._stopped = True
        errors: list[str] = []
        cause: str | None = None
        interrupted: BaseException | None = None
        try:
            cause = self._death_cause() if self._vm_dut is not None else None
            self._stopping = True
            if self._qemu_running():
                if self._qemu_is_stopped():
                    cause = self._stopped_cause()
                    log.warning("%s: %s; ending it at once", self.vm_name, cause)
                else:
                    self._stop_courtesy()
                    self._stop_soft()
        except KeyboardInterrupt as exc:
            interrupted = exc
            log.warning("%s: teardown interrupted; ending qemu and removing its run dir "
                        "first", self.vm_name)
        finally:
            self._stopping = True
            with _sigint_deferred() as deferred:
                self._stop_hard(errors)
                self._stop_post(errors)
        if interrupted is None and deferred:
            interrupted = KeyboardInterrupt()
        if interrupted is not None:
            raise interrupted
        if cause is not None:
            raise VmDied(f"{self.vm_name}: {cause}")
        if errors:
            raise VmError(f"{self.vm_name}: teardown problems: " + "; ".join(errors))

    def _qemu_running(self) -> bool:
        proc = self._proc
        return proc is not None and proc.pid is not None and not proc.exited

    def _attempt(self, name: str, fn: Callable[[], object]) -> bool:
        """One escalation step: True if it worked; a failure is logged, not raised."""
        try:
            fn()
            return True
        except Exception as exc:
            log.info("%s: teardown: %s failed (%s); escalating", self.vm_name, name, exc)
            return False

    def _stop_courtesy(self) -> None:
        """Ask nicely: end the test's processes in the guest, power the guest down."""
        proc = self._proc
        assert proc is not None
        if self._vm_dut is not None:
            self._bounded("guest kill_all", self._vm_dut.kill_all, GUEST_COURTESY_S)
            # the session, not Dut.close(): that would run kill_all once more
            self._attempt("closing the guest session", self._vm_dut.session.close)
        agent = self._agent
        if agent is not None and self._attempt("agent powerdown", agent.shutdown):
            proc.wait_exit(5.0)

    def _stop_soft(self) -> None:
        """Tell qemu to quit: QMP ``quit``, then SIGTERM."""
        proc = self._proc
        assert proc is not None
        qmp = self._qmp
        if not proc.exited and qmp is not None and self._attempt("QMP quit", qmp.quit):
            proc.wait_exit(3.0)
        if not proc.exited:
            self._signal("TERM")
            proc.wait_exit(3.0)

    def _stop_hard(self, errors: list[str]) -> None:
        """SIGKILL whatever still runs (also a stopped qemu)."""
        proc = self._proc
        if proc is None or proc.pid is None or proc.exited or proc.link_lost:
            return
        self._signal("KILL")
        if not proc.wait_exit(5.0):
            errors.append(f"qemu PID {proc.pid} still running after SIGKILL")

    def _signal(self, sig: str) -> None:
        proc = self._proc
        assert proc is not None
        self._attempt(f"SIG{sig}", lambda: self.dut.session.run(
            ["kill", f"-{sig}", str(proc.pid)], timeout=10))

    def _stop_post(self, errors: list[str]) -> None:
        """Close our clients and link; remove the run dir (the supervisor on the DUT does
        that itself when the link dropped)."""
        if self._vm_dut is not None:
            self._attempt("closing the guest session", self._vm_dut.session.close)
        self._close_clients()
        proc = self._proc
        if proc is not None:
            proc.release()
        self._close_link()
        if self._run_dir is None or errors or (proc is not None and proc.link_lost):
            return
        try:
            rundir.remove_run_dir(self.dut.session, self._run_dir)
        except DtsvirtError as exc:
            errors.append(f"removing the run dir {self._run_dir}: {exc}")

    # -- faults of a running VM ---------------------------------------------------------
    def _death_cause(self) -> str | None:
        """Why this VM is gone while in use (qemu died, DUT link dropped), or None. qemu
        ending with status 0 is a guest that powered itself off, not a death."""
        proc = self._proc
        if proc is None or not proc.exited or self._stopping:
            return None
        if proc.link_lost:
            return (f"the link to DUT {self.dut.config.name} dropped while the VM ran; the "
                    "supervisor on the DUT ended qemu and removed the run dir when it saw "
                    "the link drop")
        if proc.exit_status == 0:
            return None
        return (f"qemu (PID {proc.pid}) died while the VM was in use: "
                f"{describe_status(proc.exit_status)}; qemu said: {self._qemu_log_tail(5)}; "
                f"console tail:\n{self._console_tail(15)}")

    def _qemu_is_stopped(self) -> bool:
        proc = self._proc
        if proc is None or proc.pid is None or proc.exited:
            return False
        try:
            info = self.dut.session.proc_info(proc.pid)
        except DtsvirtError:
            return False
        return info is not None and info.state in ("T", "t")

    def _stopped_cause(self) -> str:
        pid = self._proc.pid if self._proc else None
        return f"the VM is not responding: qemu (PID {pid}) is stopped (SIGSTOP)"

    def fault(self, wait: float = 1.5) -> str | None:
        """Why the VM cannot answer (for errors of the guest session, QMP and the agent):
        qemu died (waiting up to ``wait`` s for the supervisor to report it), its DUT link
        dropped, or qemu is stopped; None when none of these is the case."""
        proc = self._proc
        if proc is None or self._stopping:
            return None
        if proc.wait_exit(wait):
            return self._death_cause()
        return self._stopped_cause() if self._qemu_is_stopped() else None

    def death_reason(self) -> str | None:
        """The cause if this VM died (see :meth:`fault`) without waiting; None if it runs."""
        return self._death_cause() if self._vm_dut is not None else None

    def _bounded(self, name: str, fn: Any, seconds: float) -> None:
        """Run a courtesy step for at most ``seconds``: a hung guest (its SSH link still up
        through slirp) must not hold up the teardown. Closing the guest session afterwards
        unblocks a step left behind."""
        done = threading.Event()

        def run() -> None:
            try:
                fn()
            except Exception as exc:
                log.info("%s: teardown: %s failed (%s); escalating", self.vm_name, name, exc)
            finally:
                done.set()

        threading.Thread(target=run, daemon=True, name=f"dtsvirt-{name}").start()
        if not done.wait(seconds):
            log.info("%s: teardown: %s did not finish in %g s; escalating", self.vm_name,
                     name, seconds)

    def _close_link(self) -> None:
        if self._link is not None:
            try:
                self._link.session.close()
            except Exception as exc:  # closing is best effort
                log.debug("%s: closing the VM's DUT connection: %s", self.vm_name, exc)
            self._link = None

    def _close_clients(self) -> None:
        for client in (self._agent, self._qmp):
            if client is not None:
                try:
                    client.close()
                except Exception as exc:  # closing is best effort
                    log.debug("%s: close: %s", self.vm_name, exc)
        self._agent = self._qmp = None


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[list[int]]:
    """Hold off Ctrl-C (SIGINT) in the block; the list says whether one came. Only the main
    thread can install a handler; elsewhere the block runs unshielded."""
    got: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: got.append(signum))
    except ValueError:  # not the main thread
        yield got
        return
    try:
        yield got
    finally:
        signal.signal(signal.SIGINT, previous)
