"""Explicit qcow2 overlays for disks opened with ``snapshot=on``, so disk guests restore.

qemu's ``snapshot=on`` keeps a guest's writes in a hidden temporary overlay that a migration
stream does not carry. For a VM that may be saved or restored, each such ``-drive`` gets an
explicit overlay ``<run dir>/disk<N>.qcow2`` on the same base image instead: made empty for
a cold boot, copied from the snapshot's saved overlay for a restore. The base stays
untouched either way; the overlay goes with the run dir.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass

from pytest_dtsvirt.errors import SessionError
from pytest_dtsvirt.session.base import Session

_SNAPSHOT_ON = re.compile(r"(^|,)snapshot=on(?=,|$)")


@dataclass(frozen=True)
class Overlay:
    """One disk's overlay: where it lives, its base image and the base's format."""

    path: str
    base: str
    base_format: str


def rewrite(argv: list[str], run_dir: str,
            formats: dict[str, str]) -> tuple[list[str], list[Overlay]]:
    """``argv`` with each ``-drive file=BASE,...,snapshot=on`` opened through an overlay in
    ``run_dir`` (pure); ``formats`` maps a base to its format. Drives whose base has no
    known format are left alone (they keep ``snapshot=on`` and so boot cold)."""
    out: list[str] = []
    overlays: list[Overlay] = []
    prev = ""
    for arg in argv:
        if prev == "-drive" and _SNAPSHOT_ON.search(arg):
            parts = [p for p in arg.split(",") if p]
            base = next((p[5:] for p in parts if p.startswith("file=")), "")
            if base and "," not in base and base in formats:
                ov = Overlay(f"{run_dir.rstrip('/')}/disk{len(overlays)}.qcow2", base,
                             formats[base])
                keep = [p for p in parts if p != "snapshot=on" and not p.startswith(
                    ("file=", "format="))]
                arg = ",".join([f"file={ov.path}", "format=qcow2", *keep])
                overlays.append(ov)
        out.append(arg)
        prev = arg
    return out, overlays


def bases(argv: list[str]) -> list[str]:
    """The base images of the ``snapshot=on`` drives of ``argv`` (pure)."""
    found = []
    for flag, value in itertools.pairwise(argv):
        if flag == "-drive" and _SNAPSHOT_ON.search(value):
            found += [p[5:] for p in value.split(",") if p.startswith("file=")]
    return found


def probe_formats(session: Session, paths: list[str]) -> dict[str, str]:
    """``{base: format}`` from ``qemu-img info``; bases it cannot read are left out."""
    out = {}
    for path in paths:
        res = session.run(["qemu-img", "info", "--force-share", "--output=json", "--", path],
                          timeout=30)
        try:
            fmt = json.loads(res.stdout).get("format") if res.ok else None
        except ValueError:
            fmt = None
        if isinstance(fmt, str) and re.fullmatch(r"[a-z0-9]+", fmt):
            out[path] = fmt
    return out


def create(session: Session, overlays: list[Overlay]) -> None:
    """Empty overlays on their bases (a cold boot)."""
    for ov in overlays:
        res = session.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", ov.base_format,
                           "-b", ov.base, "--", ov.path], timeout=60)
        if not res.ok:
            raise SessionError(f"{session.name}: qemu-img create {ov.path}: "
                               f"{(res.stderr or res.stdout).strip()}")


def saved_name(snapshot: str, index: int) -> str:
    """Where the overlay ``index`` of a snapshot is kept (next to the stream)."""
    return f"{snapshot.removesuffix('.snap')}.disk{index}.qcow2"


def copy(session: Session, pairs: list[tuple[str, str]]) -> None:
    """``cp`` each (from, to) on the DUT, sparse, private."""
    for src, dst in pairs:
        res = session.run(["cp", "--sparse=always", "--", src, dst], timeout=120)
        if not res.ok:
            raise SessionError(f"{session.name}: copying the disk overlay {src} to {dst}: "
                               f"{(res.stderr or res.stdout).strip()}")


__all__ = ["Overlay", "bases", "copy", "create", "probe_formats", "rewrite", "saved_name"]
