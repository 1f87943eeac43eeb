"""``dtsvirt image build|prune``: build (or reuse) the test guest; drop old builds."""

from __future__ import annotations

import argparse
import json
import sys
import time

from pytest_dtsvirt.cli.command import Command
from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import (
    DEFAULT_SSH,
    SSH_SERVERS,
    GuestImage,
    default_cache_dir,
    ensure_guest_image,
    prune_cache,
)


def _cache_dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None,
                        help=f"cache directory (default: {default_cache_dir()})")


def _setup(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dtsvirt image``: the ``build`` action and its options."""
    sub = parser.add_subparsers(dest="image_command", required=True)
    build = sub.add_parser(
        "build", help="build the test guest from Debian packages (reused when unchanged)",
        description="Build the test guest (kernel, vmlinux, initramfs) from Debian packages "
                    "with apt-get download; no root needed once `apt-get update` has run.")
    _cache_dir_arg(build)
    build.add_argument("--ssh", choices=SSH_SERVERS, default=DEFAULT_SSH,
                       help="SSH server in the guest (default: dropbear)")
    build.add_argument("--extra", nargs="+", default=[], metavar="PKG",
                       help="more Debian packages to put into the guest, whole, with the "
                            "dependencies apt resolves for them (those outside the base "
                            "system whole, the others for their shared libraries)")
    build.add_argument("--dpdk", action="store_true",
                       help="the DPDK variant: dpdk-testpmd and the other DPDK programs, "
                            "their plugins, uio/vfio modules, hugetlbfs (VM option "
                            "guest dpdk=yes)")
    build.add_argument("--disk", action="store_true",
                       help="also make a bootable qcow2 disk image (SYSLINUX; ext4 data "
                            "partition mounted at /data; e2fsck in the guest)")
    build.add_argument("--json", action="store_true", help="print one JSON object")
    prune = sub.add_parser(
        "prune", help="remove cached builds other than the current default one",
        description="Remove every cached guest build except the one `dtsvirt image build` "
                    "(without options) uses now; downloaded packages and host keys stay.")
    _cache_dir_arg(prune)
    prune.add_argument("--dpdk", action="store_true",
                       help="keep the current DPDK guest too (built if missing)")


def image_json(image: GuestImage) -> dict[str, object]:
    """The JSON form of a built image."""
    return {"kernel": image.kernel, "vmlinux": image.vmlinux, "initrd": image.initrd,
            "append": image.append, "disk": image.disk, "key": image.key,
            "packages": dict(image.packages)}


def run_build(args: argparse.Namespace) -> int:
    """Handler of ``dtsvirt image build``."""
    start = time.monotonic()

    def progress(msg: str) -> None:
        print(f"[{time.monotonic() - start:5.1f}s] {msg}", file=sys.stderr, flush=True)

    if "dpdk" in args.extra and not args.dpdk:
        progress("note: Debian's dpdk package holds DPDK's scripts only; dpdk-testpmd and its "
                 "plugins come with --dpdk (the VM option guest dpdk=yes)")
    try:
        image = ensure_guest_image(args.cache_dir, ssh=args.ssh, extra=tuple(args.extra),
                                   disk=args.disk, dpdk=args.dpdk, progress=progress)
    except GuestImageError as exc:
        print(f"dtsvirt image build: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(image_json(image), indent=1))
    else:
        for name, value in image_json(image).items():
            if name != "packages" and value is not None:
                print(f"{name}: {value}")
        kernel = [f"{k} {v}" for k, v in image.packages.items() if k.startswith("linux-image")]
        print(f"packages: {len(image.packages)} ({', '.join(kernel)})")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    """Handler of ``dtsvirt image prune``."""
    current = ensure_guest_image(args.cache_dir)
    keep = {current.key}
    if args.dpdk:
        keep.add(ensure_guest_image(args.cache_dir, dpdk=True).key)
    removed = prune_cache(args.cache_dir, keep=keep)
    for path in removed:
        print(f"removed {path}")
    print(f"{len(removed)} old build(s) removed; kept {', '.join(sorted(keep))}",
          file=sys.stderr)
    return 0


def _run(args: argparse.Namespace) -> int:
    return run_prune(args) if args.image_command == "prune" else run_build(args)


COMMANDS = (
    Command("image", "the embedded test guest image (dtsvirt image build|prune)",
            _setup, _run),
)
