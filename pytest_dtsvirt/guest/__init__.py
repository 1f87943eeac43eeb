"""The project's own test guest, built only from Debian packages.

``ensure_guest_image()`` returns a :class:`GuestImage` from the cache, building it first when
no identical build is there. The build uses apt's ordinary clients (``apt-cache``,
``apt-get download``, ``dpkg-deb``); no root is needed, only a host where ``apt-get update``
has been run. The initramfs is deterministic: two builds from the same inputs are
byte-identical. Boot profiles (see ``GuestImage``): "fast" boots ``vmlinux`` (PVH entry) with
``-cpu qemu64,+rdrand -smp 1`` and the e1000 at ``addr=1f`` with ``autonegotiation=off``;
"plain" boots the packaged bzImage ``kernel``.

The guest: busybox init, the e1000 at PCI 00:1f.0 renamed ``host_connect`` and configured by
DHCP, every other NIC's link up, ``/dev/virtio-ports/<name>`` links, qemu-ga on
``org.qemu.guest_agent.0``, an SSH server on port 22 (root; no password until the runtime sets
one through the agent, see ``qemu/access.py``), full iproute2 ``ip``
in root's shell, and modules for e1000, virtio (pci, net, console, blk, rng), vxlan, veth,
tun, 8021q, bridge and ext4 loadable with ``modprobe``, hugetlbfs at ``/dev/hugepages``.

The DPDK variant (``dpdk=True``, :mod:`variants`) adds DPDK 22.11's programs (dpdk-testpmd,
...), their libraries, the PMD/mempool plugins, ``libgcc_s`` and the uio/vfio modules.
``extra`` packages come with the dependencies apt resolves for them (:mod:`aptdeps`).
The disk variant (``disk=True``, :mod:`disk`) adds ``e2fsck`` and a bootable partitioned disk
image (SYSLINUX, kernel, initramfs; an ext4 data partition that ``/init`` mounts at ``/data``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest.choices import DEFAULT_SSH, SSH_SERVERS


@dataclass(frozen=True)
class GuestImage:
    """A built test guest in the cache. All paths are absolute, on the local machine."""

    kernel: str  # the packaged (compressed) bzImage: the "plain" boot profile
    vmlinux: str  # the uncompressed kernel (PVH entry): the "fast" boot profile
    initrd: str  # the initramfs holding the whole guest
    append: str  # kernel command line the guest needs (console=ttyS0 ...)
    disk: str | None  # bootable disk image (qcow2) when built with disk=True
    key: str  # cache key: hash of package versions and the guest's own files
    packages: Mapping[str, str]  # package name -> version


def default_cache_dir() -> str:
    """``$DTSVIRT_CACHE_DIR`` or ``~/.cache/pytest-dtsvirt``."""
    env = os.environ.get("DTSVIRT_CACHE_DIR")
    if env:
        return os.path.abspath(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pytest-dtsvirt")


def _from_manifest(cache_dir: str, key: str, need_disk: bool) -> GuestImage | None:
    from pytest_dtsvirt.guest import hostkeys

    d = os.path.join(cache_dir, key)
    try:
        with open(os.path.join(d, "manifest.json"), encoding="utf-8") as fh:
            m = json.load(fh)
    except (OSError, ValueError):
        return None
    paths = [os.path.join(d, n) for n in ("vmlinuz", "vmlinux", "initrd.img")]
    disk = os.path.join(d, m["disk"]) if m.get("disk") else None
    if not all(os.path.isfile(p) for p in paths) or (need_disk and disk is None):
        return None
    if disk is not None and not os.path.isfile(disk):
        return None
    if hostkeys.current_digest(cache_dir, list(m["hostkeys"])) != m["hostkeys_digest"]:
        return None
    return GuestImage(kernel=paths[0], vmlinux=paths[1], initrd=paths[2], append=m["append"],
                      disk=disk, key=key, packages=dict(m["packages"]))


def ensure_guest_image(cache_dir: str | None = None, *, ssh: str = DEFAULT_SSH,
                       extra: tuple[str, ...] = (), disk: bool = False, dpdk: bool = False,
                       progress: Callable[[str], None] | None = None) -> GuestImage:
    """Build the guest into the cache unless an identical build is there; return it.

    Package candidates are resolved with apt-cache once per state of apt's package lists
    (stored in the cache), so a warm call runs no external command. Concurrent callers
    (pytest-xdist workers) serialize on a lock file; the second one reuses the first's build.
    Raises :class:`GuestImageError` when apt/dpkg are missing or the archive is unreachable.
    """
    from pytest_dtsvirt.guest import apt, build, variants

    say = progress or (lambda _msg: None)
    cache = os.path.abspath(cache_dir or default_cache_dir())
    os.makedirs(cache, mode=0o700, exist_ok=True)
    if dpdk:  # the DPDK guest's tool set (see variants.DPDK_TOOLS)
        extra = (*extra, *variants.DPDK_TOOLS)
    options = build.Options(ssh=ssh, extra=tuple(sorted(set(extra))), disk=disk, dpdk=dpdk)
    names = options.package_names()
    resolve_dir = os.path.join(cache, "resolved")
    os.makedirs(resolve_dir, mode=0o700, exist_ok=True)
    names_hash = variants.resolution_key(names, options.extra, dpdk)
    resolved = os.path.join(resolve_dir, f"{apt.apt_state_fingerprint()}-{names_hash}.json")
    loaded = apt.load_resolution(resolved)
    if loaded is None:
        say("resolving package versions with apt-cache" +
            (" and dependencies with apt-get -s" if extra or dpdk else ""))
        res = variants.resolve(names, options.extra, dpdk, apt.native_arch())
        packages, whole = res.packages, res.whole
        apt.save_resolution(resolved, packages, whole)
    else:
        packages, whole = loaded
    key = build.cache_key(packages, options, whole)
    image = _from_manifest(cache, key, disk)
    if image is not None:
        return image
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        image = _from_manifest(cache, key, disk)
        if image is not None:
            return image
        say(f"building the test guest {key} in {cache}")
        build.build(cache, packages, options, key, apt.native_arch(), say, whole)
    image = _from_manifest(cache, key, disk)
    if image is None:
        raise GuestImageError(f"build of {key} left no usable image in {cache}")
    return image


_BUILD_DIR = re.compile(r"[0-9a-f]{20}")


def prune_cache(cache_dir: str | None, keep: Iterable[str]) -> list[str]:
    """Remove every cached build whose key is not in ``keep``; return the removed paths.

    Holds the build lock, so no build is in progress meanwhile. Only directories named like
    a build key are touched (downloaded packages and host keys stay). A VM already running
    on a removed kernel is not affected: qemu read it at start.
    """
    cache = os.path.abspath(cache_dir or default_cache_dir())
    if not os.path.isdir(cache):
        return []
    keep = set(keep)
    removed = []
    with open(os.path.join(cache, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in sorted(os.listdir(cache)):
            path = os.path.join(cache, name)
            if _BUILD_DIR.fullmatch(name) and name not in keep and os.path.isdir(path):
                shutil.rmtree(path)
                removed.append(path)
    return removed


__all__ = ["DEFAULT_SSH", "SSH_SERVERS", "GuestImage", "GuestImageError", "default_cache_dir",
           "ensure_guest_image", "prune_cache"]
