"""A VM's config against what its DUT really has (``dtsvirt check``, and every start).

The config layer checks values alone; whether CPU 7 exists, 1 GB of hugepages is free or a
disk image is there depends on the DUT. Checked before qemu starts, such a problem is
reported like any config error, ``FILE:LINE: [section] key: message`` (the entry that asked
for it), instead of a raw ``taskset`` or qemu message after qemu started.
:func:`read_facts` has the side effects (reads on the DUT); :func:`problems` is pure.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_dtsvirt.config.load import VmParams
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError, DtsvirtError, Location
from pytest_dtsvirt.session.base import Session

_MEMINFO = re.compile(r"^(HugePages_Free|Hugepagesize):\s+(\d+)", re.M)


@dataclass(frozen=True)
class DutFacts:
    """What a DUT has: online CPUs, free hugepages (of the default size) and which of the
    files asked about exist. None: unknown (not checked)."""

    name: str
    online_cpus: frozenset[int] | None
    online_text: str = ""
    hugepages_free: int | None = None
    hugepage_kb: int | None = None
    missing_files: frozenset[str] = frozenset()


def parse_cpu_list(text: str) -> frozenset[int] | None:
    """``0-3,6`` (sysfs cpu list) as a set; None when malformed."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            return None
        cpus.update(range(int(lo), int(hi if sep else lo) + 1))
    return frozenset(cpus)


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """``(HugePages_Free, Hugepagesize in kB)`` from /proc/meminfo."""
    found = dict(_MEMINFO.findall(text))
    free, size = found.get("HugePages_Free"), found.get("Hugepagesize")
    return (int(free) if free else None), (int(size) if size else None)


def files_of(spec: VmSpec) -> list[str]:
    """The DUT files a spec names itself (disk images, kernel, initrd)."""
    return [*(d.file for d in spec.disks), *(f for f in (spec.kernel, spec.initrd) if f)]


def read_facts(session: Session, name: str, files: Sequence[str]) -> DutFacts:
    """The facts of the DUT behind ``session`` (online CPUs, hugepages, ``files``)."""
    online = _read_text(session, "/sys/devices/system/cpu/online")
    cpus = parse_cpu_list(online) if online is not None else None
    meminfo = _read_text(session, "/proc/meminfo")
    free, size = parse_meminfo(meminfo) if meminfo is not None else (None, None)
    missing = frozenset(f for f in files
                        if not session.run(["test", "-e", f], timeout=10).ok)
    return DutFacts(name, cpus, (online or "").strip(), free, size, missing)


def _read_text(session: Session, path: str) -> str | None:
    """A small file's text, None if it cannot be read (read_file: no command on a local
    DUT; every VM start reads these)."""
    try:
        return session.read_file(path).decode(errors="replace")
    except DtsvirtError:
        return None


def problems(spec: VmSpec, facts: DutFacts, where: Callable[[str, int], Location]
             ) -> list[ConfigError]:
    """What of ``spec`` the DUT cannot give; ``where(key, index)`` is the entry's place."""
    out: list[ConfigError] = []
    dut = f"DUT {facts.name}"
    if facts.online_cpus is not None:
        absent = sorted(set(spec.cpu.pins) - facts.online_cpus)
        if absent:
            out.append(ConfigError(
                f"cpupin names CPU {', '.join(map(str, absent))} that {dut} does not have "
                f"online (online: {facts.online_text or 'none'}); pin to those",
                where("cpu", -1)))
    if spec.mem.hugepage and facts.hugepages_free is not None and facts.hugepage_kb:
        need = -(-spec.mem.size_mb * 1024 // facts.hugepage_kb)
        if need > facts.hugepages_free:
            out.append(ConfigError(
                f"hugepage=yes with size={spec.mem.size_mb} needs {need} free "
                f"{facts.hugepage_kb} kB hugepages; {dut} has {facts.hugepages_free} free "
                "(HugePages_Free in /proc/meminfo): reserve more "
                f"(/sys/kernel/mm/hugepages/hugepages-{facts.hugepage_kb}kB/nr_hugepages), "
                "lower size or set hugepage=no", where("mem", -1)))
    for i, disk in enumerate(spec.disks):
        if disk.file in facts.missing_files:
            out.append(ConfigError(f"file {disk.file} does not exist on {dut}",
                                   where("disk", i)))
    for key, path in (("kernel", spec.kernel), ("kernel", spec.initrd)):
        if path is not None and path in facts.missing_files:
            out.append(ConfigError(f"file {path} does not exist on {dut}", where(key, -1)))
    return out


def check_on_dut(params: VmParams, spec: VmSpec, session: Session, name: str) -> None:
    """ConfigError listing every problem of ``spec`` (built from ``params``) on the DUT."""
    facts = read_facts(session, name, files_of(spec))

    def where(key: str, index: int) -> Location:
        origins = params.origins(key)
        if not origins:
            return Location(key=key)
        return origins[index] if -len(origins) <= index < len(origins) else origins[-1]

    found = problems(spec, facts, where)
    if found:
        raise ConfigError.collect(found)


__all__ = ["DutFacts", "check_on_dut", "files_of", "parse_cpu_list", "parse_meminfo",
           "problems", "read_facts"]
