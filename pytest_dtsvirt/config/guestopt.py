"""The ``guest`` parameter's effect on the rest of a VM (pure): the DPDK variant's defaults
for ``cpu`` and ``mem``, and the checks that a cfg's own ``cpu``/``mem`` can run it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pytest_dtsvirt.config import build
from pytest_dtsvirt.config.model import DPDK_HUGEPAGES, VmSpec
from pytest_dtsvirt.errors import Location

if TYPE_CHECKING:
    from pytest_dtsvirt.config.table import ParamSchema, Report

#: vCPUs a ``dpdk=yes`` VM gets unless ``cpu number=`` says (testpmd: one main lcore and
#: one forwarding lcore)
DPDK_VCPUS = 2
#: MB a default ``mem`` gives beyond the least that holds the hugepages (1024 for 256 pages)
SPARE_MB = 256
#: qemu CPU models with SSE4.2 and POPCNT (what Debian's DPDK 22.11 is built for); later
#: models of each family (``-v2``, ``-IBRS``, ...) start with one of these names
SSE42_MODELS = ("max", "host", "Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell",
                "Broadwell", "Skylake", "Cascadelake", "Cooperlake", "Icelake",
                "SapphireRapids", "GraniteRapids", "Snowridge", "Denverton", "EPYC", "Dhyana")
#: the flags that make any model fit (``qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt``)
SSE42_FLAGS = frozenset({"ssse3", "sse4.1", "sse4.2", "popcnt"})


def runs_dpdk(model: str) -> bool:
    """True when qemu CPU ``model`` (with ``,+flag``/``,-flag`` suffixes) has what DPDK
    22.11 binaries need (SSSE3, SSE4.1, SSE4.2, POPCNT)."""
    base, *flags = model.split(",")
    added = {f[1:].replace("_", ".") for f in flags if f.startswith("+")}
    added |= {f.split("=")[0].replace("_", ".") for f in flags if f.endswith("=on")}
    removed = {f[1:].replace("_", ".") for f in flags if f.startswith("-")}
    removed |= {f.split("=")[0].replace("_", ".") for f in flags if f.endswith("=off")}
    if removed & SSE42_FLAGS:
        return False
    return base.startswith(SSE42_MODELS) or added >= SSE42_FLAGS


def build_guest(param: ParamSchema, items: Sequence[build.Checked], spec: VmSpec,
                rep: Report) -> VmSpec:
    """The ``guest`` builder: :func:`~pytest_dtsvirt.config.build.generic`, and 256
    hugepages for dpdk=yes unless ``hugepages`` is given."""
    spec = build.generic(param, items, spec, rep)
    if items and spec.guest.dpdk and "hugepages" not in items[-1][0]:
        spec = replace(spec, guest=replace(spec.guest, hugepages=DPDK_HUGEPAGES))
    return spec


def settle(spec: VmSpec, written: Mapping[str, Sequence[tuple[Mapping[str, str], Any]]],
           rep: Report) -> VmSpec:
    """After every builder: the ``guest`` defaults for ``cpu``/``mem`` the cfg leaves open
    (``written``: key -> the entries as written, each ``(options, RawEntry)``), and an
    error at the option's own entry for each way the VM cannot run its guest."""

    def entry(key: str) -> Any:
        items = written.get(key)
        return items[-1][1] if items else None

    def given(key: str, option: str) -> bool:
        e = entry(key)
        return e is not None and option in e.options

    spec = with_guest_defaults(spec, cpu_number_given=given("cpu", "number"),
                               mem_size_given=given("mem", "size"))
    for key, message in guest_problems(spec):
        e = entry(key) or entry("guest")
        rep.error(replace(e.origin, key=key) if e is not None else Location(key=key), message)
    return spec


def with_guest_defaults(spec: VmSpec, *, cpu_number_given: bool, mem_size_given: bool
                        ) -> VmSpec:
    """``spec`` with the ``guest`` parameter's defaults: 2 vCPUs for dpdk=yes and memory
    for the hugepages, where the cfg does not set them."""
    g = spec.guest
    if g.dpdk and not cpu_number_given and spec.cpu.number < DPDK_VCPUS:
        spec = replace(spec, cpu=replace(spec.cpu, number=DPDK_VCPUS))
    if g.hugepages and not mem_size_given and spec.mem.size_mb < g.min_mem_mb + SPARE_MB:
        spec = replace(spec, mem=replace(spec.mem, size_mb=g.min_mem_mb + SPARE_MB))
    return spec


def guest_problems(spec: VmSpec) -> list[tuple[str, str]]:
    """``(key, message)`` for each way the spec cannot run its ``guest`` options."""
    g = spec.guest
    out: list[tuple[str, str]] = []
    if g.hugepages < 0:
        out.append(("guest", f"VM {spec.name}: hugepages={g.hugepages} must be 0 or more"))
    if g.dpdk and spec.cpu.model is not None and not runs_dpdk(spec.cpu.model):
        out.append(("cpu", f"VM {spec.name}: cpu model={spec.cpu.model} lacks SSE4.2, which "
                           "guest dpdk=yes needs (DPDK 22.11 dies with 'Illegal instruction'); "
                           "drop model= (max under TCG, host under KVM), or name one with "
                           "SSE4.2 (max, host, Nehalem or later, EPYC) or add "
                           "+ssse3,+sse4.1,+sse4.2,+popcnt"))
    if g.disk and g.hugepages:
        out.append(("guest", f"VM {spec.name}: guest disk=yes boots a kernel command line "
                             f"fixed on the disk, so hugepages={g.hugepages} cannot be "
                             "reserved; drop hugepages (and dpdk) or disk"))
    if g.disk and (spec.disks or spec.kernel) and not spec.default_guest:
        out.append(("guest", f"VM {spec.name}: guest disk=yes boots the test guest's disk, "
                             "but the VM names its own disk or kernel; drop one of them"))
    if g.hugepages and spec.mem.size_mb < g.min_mem_mb:
        out.append(("mem", f"VM {spec.name}: mem size={spec.mem.size_mb} MB cannot hold guest "
                           f"hugepages={g.hugepages} ({g.hugepages * 2} MB of 2 MB pages) and "
                           f"the guest itself; set mem size={g.min_mem_mb} or more, or fewer "
                           "hugepages"))
    return out
