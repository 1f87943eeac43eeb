"""The readiness ladder: one deadline, phases timed, no fixed sleeps.

Each phase retries a probe with tenacity until it succeeds, the shared deadline passes,
qemu exits or the guest's console shows a kernel panic (both checked between attempts, the
console at most every :data:`CONSOLE_CHECK_S`, so a dead qemu or a panicked guest fails the
boot at once). Every attempt gets at most the time that is left. Phase durations are
recorded in order.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TypeVar

import tenacity

from pytest_dtsvirt.errors import DtsvirtError, Fatal, GuestPanic, NotYet, QemuExited, VmStartError

log = logging.getLogger("pytest_dtsvirt")
T = TypeVar("T")

#: pause between attempts of a probe; small, since each attempt is cheap and a boot is
#: measured against a tight floor (benchmarks/boot_overhead.py)
POLL_INTERVAL_S = 0.05
#: how often the console log is read for a kernel panic (a read is a command on a remote DUT)
CONSOLE_CHECK_S = 0.5
_PANIC = re.compile(r"Kernel panic - not syncing:[^\r\n]*")


def panic_line(console: str) -> str | None:
    """The first ``Kernel panic - not syncing: ...`` line of a console log, or None."""
    match = _PANIC.search(console)
    return match.group(0).strip() if match else None


class Ladder:
    """Runs phases against one deadline and records their timings."""

    def __init__(self, vm_name: str, budget_s: float, qemu_exited: Callable[[], str | None],
                 console: Callable[[], str] | None = None):
        self.vm_name = vm_name
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.deadline = self.started + budget_s
        self.timings: dict[str, float] = {}
        self._qemu_exited = qemu_exited
        self._console = console
        self._console_checked = 0.0

    def _check_console(self, phase: str) -> None:
        """GuestPanic when the console shows a kernel panic (read at most every 0.5 s)."""
        now = time.monotonic()
        if self._console is None or now - self._console_checked < CONSOLE_CHECK_S:
            return
        self._console_checked = now
        try:
            console = self._console()
        except Exception as exc:  # a console that cannot be read is no verdict
            log.debug("%s: reading the console: %s", self.vm_name, exc)
            return
        line = panic_line(console)
        if line is not None:
            raise GuestPanic(f"{self.vm_name}: the guest kernel panicked during phase "
                             f"{phase!r}: {line}")

    def left(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.deadline - time.monotonic())

    def attempt_timeout(self, cap: float) -> float:
        """A timeout for one attempt: at most ``cap``, at most what is left, at least 0.05."""
        return max(0.05, min(cap, self.left()))

    def phase(self, name: str, probe: Callable[[], T], poll: float = POLL_INTERVAL_S) -> T:
        """Retry ``probe`` (every ``poll`` s) until it returns; record and log the phase's
        duration."""
        begin = time.monotonic()
        last: list[BaseException] = []

        def guarded() -> T:
            why = self._qemu_exited()
            if why is not None:
                raise QemuExited(f"{self.vm_name}: qemu exited during phase {name!r}: {why}")
            self._check_console(name)
            try:
                return probe()
            except (NotYet, OSError, DtsvirtError) as exc:
                if isinstance(exc, Fatal | QemuExited | GuestPanic):
                    raise
                last[:] = [exc]
                raise NotYet(str(exc)) from exc

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(NotYet),
            stop=_stop_at(self.deadline),
            wait=tenacity.wait_fixed(poll),
            reraise=True,
        )
        try:
            result = retrying(guarded)
        except NotYet:
            why = f": last error: {last[0]}" if last else ""
            raise VmStartError(
                f"{self.vm_name}: phase {name!r} not reached within the boot budget of "
                f"{self.budget_s:g} s{why}") from (last[0] if last else None)
        took = time.monotonic() - begin
        self.timings[name] = round(took, 3)
        log.info("%s: %s ready in %.2f s (%.2f s since start)", self.vm_name, name, took,
                 time.monotonic() - self.started)
        return result


class _stop_at(tenacity.stop.stop_base):  # type: ignore[misc]
    """Stop retrying when the absolute monotonic ``deadline`` has passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + POLL_INTERVAL_S >= self.deadline
