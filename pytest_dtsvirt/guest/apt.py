"""Resolve, download and verify Debian packages with the host's apt (no root needed).

Only apt's ordinary clients are used: ``apt-cache`` to learn the candidate version and its
SHA256, ``apt-get download`` to fetch the ``.deb`` into the cache, ``dpkg-deb`` to unpack.
Every ``.deb`` is checked against the SHA256 apt-cache reports for that exact version.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pytest_dtsvirt.errors import GuestImageError

KERNEL_META = "linux-image-amd64"
UPDATE_HINT = (
    "run `sudo apt-get update` (the package lists may be missing or stale), "
    "check that the Debian archive is reachable (proxy, network)"
)


@dataclass(frozen=True)
class Package:
    """One package at the exact version apt would install."""

    name: str
    version: str
    arch: str
    sha256: str
    filename: str  # pool path in the archive

    @property
    def deb_name(self) -> str:
        """The file name ``apt-get download`` gives this package."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def tool(name: str) -> str:
    """Path of an apt/dpkg tool; GuestImageError with what to do when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise GuestImageError(
            f"`{name}` not found: building the test guest needs a Debian-like host with apt and "
            "dpkg (apt-get, apt-cache, dpkg-deb). Install them, or name a `disk` image in the "
            "VM config instead of the embedded guest."
        )
    return path


def run_tool(argv: Sequence[str], what: str, cwd: str | None = None,
             hint: str | None = UPDATE_HINT, env: Mapping[str, str] | None = None) -> str:
    """Run a build tool; its stdout. GuestImageError (with the output's tail and ``hint``)
    when it cannot run or fails. ``env`` replaces the environment (default: ours, LC_ALL=C)."""
    try:
        proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                              check=False, env=dict(env or {**os.environ, "LC_ALL": "C"}))
    except OSError as exc:
        raise GuestImageError(f"{what}: cannot run {argv[0]}: {exc}")
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-800:]
        raise GuestImageError(f"{what} failed (exit {proc.returncode}): {tail}"
                              + (f"\nHint: {hint}." if hint else ""))
    return proc.stdout


def native_arch() -> str:
    """``dpkg --print-architecture``."""
    return run_tool([tool("dpkg"), "--print-architecture"], "dpkg --print-architecture").strip()


def parse_records(text: str) -> list[dict[str, str]]:
    """Split ``apt-cache show`` output into records (field -> value; continuation lines kept)."""
    records: list[dict[str, str]] = []
    current: dict[str, str] = {}
    last = ""
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current, last = {}, ""
        elif line[0] in " \t" and last:
            current[last] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
            last = key
    if current:
        records.append(current)
    return records


def parse_depends(field: str) -> list[str]:
    """Package names of a Depends field, first alternative of each group, no versions."""
    names = []
    for group in field.split(","):
        first = group.split("|")[0].strip()
        if first:
            names.append(first.split()[0].split(":")[0])
    return names


def show(names: Iterable[str], arch: str, strict: bool = True) -> dict[str, dict[str, str]]:
    """Candidate records of ``names`` (one ``apt-cache show`` call).

    Unknown names raise, unless ``strict`` is false (then they are left out).
    """
    wanted = sorted(set(names))
    if not wanted:
        return {}
    argv = [tool("apt-cache"), "show", "--no-all-versions", *wanted]
    if strict:
        out = run_tool(argv, f"apt-cache show {' '.join(wanted)}")
    else:
        out = subprocess.run(argv, capture_output=True, text=True, check=False,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    found: dict[str, dict[str, str]] = {}
    for rec in parse_records(out):
        name = rec.get("Package", "")
        if name in wanted and rec.get("Architecture") in (arch, "all") and name not in found:
            found[name] = rec
    missing = [n for n in wanted if n not in found]
    if missing and strict:
        raise GuestImageError(
            f"apt knows no installable candidate for: {', '.join(missing)}. Hint: {UPDATE_HINT}."
        )
    return found


def to_package(rec: dict[str, str]) -> Package:
    """A :class:`Package` from an apt-cache record."""
    try:
        return Package(rec["Package"], rec["Version"], rec["Architecture"], rec["SHA256"],
                       rec["Filename"])
    except KeyError as exc:
        raise GuestImageError(f"apt-cache record of {rec.get('Package')!r} lacks {exc}")


def resolve(names: Iterable[str], arch: str) -> dict[str, Package]:
    """Candidate packages for ``names``; ``linux-image-amd64`` is replaced by its ABI package."""
    wanted = set(names)
    if KERNEL_META in wanted:
        meta = show([KERNEL_META], arch)[KERNEL_META]
        abi = [d for d in parse_depends(meta.get("Depends", "")) if d.startswith("linux-image-")]
        if not abi:
            raise GuestImageError(f"{KERNEL_META} depends on no linux-image-* package")
        wanted = (wanted - {KERNEL_META}) | {abi[0]}
    return {name: to_package(rec) for name, rec in show(wanted, arch).items()}


def apt_state_fingerprint() -> str:
    """A hash of what decides apt's candidates (package lists, sources, preferences).

    Candidate versions only change when one of these files changes, so a resolution stored
    under this fingerprint can be reused without calling apt-cache (which takes ~1 s here).
    """
    h = hashlib.sha256()
    for top in ("/var/lib/apt/lists", "/etc/apt/sources.list", "/etc/apt/sources.list.d",
                "/etc/apt/preferences", "/etc/apt/preferences.d", "/etc/apt/apt.conf.d"):
        paths = [top]
        if os.path.isdir(top):
            paths = sorted(os.path.join(top, n) for n in os.listdir(top))
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                continue
            h.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def load_resolution(path: str) -> tuple[dict[str, Package], frozenset[str]] | None:
    """A resolution stored by :func:`save_resolution` (packages, those going in whole),
    or None."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        packages = {name: Package(**fields) for name, fields in data["packages"].items()}
        return packages, frozenset(data["whole"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def save_resolution(path: str, packages: dict[str, Package],
                    whole: frozenset[str] = frozenset()) -> None:
    """Store a resolution (atomically)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"packages": {n: p.__dict__ for n, p in sorted(packages.items())},
                   "whole": sorted(whole)}, fh, indent=1)
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    """Hex SHA256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(packages: Iterable[Package], debs_dir: str,
             progress: Callable[[str], None] | None = None) -> dict[str, str]:
    """Make sure each package's verified ``.deb`` is in ``debs_dir``; name -> path."""
    os.makedirs(debs_dir, mode=0o700, exist_ok=True)
    pkgs = sorted(packages, key=lambda p: p.name)
    paths = {p.name: os.path.join(debs_dir, p.deb_name) for p in pkgs}
    todo = [p for p in pkgs
            if not (os.path.exists(paths[p.name]) and sha256_file(paths[p.name]) == p.sha256)]
    if todo:
        if progress:
            progress(f"downloading {len(todo)} packages: {' '.join(p.name for p in todo)}")
        for p in todo:
            if os.path.exists(paths[p.name]):
                os.unlink(paths[p.name])
        run_tool([tool("apt-get"), "download", "-q", *(f"{p.name}={p.version}" for p in todo)],
             "apt-get download", cwd=debs_dir)
    for p in todo:  # the others just passed the same check
        if not os.path.exists(paths[p.name]):
            raise GuestImageError(f"apt-get download left no {p.deb_name} in {debs_dir}")
        digest = sha256_file(paths[p.name])
        if digest != p.sha256:
            os.unlink(paths[p.name])
            raise GuestImageError(
                f"{p.deb_name}: SHA256 {digest} does not match the archive's {p.sha256}; "
                "the file was removed, try again"
            )
    return paths


def extract(deb: str, dest: str) -> None:
    """``dpkg-deb -x deb dest``."""
    os.makedirs(dest, mode=0o700, exist_ok=True)
    run_tool([tool("dpkg-deb"), "-x", deb, dest], f"dpkg-deb -x {os.path.basename(deb)}",
         hint="the .deb may be damaged (delete it from the cache) or the disk full")


def depends_of(names: Iterable[str], arch: str) -> dict[str, list[str]]:
    """Direct Depends/Pre-Depends of each package (one apt-cache call)."""
    out: dict[str, list[str]] = {}
    for name, rec in show(names, arch).items():
        field = ", ".join(f for f in (rec.get("Pre-Depends", ""), rec.get("Depends", "")) if f)
        out[name] = parse_depends(field)
    return out
