"""A fake hypervisor backend, for fast tests of the pytest layer's pure behaviour ONLY.

Importing this module registers it as ``fake`` (``pytest --dtsvirt-hypervisor fake``). It
starts nothing: ``start()`` returns a :class:`FakeGuest` with a fresh ``boot_id``. It applies
``set_vm_param`` calls to a small default parameter set with the real semantics (entries of
``device``/``net`` are appended, other keys replace), records every call, and appends one
JSON line per event to the file named by ``DTSVIRT_FAKE_JOURNAL`` (if set), so a test that
runs pytest in a subprocess can see what happened.

``DTSVIRT_FAKE_FAIL_START``: comma-separated ``vm`` or ``suite/vm`` names (``*`` = all)
whose ``start()`` raises :class:`VmStartError` with diagnostics, as a real failed boot does.
"""

from __future__ import annotations

import json
import os
import shlex
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from pytest_dtsvirt.errors import VmError, VmStartError
from pytest_dtsvirt.hypervisor import Hypervisor, VmOptions, register
from pytest_dtsvirt.marker import is_appending

if TYPE_CHECKING:
    from pytest_dtsvirt.session.dut import Dut, VmDut

JOURNAL_ENV = "DTSVIRT_FAKE_JOURNAL"
FAIL_ENV = "DTSVIRT_FAKE_FAIL_START"

#: what a VM has before any set_vm_param call (a cfg's usual content)
DEFAULT_PARAMS: tuple[tuple[str, tuple[dict[str, str], ...]], ...] = (
    ("cpu", ({"model": "qemu64", "number": "1"},)),
    ("mem", ({"size": "512"},)),
    ("net", ({"type": "nic", "opt_addr": "1f"}, {"type": "user"})),
)
PHASES = (("qemu", 0.01), ("qmp", 0.02), ("agent", 0.5), ("host_connect", 0.25), ("ssh", 0.1))


def _dut_name(dut: object) -> str:
    return str(getattr(dut, "name", "") or type(dut).__name__)


class FakeGuest:
    """What a fake ``start()`` returns in place of a VmDut."""

    def __init__(self, vm: FakeHypervisor) -> None:
        self.vm = vm
        self.name = f"{vm.suite}/{vm.vm_name}"
        self.boot_id = str(uuid.uuid4())
        self.closed = False

    def kill_all(self) -> None:
        """Nothing to kill in a fake guest."""

    def close(self) -> None:
        self.closed = True


class FakeHypervisor(Hypervisor):
    """A VM that is never booted; see the module docstring."""

    def __init__(self, dut: Dut, vm_name: str, suite: str, options: VmOptions) -> None:
        self.dut = dut
        self.vm_name = vm_name
        self.suite = suite
        self.options = options
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.params: dict[str, list[dict[str, str]]] = {
            k: [dict(e) for e in v] for k, v in DEFAULT_PARAMS}
        self._replaced: set[str] = set()
        self.guest: FakeGuest | None = None
        self.starts = 0
        self.stops = 0
        self._diag: dict[str, str] = {}
        self._journal("create")

    # -- journal ---------------------------------------------------------------------------
    def _journal(self, event: str, **fields: Any) -> None:
        path = os.environ.get(JOURNAL_ENV)
        if not path:
            return
        record = {"event": event, "vm": self.vm_name, "suite": self.suite,
                  "dut": _dut_name(self.dut), "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                  "pid": os.getpid(), "id": id(self), "run_id": self.options.run_id, **fields}
        line = (json.dumps(record) + "\n").encode()
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    # -- Hypervisor ------------------------------------------------------------------------
    def set_vm_param(self, key: str, **options: str) -> None:
        if self.guest is not None:
            raise VmError(f"{self.vm_name}: set_vm_param({key!r}) after start()")
        for opt, value in options.items():
            if not isinstance(value, str):
                raise TypeError(f"fake: option {opt} of {key} is {type(value).__name__}, "
                                "expected str")
        self.calls.append((key, dict(options)))
        if is_appending(key):
            self.params.setdefault(key, []).append(dict(options))
        else:
            self.params[key] = [dict(options)]
        self._journal("set", key=key, options=options)

    def _fails(self) -> bool:
        rules = {r.strip() for r in os.environ.get(FAIL_ENV, "").split(",") if r.strip()}
        return bool(rules & {"*", self.vm_name, f"{self.suite}/{self.vm_name}"})

    def start(self) -> VmDut:
        if self.guest is not None:
            raise VmError(f"{self.vm_name}: already started")
        self.starts += 1
        self._journal("start")
        if self._fails():
            self._diag = {
                "argv": shlex.join(self.argv),
                "qemu log": "qemu-system-x86_64: -drive file=/nonexistent.img: "
                            "Could not open '/nonexistent.img': No such file or directory",
                "console tail": "",
                "phase timings": "qemu: failed after 0.01 s",
            }
            self._journal("start-failed")
            raise VmStartError(f"{self.vm_name}: qemu exited with status 1 (fake)", self._diag)
        self.guest = FakeGuest(self)
        self._journal("started", boot_id=self.guest.boot_id)
        return cast("VmDut", self.guest)

    def stop(self) -> None:
        if self.guest is None:
            return
        self.guest.close()
        self.guest = None
        self.stops += 1
        self._journal("stop")

    def keep(self) -> str:
        """Leave the (pretend) VM running past this process; how to reach it."""
        self._journal("keep")
        return self.reach

    @property
    def reach(self) -> str:
        """How a human reaches the (pretend) guest."""
        return (f"ssh -p 22222 root@127.0.0.1   |   nc -U /tmp/fake-{self.vm_name}/monitor.sock")

    def diagnostics(self) -> dict[str, str]:
        if self._diag:
            return dict(self._diag)
        timings = "\n".join(f"{k}: {v:.3f} s" for k, v in self.phase_timings.items())
        return {"argv": shlex.join(self.argv),
                "console tail": f"[    0.000000] Linux version 6.1 (fake {self.vm_name})\n"
                                "login: ",
                "qemu log": "",
                "phase timings": timings,
                "reach": self.reach}

    @property
    def phase_timings(self) -> Mapping[str, float]:
        return dict(PHASES) if self.guest is not None or self.stops else {}

    @property
    def argv(self) -> list[str]:
        argv = ["qemu-system-x86_64", "-name", self.vm_name]
        for key, entries in self.params.items():
            for entry in entries:
                argv += [f"-{key}", ",".join(f"{k}={v}" for k, v in entry.items())]
        return argv


def _factory(dut: Dut, vm_name: str, suite: str, options: VmOptions) -> Hypervisor:
    return FakeHypervisor(dut, vm_name, suite, options)


register("fake", _factory)

__all__ = ["FAIL_ENV", "JOURNAL_ENV", "FakeGuest", "FakeHypervisor"]
