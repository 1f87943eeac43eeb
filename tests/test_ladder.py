"""The readiness ladder's console watch (pure: fake probes and consoles)."""

from __future__ import annotations

import time

import pytest

from pytest_dtsvirt.errors import GuestPanic
from pytest_dtsvirt.runtime.ladder import Ladder, NotYet, panic_line

PANIC = ("[    1.234] Kernel panic - not syncing: VFS: Unable to mount root fs on "
         "unknown-block(0,0)")


def test_panic_line() -> None:
    console = f"booting\r\n{PANIC}\r\n[    1.3] CPU: 0 PID: 1\r\n"
    assert panic_line(console) == PANIC[PANIC.index("Kernel"):]
    assert panic_line("booting\nall fine\n") is None


def _never() -> None:
    raise NotYet("not yet")


def test_a_panic_on_the_console_ends_the_phase_at_once() -> None:
    ladder = Ladder("vm0", 30.0, lambda: None, console=lambda: f"x\n{PANIC}\n")
    begin = time.monotonic()
    with pytest.raises(GuestPanic, match=r"vm0: the guest kernel panicked during phase "
                                         r"'agent': Kernel panic - not syncing: VFS"):
        ladder.phase("agent", _never)
    assert time.monotonic() - begin < 5


def test_an_unreadable_console_is_no_verdict() -> None:
    def broken() -> str:
        raise EOFError("link dropped")

    ladder = Ladder("vm0", 30.0, lambda: None, console=broken)
    assert ladder.phase("agent", lambda: "ready") == "ready"
