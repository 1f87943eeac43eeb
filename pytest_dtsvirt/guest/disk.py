"""A bootable disk image of the guest (``guest disk=yes``: boots from the disk, no ``-kernel``).

No root and no loop mounts. The image is partitioned (MBR, SYSLINUX's ``mbr.bin``):

1. a FAT16 boot partition (active) made with the packaged ``mformat``/``mcopy`` (mtools) at
   its offset, SYSLINUX installed into it with the packaged ``syslinux --install --offset``
   (which works on an image file), holding the bzImage, the initramfs and ``syslinux.cfg``;
2. an ext4 data partition labelled ``dtsvirt-data``, made by the packaged ``mke2fs -d`` at its
   offset (``-E offset=``), with a fixed UUID, hash seed and timestamps.

Converted to qcow2 with ``qemu-img``. SeaBIOS boots sector 0, SYSLINUX loads kernel +
initramfs; the root file system stays the initramfs (the same guest as the direct-kernel
one) and ``/init`` mounts the data partition at ``/data`` (``dtsvirt.data`` on the kernel
command line). Booted with ``snapshot=on`` (the default for ``disk``) the image is never
written; a test's writes to ``/data`` go to the VM's overlay.
"""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import rootfs
from pytest_dtsvirt.guest.apt import run_tool

#: packages for making the disk (host side) and checking its data partition (e2fsck in the
#: guest); the libraries of mke2fs/e2fsck come with them
DISK_PACKAGES = ("syslinux", "syslinux-common", "mtools", "e2fsprogs", "libext2fs2",
                 "libcom-err2", "libblkid1", "libuuid1", "libss2")
DISK_NAME = "disk.qcow2"
#: where /init mounts the data partition, and its label
DATA_MOUNT = "/data"
DATA_LABEL = "dtsvirt-data"
#: kernel command line word that makes /init mount the data partition
DATA_ARG = "dtsvirt.data"
DATA_MIB = 64
MIB = 1 << 20
SECTOR = 512
_MBR_CODE = "usr/lib/syslinux/mbr/mbr.bin"
_FIXED_TIME = "1700000000"  # E2FSPROGS_FAKE_TIME: the data partition's timestamps


@dataclass(frozen=True)
class Layout:
    """Byte offsets and sizes of the two partitions and the whole image (MiB aligned)."""

    boot_start: int
    boot_size: int
    data_start: int
    data_size: int

    @property
    def total(self) -> int:
        """Size of the image."""
        return self.data_start + self.data_size


def layout(payload: int, data_mib: int = DATA_MIB) -> Layout:
    """Partitions for ``payload`` bytes of boot files: the boot partition from 1 MiB with
    8 MiB to spare (FAT and SYSLINUX), then ``data_mib`` MiB of data (pure)."""
    boot_size = ((payload + 8 * MIB) // MIB + 1) * MIB
    return Layout(MIB, boot_size, MIB + boot_size, data_mib * MIB)


def _entry(active: bool, ptype: int, start: int, size: int) -> bytes:
    # CHS fields at their "use LBA" maximum: SeaBIOS and SYSLINUX's MBR read LBA
    chs = b"\xfe\xff\xff"
    return struct.pack("<B3sB3sII", 0x80 if active else 0, chs, ptype, chs,
                       start // SECTOR, size // SECTOR)


def mbr(code: bytes, lay: Layout, disk_id: int) -> bytes:
    """Sector 0: SYSLINUX's MBR code (440 bytes), the disk id, the partition table with the
    FAT16 boot partition (active) and the Linux data partition, the signature (pure)."""
    if len(code) > 440:
        raise GuestImageError(f"{_MBR_CODE} is {len(code)} bytes, more than 440")
    table = (_entry(True, 0x06, lay.boot_start, lay.boot_size)
             + _entry(False, 0x83, lay.data_start, lay.data_size) + bytes(32))
    return code.ljust(440, b"\0") + struct.pack("<IH", disk_id, 0) + table + b"\x55\xaa"


def syslinux_cfg(append: str) -> str:
    """The boot menu: boot the bundled kernel and initramfs at once, no prompt; ``/init``
    mounts the data partition."""
    return ("DEFAULT dtsvirt\nPROMPT 0\nTIMEOUT 0\nLABEL dtsvirt\n  LINUX /vmlinuz\n"
            f"  INITRD /initrd.img\n  APPEND {append} {DATA_ARG}\n")


def _wrappers(bindir: str, ldso: str, libpath: str, tools: Mapping[str, str]) -> None:
    """Scripts running packaged programs with the packaged loader and libraries (syslinux's
    installer runs the mtools commands through the shell)."""
    os.makedirs(bindir, exist_ok=True)
    for cmd, target in tools.items():
        path = os.path.join(bindir, cmd)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("#!/bin/sh\nexec " + shlex.join([ldso, "--library-path", libpath,
                                                      "--argv0", cmd, target]) + ' "$@"\n')
        os.chmod(path, 0o700)


def make_disk(out_dir: str, staging: str, roots: Mapping[str, str], append: str, key: str,
              progress: Callable[[str], None]) -> str:
    """Write ``out_dir/disk.qcow2`` from ``out_dir``'s vmlinuz and initrd.img; its name."""
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise GuestImageError("qemu-img not found (Debian package qemu-utils): needed for --disk")
    all_roots = sorted(roots.values())
    ldso = rootfs.find_ldso(all_roots)
    libpath = rootfs.library_path(all_roots)
    mtools = os.path.join(roots["mtools"], "usr/bin/mtools")
    e2fs = roots["e2fsprogs"]
    bindir = os.path.join(staging, "disk-bin")
    tools = {cmd: mtools for cmd in ("mcopy", "mattrib", "mformat", "mdel", "mmove")}
    tools["syslinux"] = os.path.join(roots["syslinux"], "usr/bin/syslinux")
    tools["mke2fs"] = next(p for p in (os.path.join(e2fs, d, "mke2fs") for d in ("sbin",
                                                                             "usr/sbin"))
                           if os.path.exists(p))
    _wrappers(bindir, ldso, libpath, tools)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "LC_ALL": "C", "MTOOLS_SKIP_CHECK": "1",
           "MTOOLSRC": os.devnull, "HOME": staging, "E2FSPROGS_FAKE_TIME": _FIXED_TIME,
           "MKE2FS_CONFIG": os.path.join(e2fs, "etc/mke2fs.conf")}
    files = {n: os.path.join(out_dir, n) for n in ("vmlinuz", "initrd.img")}
    cfg = os.path.join(staging, "syslinux.cfg")
    with open(cfg, "w", encoding="utf-8") as fh:
        fh.write(syslinux_cfg(append))
    lay = layout(sum(os.path.getsize(p) for p in files.values()))
    with open(os.path.join(roots["syslinux-common"], _MBR_CODE), "rb") as fh:
        code = fh.read()
    raw = os.path.join(staging, "disk.raw")
    with open(raw, "wb") as fh:
        fh.write(mbr(code, lay, int(key[:8], 16)))
        fh.truncate(lay.total)
    progress(f"disk: {lay.total // MIB} MiB, FAT boot partition with SYSLINUX, "
             f"ext4 {DATA_LABEL} ({lay.data_size // MIB} MiB)")
    boot = f"{raw}@@{lay.boot_start}"
    run_tool([os.path.join(bindir, "mformat"), "-i", boot, "-T", str(lay.boot_size // SECTOR),
              "-h", "64", "-s", "32", "-H", str(lay.boot_start // SECTOR), "-v", "DTSVIRT",
              "::"], "mformat", hint=None, env=env)
    run_tool([os.path.join(bindir, "syslinux"), "--install", "--offset", str(lay.boot_start),
              raw], "syslinux --install", hint=None, env=env)
    run_tool([os.path.join(bindir, "mcopy"), "-i", boot, files["vmlinuz"], files["initrd.img"],
              cfg, "::/"], "mcopy", hint=None, env=env)
    data = os.path.join(staging, "data")
    os.makedirs(data, exist_ok=True)
    with open(os.path.join(data, "README"), "w", encoding="utf-8") as fh:
        fh.write(f"The test guest's data partition ({DATA_LABEL}), mounted at {DATA_MOUNT}.\n")
    os.utime(os.path.join(data, "README"), (int(_FIXED_TIME), int(_FIXED_TIME)))
    fs_uuid = str(uuid.UUID(hex=key[:20].ljust(32, "0")))
    run_tool([os.path.join(bindir, "mke2fs"), "-q", "-F", "-t", "ext4", "-L", DATA_LABEL,
              "-U", fs_uuid, "-E", f"offset={lay.data_start},nodiscard,root_owner=0:0,"
              f"hash_seed={fs_uuid}", "-d", data, raw, f"{lay.data_size // 1024}k"],
             "mke2fs", hint=None, env=env)
    run_tool([qemu_img, "convert", "-q", "-f", "raw", "-O", "qcow2", raw,
              os.path.join(out_dir, DISK_NAME)], "qemu-img convert", hint=None, env=env)
    return DISK_NAME
