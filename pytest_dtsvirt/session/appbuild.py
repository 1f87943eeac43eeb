"""DPDK examples built on one DUT and installed on another (``build_dpdk_apps`` on a guest
without a compiler: the test guests have DPDK's runtime libraries but no ``make``/``cc``).

The program is built on the VM's host DUT (same Debian DPDK packages, so the same
``librte_*.so.<ABI>`` sonames) with an rpath to ``<dest>/lib``, copied into the guest, and
every shared library the guest's dynamic loader cannot find is copied from the build DUT into
``<dest>/lib``. The loader's trace (``LD_TRACE_LOADED_OBJECTS=1``, what ``ldd`` does; busybox
guests have no ``ldd``) decides, so a program that would fail to start never counts as
installed.

Pure parts: :func:`parse_trace`. The rest moves files through the DUTs' sessions.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import CommandResult

#: rounds of "copy what is missing, trace again" (a copied library may need others)
MAX_ROUNDS = 4
_TRACE_LINE = re.compile(r"^\s*(\S+)\s+=>\s+(not found|\S+)")


class _Dut(Protocol):
    name: str

    def run(self, argv: Sequence[str], *, timeout: float | None = 60.0, check: bool = False,
            input: bytes | None = None, env: Mapping[str, str] | None = None
            ) -> CommandResult: ...

    def copy_to(self, local_path: str, remote_path: str) -> None: ...

    def copy_from(self, remote_path: str, local_path: str) -> None: ...


@dataclass(frozen=True)
class Trace:
    """A loader trace: sonames found (-> path) and those not found; ``errors`` are other
    lines naming a failure (a missing symbol version, a wrong ELF class)."""

    found: dict[str, str]
    missing: list[str]
    errors: list[str]


def parse_trace(text: str) -> Trace:
    """The ``LD_TRACE_LOADED_OBJECTS=1`` listing of a program (pure)."""
    found: dict[str, str] = {}
    missing: list[str] = []
    errors: list[str] = []
    for line in text.splitlines():
        match = _TRACE_LINE.match(line)
        if match is None:
            if "not found" in line or "error" in line.lower():
                errors.append(line.strip())
            continue
        soname, where = match.groups()
        if where == "not found":
            missing.append(soname)
        else:
            found[soname] = where
    return Trace(found, missing, errors)


def trace(dut: _Dut, program: str) -> Trace:
    """What ``dut``'s dynamic loader makes of ``program`` (it is not run)."""
    out = dut.run(["env", "LD_TRACE_LOADED_OBJECTS=1", program], timeout=60)
    result = parse_trace(out.stdout + "\n" + out.stderr)
    if not out.ok and not (result.missing or result.errors):
        raise SessionError(f"{dut.name}: cannot trace the libraries of {program}: "
                           f"{(out.stderr or out.stdout).strip()[-500:]}")
    return result


def install(build: _Dut, built: str, target: Any, dest: str) -> list[str]:
    """Copy program ``built`` (on ``build``) to ``dest/<basename>`` on ``target`` (mode 0755)
    and the libraries ``target`` lacks into ``dest/lib``; returns the sonames copied.
    SessionError naming the program and the library when it still cannot start there."""
    program = f"{dest}/{os.path.basename(built)}"
    target.run(["mkdir", "-p", f"{dest}/lib"], timeout=30, check=True)
    local = tempfile.mkdtemp(prefix="dtsvirt-appbuild-")
    copied: list[str] = []
    try:
        _copy(build, built, target, program, local)
        target.run(["chmod", "0755", program], timeout=30, check=True)
        have = trace(build, built).found
        for _ in range(MAX_ROUNDS):
            result = trace(target, program)
            if result.errors:
                raise SessionError(f"{target.name}: {program} cannot start: "
                                   + "; ".join(result.errors))
            if not result.missing:
                return copied
            for soname in result.missing:
                source = have.get(soname)  # the trace lists the whole closure
                if source is None:
                    raise SessionError(f"{target.name}: {program} needs {soname}, which "
                                       f"{build.name} (where it was built) does not load")
                _copy(build, source, target, f"{dest}/lib/{soname}", local)
                copied.append(soname)
        raise SessionError(f"{target.name}: {program} still lacks libraries after copying "
                           f"{', '.join(copied)}: {', '.join(trace(target, program).missing)}")
    finally:
        shutil.rmtree(local, ignore_errors=True)


def _copy(src: _Dut, src_path: str, dst: _Dut, dst_path: str, local_dir: str) -> None:
    local = os.path.join(local_dir, "file")
    src.copy_from(src_path, local)
    dst.copy_to(local, dst_path)
    os.unlink(local)


__all__ = ["Trace", "install", "parse_trace", "trace"]
