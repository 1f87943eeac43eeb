"""Which packages a guest variant takes, at which versions (apt-cache / apt-get -s only).

The base guest is a fixed package list (``build.Options.package_names``). ``--extra``
packages bring their whole dependency closure as apt resolves it; the DPDK variant brings
``dpdk-dev``'s programs, the runtime closure of its libraries and the DPDK plugins (PMDs,
mempool drivers) EAL loads from its plugin directory at run time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from pytest_dtsvirt.guest import apt, aptdeps

#: the Debian package with dpdk-testpmd and the other DPDK programs
DPDK_PROGRAMS_PACKAGE = "dpdk-dev"
#: dpdk-dev's dependencies that are for building against DPDK, not for running its programs
DPDK_BUILD_ONLY = ("libdpdk-dev", "python3")
#: the programs of dpdk-dev put into the guest (Debian 12 packages no dpdk-l3fwd / examples)
DPDK_PROGRAMS = ("usr/bin/dpdk-testpmd", "usr/bin/dpdk-proc-info", "usr/bin/dpdk-pdump",
                 "usr/bin/dpdk-dumpcap")
#: plugins EAL loads from its plugin directory (not ELF dependencies of any program)
DPDK_ABI = "23"
DPDK_PLUGINS = tuple(f"librte-{n}{DPDK_ABI}" for n in (
    "net-virtio", "net-vhost", "net-ring", "net-null", "net-pcap", "net-af-packet",
    "net-tap", "mempool-ring", "mempool-stack", "bus-pci", "bus-vdev"))
#: glibc dlopens libgcc_s (pthread_cancel, backtraces); ld.so --list never shows it
DPDK_LIBGCC = "libgcc-s1"
DPDK_MODULES = ("uio", "uio_pci_generic", "vfio", "vfio_pci", "vfio_iommu_type1")
#: tools legacy DPDK guest suites use beside testpmd (whole, with their closures): screen
#: keeps testpmd running across SSH sessions (vhost_user_live_migration reattaches to it on
#: the migration target); ncurses-base has the terminfo entries (``TERM=screen``)
DPDK_TOOLS = ("screen", "ncurses-base")


@dataclass(frozen=True)
class Resolution:
    """Packages of a build and those that go into the guest whole (minus docs)."""

    packages: dict[str, apt.Package]
    whole: frozenset[str]


def resolution_key(base_names: list[str], extra: tuple[str, ...], dpdk: bool) -> str:
    """What decides :func:`resolve`'s result besides apt's lists, as a short hash (pure):
    the names asked for and, for the DPDK variant, this module's package lists, so that
    editing one of them resolves again instead of reusing a stored resolution."""
    lists: list[object] = [sorted(base_names), sorted(extra), dpdk]
    if dpdk:
        lists += [DPDK_PROGRAMS_PACKAGE, sorted(DPDK_BUILD_ONLY), sorted(DPDK_PLUGINS),
                  DPDK_LIBGCC]
    return hashlib.sha256(json.dumps(lists).encode()).hexdigest()[:12]


def resolve(base_names: list[str], extra: tuple[str, ...], dpdk: bool,
            arch: str) -> Resolution:
    """Candidates of the base packages, plus the closures of ``extra`` and of the DPDK set."""
    packages = apt.resolve(base_names, arch)
    whole: set[str] = set()
    if dpdk:
        deps = apt.depends_of([DPDK_PROGRAMS_PACKAGE], arch)[DPDK_PROGRAMS_PACKAGE]
        runtime = [d for d in deps if d not in DPDK_BUILD_ONLY]
        found, _ = aptdeps.resolve_closure([*runtime, *DPDK_PLUGINS, DPDK_LIBGCC], arch)
        found.update(apt.resolve([DPDK_PROGRAMS_PACKAGE], arch))
        _merge(packages, found)
        whole |= set(DPDK_PLUGINS)
    if extra:
        found, base = aptdeps.resolve_closure(extra, arch)
        _merge(packages, found)
        whole |= (set(found) - base - set(base_names)) | set(extra)
    return Resolution(packages, frozenset(whole))


def _merge(packages: dict[str, apt.Package], found: Mapping[str, apt.Package]) -> None:
    for name, pkg in found.items():
        packages.setdefault(name, pkg)
