"""The project's own test guest (design section 8). INTERFACE STUB: to be implemented."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass


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
    raise NotImplementedError


def ensure_guest_image(cache_dir: str | None = None, *, ssh: str = "dropbear",
                       extra: tuple[str, ...] = (), disk: bool = False,
                       progress: Callable[[str], None] | None = None) -> GuestImage:
    """Build the guest into the cache unless an identical build is there; return it."""
    raise NotImplementedError
