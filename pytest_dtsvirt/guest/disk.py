"""A bootable disk image of the guest, for ``disk = file=...`` configs (no ``-kernel``).

No root and no loop mounts: a FAT "superfloppy" (filesystem from sector 0, no partition
table) made with the packaged ``mformat``/``mcopy`` (mtools), the SYSLINUX boot sector and
``ldlinux.sys`` installed with the packaged ``syslinux --install`` (which works on an image
file), holding the bzImage, the initramfs and ``syslinux.cfg``; converted to qcow2 with
``qemu-img``. SeaBIOS boots sector 0, SYSLINUX loads kernel + initramfs. The root file system
stays the initramfs, so the disk guest is the same guest as the direct-kernel one. Boot it
with ``snapshot=on`` (the default for ``disk``) and the image is never written.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Callable, Mapping

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import rootfs
from pytest_dtsvirt.guest.apt import run_tool

DISK_PACKAGES = ("syslinux", "syslinux-common", "mtools")
DISK_NAME = "disk.qcow2"
MIB = 1 << 20


def syslinux_cfg(append: str) -> str:
    """The boot menu: boot the bundled kernel and initramfs at once, no prompt."""
    return ("DEFAULT dtsvirt\nPROMPT 0\nTIMEOUT 0\nLABEL dtsvirt\n  LINUX /vmlinuz\n"
            f"  INITRD /initrd.img\n  APPEND {append}\n")


def make_disk(out_dir: str, staging: str, roots: Mapping[str, str], append: str,
              progress: Callable[[str], None]) -> str:
    """Write ``out_dir/disk.qcow2`` from ``out_dir``'s vmlinuz and initrd.img; its name."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise GuestImageError("qemu-img not found (Debian package qemu-utils): needed for --disk")
    all_roots = sorted(roots.values())
    ldso = rootfs.find_ldso(all_roots)
    libpath = rootfs.library_path(all_roots)
    mtools = os.path.join(roots["mtools"], "usr/bin/mtools")
    syslinux = os.path.join(roots["syslinux"], "usr/bin/syslinux")
    # mtools commands for syslinux's installer (it runs them through the shell), each run
    # by the packaged loader with the packaged libraries
    bindir = os.path.join(staging, "disk-bin")
    os.makedirs(bindir, exist_ok=True)
    for cmd in ("mcopy", "mattrib", "mformat", "mdel", "mmove"):
        path = os.path.join(bindir, cmd)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("#!/bin/sh\nexec " + shlex.join([ldso, "--library-path", libpath,
                                                      "--argv0", cmd, mtools]) + ' "$@"\n')
        os.chmod(path, 0o700)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1",
           "MTOOLSRC": os.devnull, "HOME": staging}
    files = {n: os.path.join(out_dir, n) for n in ("vmlinuz", "initrd.img")}
    cfg = os.path.join(staging, "syslinux.cfg")
    with open(cfg, "w", encoding="utf-8") as fh:
        fh.write(syslinux_cfg(append))
    payload = sum(os.path.getsize(p) for p in files.values())
    size = ((payload + 8 * MIB) // MIB + 1) * MIB  # 1 MiB per cylinder (64 heads x 32 sectors)
    raw = os.path.join(staging, "disk.raw")
    with open(raw, "wb") as fh:
        fh.truncate(size)
    progress(f"disk: FAT image {size // MIB} MiB with SYSLINUX")
    run_tool([os.path.join(bindir, "mformat"), "-i", raw, "-t", str(size // MIB), "-h", "64",
          "-s", "32", "-v", "DTSVIRT", "::"], "mformat", hint=None, env=env)
    run_tool([ldso, "--library-path", libpath, syslinux, "--install", raw], "syslinux --install",
             hint=None, env=env)
    run_tool([os.path.join(bindir, "mcopy"), "-i", raw, files["vmlinuz"], files["initrd.img"], cfg,
          "::/"], "mcopy", hint=None, env=env)
    run_tool([qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", raw,
          os.path.join(out_dir, DISK_NAME)], "qemu-img convert", hint=None, env=env)
    return DISK_NAME
