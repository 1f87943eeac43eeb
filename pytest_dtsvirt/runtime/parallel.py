"""Booting several VMs of one test at once (the legacy ``MultipleVM``).

Under TCG a guest's boot is CPU bound in one qemu thread per vCPU, and the framework's
side (QMP, agent, SSH probes) mostly waits, so booting VMs one after the other leaves
cores idle: :func:`boot_many` starts each VM's boot in its own thread. The guarantees of a
single boot hold for the group: when one VM fails, every other one is stopped (also the
ones that were still booting, once their boot returns) and the error names the VM that
failed and why; Ctrl-C stops them all before it goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pytest_dtsvirt.errors import VmStartError

log = logging.getLogger("pytest_dtsvirt")


class Named(Protocol):
    """What a boot needs of a VM here: its name (for messages)."""

    @property
    def vm_name(self) -> str: ...


V = TypeVar("V", bound=Named)


@dataclass
class BootWindow(Generic[V]):
    """When one VM's boot ran (``time.monotonic()``), and how it ended."""

    vm: V
    began: float = 0.0
    ended: float = 0.0
    error: BaseException | None = None


def boot_many(vms: Sequence[V], boot: Callable[[V], object],
              stop: Callable[[V], None]) -> list[BootWindow[V]]:
    """``boot(vm)`` for every VM in its own thread; the boot windows, in ``vms`` order.

    If any boot fails (or the caller is interrupted), every VM whose boot succeeded is
    stopped with ``stop`` (``boot`` must leave nothing of a VM whose boot failed, as
    :meth:`VmFactory.boot` does) and the error is raised: a :class:`VmStartError` naming
    each failed VM and its cause (chained from the first), or the interrupt itself."""
    windows = [BootWindow(vm) for vm in vms]

    def run(w: BootWindow[V]) -> None:
        w.began = time.monotonic()
        try:
            boot(w.vm)
        except BaseException as exc:  # handed to the caller's thread
            w.error = exc
        finally:
            w.ended = time.monotonic()

    threads = [threading.Thread(target=run, args=(w,), name=f"boot-{w.vm.vm_name}",
                                daemon=True) for w in windows]
    interrupted: BaseException | None = None
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            try:
                t.join()
            except BaseException as exc:  # Ctrl-C: let the boots end, then stop them all
                interrupted = interrupted or exc
                log.warning("interrupted: stopping the VMs being booted once their boots "
                            "return")
    failed = [w for w in windows if w.error is not None]
    if interrupted is None and not failed:
        return windows
    _stop_booted(windows, stop)
    if interrupted is not None:
        raise interrupted
    causes = "; ".join(f"{w.vm.vm_name}: {w.error}" for w in failed)
    others = [w.vm.vm_name for w in windows if w.error is None]
    tail = f"; stopped the others ({', '.join(others)})" if others else ""
    first = failed[0].error
    if not isinstance(first, Exception):  # KeyboardInterrupt/SystemExit inside a boot
        assert first is not None
        raise first
    diagnostics = getattr(first, "diagnostics", {}) if isinstance(first, VmStartError) else {}
    raise VmStartError(f"parallel boot of {len(windows)} VMs: {len(failed)} failed: "
                       f"{causes}{tail}", diagnostics) from first


def _stop_booted(windows: Sequence[BootWindow[V]], stop: Callable[[V], None]) -> None:
    for w in windows:
        if w.error is None:
            try:
                stop(w.vm)
            except Exception as err:  # stop the others anyway
                log.error("stopping %s after a failed parallel boot: %s", w.vm.vm_name, err)


__all__ = ["BootWindow", "Named", "boot_many"]
