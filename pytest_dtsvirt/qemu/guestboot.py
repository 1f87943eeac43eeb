"""What start() needs from the DUT beyond the argv: the default guest, hugepages, hostfwd.

The default guest (:mod:`pytest_dtsvirt.guest`) is built on this machine and copied into the DUT's
workdir once per image key, so a remote DUT boots the same guest as localhost.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from typing import Any

from pytest_dtsvirt.errors import ConfigError
from pytest_dtsvirt.qemu.placement import probe_hugepage_dir
from pytest_dtsvirt.session.base import Session
from pytest_dtsvirt.session.dut import Dut

log = logging.getLogger("pytest_dtsvirt")
_STAGING_LOCK = threading.Lock()


def parse_hostfwd_port(info_usernet: str, guest_port: int = 22) -> int | None:
    """The host port of the first TCP host forward to ``guest_port`` in ``info usernet``.

    A row reads ``TCP[HOST_FORWARD]  FD  SRC-ADDR SRC-PORT  DST-ADDR DST-PORT  RECVQ SENDQ``.
    """
    for line in info_usernet.splitlines():
        words = line.split()
        if len(words) >= 6 and words[0] == "TCP[HOST_FORWARD]" and words[5] == str(guest_port):
            return int(words[3])
    return None


def with_default_guest(spec: Any, dut: Dut, cache_dir: str | None,
                       ssh: str) -> Any:
    """``spec`` with the project's test guest (SSH server ``ssh``; the DPDK variant for
    ``guest dpdk=yes``) filled in, staged on the DUT if remote."""
    from pytest_dtsvirt.guest import ensure_guest_image

    image = ensure_guest_image(cache_dir, ssh=ssh, dpdk=spec.guest.dpdk, disk=spec.guest.disk,
                               progress=lambda msg: log.info("guest image: %s", msg))
    if dut.config.is_local:
        return spec.with_guest(image)
    remote_dir = f"{dut.config.workdir.rstrip('/')}/guest-{image.key[:16]}"
    session = dut.session
    staged: dict[str, str] = {}
    # one copy at a time from this process; other processes (xdist workers on a shared
    # DUT) write their own temp names and rename atomically
    with _STAGING_LOCK:
        session.run(["mkdir", "-p", "-m", "0700", remote_dir], check=True, timeout=20)
        for attr in ("kernel", "vmlinux", "initrd", *(("disk",) if image.disk else ())):
            local = getattr(image, attr)
            remote = f"{remote_dir}/{os.path.basename(local)}"
            size = os.path.getsize(local)
            probe = session.run(["stat", "-c", "%s", remote], timeout=20)
            if not (probe.ok and probe.stdout.strip() == str(size)):
                log.info("copying the test guest's %s to %s:%s", attr, dut.config.name, remote)
                part = f"{remote}.part-{secrets.token_hex(4)}"
                session.put(local, part)
                session.run(["mv", "-f", part, remote], check=True, timeout=20)
            staged[attr] = remote
    from dataclasses import replace

    return spec.with_guest(replace(image, kernel=staged["kernel"], vmlinux=staged["vmlinux"],
                                   initrd=staged["initrd"], disk=staged.get("disk")))


def hugepage_dir(session: Session, spec: Any) -> str:
    """The DUT's hugetlbfs mount with enough free pages for ``spec``; ConfigError if none."""

    def read_text(path: str) -> str:
        return session.read_file(path).decode(errors="replace")

    where = f"on DUT {session.name}"
    mount = probe_hugepage_dir(read_text)
    if mount is None:
        raise ConfigError(f"mem hugepage=yes but no hugetlbfs is mounted {where} "
                          "(mount -t hugetlbfs nodev /dev/hugepages), or set hugepage=no")
    fields = {k.strip(): v.split()[0] for k, _, v in
              (line.partition(":") for line in read_text("/proc/meminfo").splitlines())
              if v.strip()}
    free = int(fields.get("HugePages_Free", "0"))
    size_kb = int(fields.get("Hugepagesize", "2048"))
    need = spec.mem.size_mb * 1024 // size_kb
    if free < need:
        raise ConfigError(f"mem size={spec.mem.size_mb} hugepage=yes needs {need} free "
                          f"{size_kb} kB hugepages {where}, only {free} are free")
    return mount
