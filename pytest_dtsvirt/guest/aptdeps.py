"""Dependency closure of Debian packages by apt's own resolver (no root needed).

``apt-get --simulate install`` against an empty dpkg status file resolves what installing the
packages onto an empty system would take: every Depends/Pre-Depends, recursively, with apt's
choice among alternatives and virtual packages, at the exact candidate versions. Nothing is
installed or locked; the package lists of the host are only read.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import apt

#: Priorities of packages every Debian system has: as dependencies they give libraries only
#: (the guest's busybox stands in for their programs).
BASE_PRIORITIES = ("required", "important")
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) .*\[([^\]]+)\]\)")


def parse_simulation(text: str) -> dict[str, str]:
    """``name -> version`` of each ``Inst`` line of ``apt-get -s install`` output."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = _INST.match(line)
        if m:
            out[m.group(1).split(":")[0]] = m.group(2)
    return out


def closure(names: Iterable[str], arch: str) -> dict[str, str]:
    """Every package installing ``names`` onto an empty system takes (``name -> version``),
    by ``apt-get -s install --no-install-recommends``; GuestImageError naming apt's reason
    when apt cannot resolve them (unknown package, unsatisfiable dependency)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with tempfile.TemporaryDirectory(prefix="dtsvirt-aptdeps-") as tmp:
        status = os.path.join(tmp, "status")
        with open(status, "w", encoding="utf-8"):
            pass
        argv = [apt.tool("apt-get"), "-s", "-q", "-o", f"Dir::State::status={status}",
                "-o", "Debug::NoLocking=1", "-o", f"APT::Architecture={arch}",
                "-o", "APT::Install-Recommends=false", "install", *wanted]
        try:
            out = apt.run_tool(argv, "apt-get -s install", hint=None)
        except GuestImageError as exc:
            reason = " ".join(str(exc).split(": ", 1)[-1].split())
            raise GuestImageError(
                f"apt cannot resolve the packages {', '.join(wanted)} with their "
                f"dependencies: {reason}. Hint: check the names (apt-cache search NAME); "
                f"{apt.UPDATE_HINT}.") from None
    found = parse_simulation(out)
    lost = [n for n in wanted if n not in found]
    if lost:
        raise GuestImageError(f"apt's resolution of {', '.join(wanted)} installs no "
                              f"{', '.join(lost)} (a virtual or purely transitional package?); "
                              "name a real package that ships the files")
    return found


def resolve_closure(names: Iterable[str], arch: str) -> tuple[dict[str, apt.Package],
                                                              set[str]]:
    """The :class:`apt.Package` of every package in :func:`closure` (checked to be the same
    version apt-cache reports as candidate, so the SHA256 is that version's), and the names
    of those that are base-system packages (``BASE_PRIORITIES`` or Essential)."""
    versions = closure(names, arch)
    records = apt.show(versions, arch)
    packages: dict[str, apt.Package] = {}
    base: set[str] = set()
    for name, version in sorted(versions.items()):
        rec = records[name]
        if rec.get("Version") != version:
            raise GuestImageError(
                f"apt-get resolved {name} {version} but apt-cache's candidate is "
                f"{rec.get('Version')}; " + apt.UPDATE_HINT)
        packages[name] = apt.to_package(rec)
        if rec.get("Priority") in BASE_PRIORITIES or rec.get("Essential") == "yes":
            base.add(name)
    return packages, base
