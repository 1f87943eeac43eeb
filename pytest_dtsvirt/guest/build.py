"""Build the test guest into the cache (side effects: apt, dpkg-deb, files in the cache)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import apt, cpio, disk, hostkeys, kernel, rootfs, variants
from pytest_dtsvirt.guest.choices import DEFAULT_SSH, SSH_SERVERS
from pytest_dtsvirt.guest.cpio import Node
from pytest_dtsvirt.guest.disk import DISK_PACKAGES

FORMAT = 1
# lpj/tsc=reliable/no_timer_check skip calibrations, cryptomgr.notests the crypto self-tests,
# i8042.* the keyboard-controller probing: together ~1.3 s less under TCG (measured).
APPEND = ("console=ttyS0 quiet panic=-1 lpj=8000000 tsc=reliable no_timer_check "
          "cryptomgr.notests i8042.noaux i8042.nopnp mitigations=off")
BASE_PACKAGES = ("busybox-static", "qemu-guest-agent", "iproute2", apt.KERNEL_META)
SSH_PACKAGES = {"dropbear": ("dropbear-bin",),
                "openssh": ("openssh-server", "openssh-sftp-server")}
# Packages of the libraries the base binaries need, downloaded with them up front; a library
# still missing after that (ld.so --list) is looked up then.
LIB_PACKAGES = ("libc6", "libcrypt1", "zlib1g", "libglib2.0-0", "libpcre2-8-0", "libnuma1",
                "libudev1", "liburing2", "libgmp10", "libtomcrypt1", "libtommath1",
                "libbpf1", "libelf1", "libmnl0", "libbsd0", "libcap2", "libmd0")
# Files taken from the base packages; --extra packages go in whole (minus docs).
PACKAGE_FILES: Mapping[str, tuple[str, ...]] = {
    "busybox-static": ("bin/busybox",),
    "dropbear-bin": ("usr/sbin/dropbear", "usr/bin/dropbearkey"),
    "openssh-server": ("usr/sbin/sshd",),
    "openssh-sftp-server": ("usr/lib/openssh/sftp-server",),
    "qemu-guest-agent": ("usr/sbin/qemu-ga",),
    "iproute2": ("bin/ip", "sbin/ip", "sbin/bridge", "etc/iproute2"),
    variants.DPDK_PROGRAMS_PACKAGE: variants.DPDK_PROGRAMS,
    variants.DPDK_LIBGCC: ("lib/x86_64-linux-gnu/libgcc_s.so.1",),
    "e2fsprogs": ("sbin/e2fsck",),  # the disk guest checks its data partition
}
MODULES = ("e1000", "virtio_pci", "virtio_net", "virtio_console", "virtio_blk", "virtio_rng",
           "vxlan", "veth", "tun", "8021q", "bridge", "ext4", "crc32c_generic")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """What a build depends on besides the package versions."""

    ssh: str = DEFAULT_SSH
    extra: tuple[str, ...] = ()
    disk: bool = False  # also the bootable disk (guest/disk.py) and e2fsck in the guest
    dpdk: bool = False

    def package_names(self) -> list[str]:
        """The base packages (the kernel as its meta package); ``extra`` and the DPDK set
        are resolved with their dependencies by :mod:`variants`."""
        if self.ssh not in SSH_PACKAGES:
            raise GuestImageError(f"unknown ssh server {self.ssh!r}: use "
                                  f"{' or '.join(SSH_SERVERS)}")
        disk = DISK_PACKAGES if self.disk else ()
        return sorted({*BASE_PACKAGES, *SSH_PACKAGES[self.ssh], *LIB_PACKAGES, *disk})


BUILD_MODULES = ("apt.py", "aptdeps.py", "build.py", "cpio.py", "disk.py", "hostkeys.py",
                 "kernel.py", "rootfs.py", "variants.py")


def own_files_digest() -> str:
    """Hash of the builder's code and the guest's own files: changing them rebuilds."""
    h = hashlib.sha256()
    top = resources.files("pytest_dtsvirt.guest")
    items = [top.joinpath(name) for name in BUILD_MODULES]
    items += sorted(top.joinpath("files").iterdir(), key=lambda p: p.name)
    for item in items:
        if item.is_file():
            h.update(item.name.encode() + b"\0" + item.read_bytes())
    return h.hexdigest()


def cache_key(packages: Mapping[str, apt.Package], options: Options,
              whole: frozenset[str] = frozenset()) -> str:
    """The cache key of a build (package versions, own files, options)."""
    h = hashlib.sha256(f"format={FORMAT}\n".encode())
    for name in sorted(packages):
        p = packages[name]
        h.update(f"{p.name}={p.version}={p.sha256}\n".encode())
    h.update(own_files_digest().encode())
    h.update(json.dumps([options.ssh, sorted(options.extra), options.disk, options.dpdk,
                         sorted(whole)]).encode())
    return h.hexdigest()[:20]


def kpkg_name(packages: Mapping[str, apt.Package]) -> str:
    """The kernel ABI package among ``packages``."""
    kpkg = [n for n in packages if n.startswith("linux-image-")]
    if len(kpkg) != 1:
        raise GuestImageError(f"expected one kernel package, got {kpkg}")
    return kpkg[0]


def _select(tree: dict[str, Node], root: str, paths: tuple[str, ...] | None) -> list[str]:
    elfs: list[str] = []
    if paths is None:
        for name in sorted(os.listdir(root)):
            if name != "DEBIAN":
                elfs += rootfs.add_path(tree, root, name)
        return elfs
    for rel in paths:
        if not os.path.lexists(os.path.join(root, rel)):
            raise GuestImageError(f"package unpacked at {root} has no {rel}")
        elfs += rootfs.add_path(tree, root, rel)
    return elfs


class Builder:
    """One build: unpack, assemble, pack. Use :func:`build`."""

    def __init__(self, cache_dir: str, staging: str, arch: str, progress: Progress) -> None:
        self.cache_dir = cache_dir
        self.staging = staging
        self.arch = arch
        self.progress = progress
        self.roots: dict[str, str] = {}

    def unpack(self, packages: Mapping[str, apt.Package]) -> None:
        """Download (verified) and unpack packages, each into its own directory."""
        debs = apt.download(packages.values(), os.path.join(self.cache_dir, "debs"),
                            self.progress)
        self.progress(f"unpacking {len(debs)} packages")
        todo = {n: os.path.join(self.staging, "pkgs", n) for n in debs if n not in self.roots}
        # the kernel first: it is the big one
        order = sorted(todo, key=lambda n: not n.startswith("linux-image-"))
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(lambda n: apt.extract(debs[n], todo[n]), order))
        self.roots.update(todo)

    def libraries(self, packages: dict[str, apt.Package],
                  elfs: list[str]) -> dict[str, str]:
        """Shared libraries of ``elfs`` (paths in the staging), fetching library packages
        for sonames the unpacked ones lack."""
        for _ in range(5):
            roots = sorted(self.roots.values())
            ldso = rootfs.find_ldso(roots)
            libpath = rootfs.library_path(roots)
            found: dict[str, str] = {}
            missing: set[str] = set()
            for elf in elfs:
                f, m = rootfs.list_libs(ldso, libpath, elf, roots)
                found.update(f)
                missing |= m
            if not missing:
                return found
            guesses = {rootfs.soname_package_guess(s) for s in missing} - set(packages)
            new = apt.show(guesses, self.arch, strict=False)
            if not new:
                deps = apt.depends_of(packages, self.arch)
                libs = {d for ds in deps.values() for d in ds if d.startswith("lib")}
                new = apt.show(libs - set(packages), self.arch, strict=False)
            if not new:
                break
            more = {n: apt.to_package(r) for n, r in new.items()}
            self.progress(f"libraries {', '.join(sorted(missing))} -> {', '.join(sorted(more))}")
            packages.update(more)
            self.unpack(more)
        raise GuestImageError(
            f"no package provides the shared libraries {', '.join(sorted(missing))}"
        )

    def kernel(self, packages: Mapping[str, apt.Package], tree: dict[str, Node],
               modules: tuple[str, ...] = MODULES) -> tuple[str, str]:
        """Add modules + modules.dep to ``tree``; return (kernel version, vmlinuz path)."""
        root = self.roots[kpkg_name(packages)]
        kvers = sorted(os.listdir(os.path.join(root, "lib/modules")))
        if len(kvers) != 1:
            raise GuestImageError(f"kernel package ships modules for {kvers}")
        kver = kvers[0]
        mod_root = f"lib/modules/{kver}"
        paths: dict[str, str] = {}
        for dirpath, _, files in os.walk(os.path.join(root, mod_root)):
            for f in files:
                if f.endswith(".ko"):
                    rel = os.path.relpath(os.path.join(dirpath, f), os.path.join(root, mod_root))
                    paths[kernel.module_name(rel)] = rel
        cache: dict[str, kernel.ModInfo | None] = {}
        data: dict[str, bytes] = {}

        def info(name: str) -> kernel.ModInfo | None:
            if name not in cache:
                if name not in paths:
                    cache[name] = None
                else:
                    with open(os.path.join(root, mod_root, paths[name]), "rb") as fh:
                        data[name] = fh.read()
                    cache[name] = kernel.parse_modinfo(paths[name], data[name])
            return cache[name]

        missing = [m for m in modules if info(m) is None]
        if missing:
            raise GuestImageError(f"the kernel package has no module {', '.join(missing)}")
        need = kernel.closure(modules, info)
        for name in need:
            tree[f"{mod_root}/{paths[name]}"] = Node.file(data[name])
        tree[f"{mod_root}/modules.dep"] = Node.file(
            kernel.modules_dep(need, need, paths).encode())
        tree[f"{mod_root}/modules.alias"] = Node.file(
            kernel.modules_alias(need, need).encode())
        return kver, os.path.join(root, "boot", f"vmlinuz-{kver}")

    def _check_extra(self, extra: tuple[str, ...], whole: frozenset[str]) -> None:
        """Each ``--extra`` package brings files: its own, or those of a direct dependency
        that goes in whole (a meta package); GuestImageError otherwise (a transitional
        package whose dependencies the base system has)."""
        empty = [n for n in extra if not rootfs.has_payload(self.roots[n])]
        direct = apt.depends_of(empty, self.arch) if empty else {}
        for name in empty:
            if not any(d in whole and rootfs.has_payload(self.roots[d])
                       for d in direct.get(name, [])):
                raise GuestImageError(
                    f"--extra {name}: neither the package nor its direct dependencies outside the "
                    "base system ship files for the guest (only documentation: a "
                    f"transitional or meta package); name the package with the programs "
                    f"(apt-cache depends {name}, or apt-file search PROGRAM)")

    def run(self, packages: dict[str, apt.Package], options: Options, out_dir: str,
            whole: frozenset[str] = frozenset()) -> dict[str, str]:
        """Build into ``out_dir``; return the manifest's package versions."""
        self.unpack(packages)
        roots = sorted(self.roots.values())
        ldso = rootfs.find_ldso(roots)
        if options.ssh == "openssh":
            keys = hostkeys.ensure_openssh(self.cache_dir)
        else:
            db = self.roots["dropbear-bin"]
            keys = hostkeys.ensure_dropbear(self.cache_dir, ldso, rootfs.library_path(roots),
                                            os.path.join(db, "usr/bin/dropbearkey"))
        tree = rootfs.base_tree(options.ssh, keys)
        busybox = os.path.join(self.roots["busybox-static"], "bin/busybox")
        elfs: list[str] = []
        for name in sorted(packages):
            if name in whole:  # before PACKAGE_FILES: `--extra iproute2` means all of it
                elfs += [os.path.join(self.roots[name], e)
                         for e in _select(tree, self.roots[name], None)]
            elif name in PACKAGE_FILES:
                elfs += [os.path.join(self.roots[name], e)
                         for e in _select(tree, self.roots[name], PACKAGE_FILES[name])]
        self._check_extra(options.extra, whole)
        for applet in rootfs.busybox_links(busybox):
            tree.setdefault(applet, Node.symlink("/bin/busybox"))
        self.progress("resolving shared libraries with the packaged ld.so")
        libs = self.libraries(packages, elfs)
        rootfs.add_libraries(tree, libs)
        libc = self.roots["libc6"]
        tree["lib64/ld-linux-x86-64.so.2"] = Node.symlink(
            "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        rootfs.add_libraries(tree, {rel: os.path.join(libc, rel) for rel in rootfs.LDSO_REL[:1]})
        if options.dpdk:
            missing = [p for p in variants.DPDK_PROGRAMS if p not in tree]
            if missing:
                raise GuestImageError(f"the DPDK guest lacks {', '.join(missing)}")
        modules = MODULES + (variants.DPDK_MODULES if options.dpdk else ())
        kver, vmlinuz = self.kernel(packages, tree, modules)
        self.progress(f"packing initramfs and extracting vmlinux (kernel {kver})")
        with open(vmlinuz, "rb") as fh:
            bzimage = fh.read()
        with ThreadPoolExecutor(max_workers=2) as pool:
            vml = pool.submit(kernel.extract_vmlinux, bzimage)
            initrd = cpio.gzip_bytes(cpio.pack(tree))
            vmlinux = vml.result()
        for name, blob in (("vmlinuz", bzimage), ("vmlinux", vmlinux), ("initrd.img", initrd)):
            with open(os.path.join(out_dir, name), "wb") as fh:
                fh.write(blob)
        owners = {name for name, root in self.roots.items() for path in libs.values()
                  if path.startswith(root.rstrip("/") + "/")}
        used = (owners | {"libc6", kpkg_name(packages)} | whole
                | (set(PACKAGE_FILES) & set(packages)) | (set(DISK_PACKAGES) if options.disk
                                                          else set()))
        return {n: p.version for n, p in sorted(packages.items()) if n in used}


def build(cache_dir: str, packages: Mapping[str, apt.Package], options: Options, key: str,
          arch: str, progress: Progress, whole: frozenset[str] = frozenset()
          ) -> dict[str, object]:
    """Build into ``cache_dir/key`` (atomically); return the manifest written there."""
    staging = tempfile.mkdtemp(prefix=".staging-", dir=cache_dir)
    out_tmp = tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir)
    try:
        builder = Builder(cache_dir, staging, arch, progress)
        versions = builder.run(dict(packages), options, out_tmp, whole)
        keys = ([hostkeys.OPENSSH_KEY, hostkeys.OPENSSH_KEY + ".pub"]
                if options.ssh == "openssh" else [hostkeys.DROPBEAR_KEY])
        manifest: dict[str, object] = {
            "key": key, "append": APPEND, "packages": versions,
            "hostkeys": keys, "hostkeys_digest": hostkeys.current_digest(cache_dir, keys),
            "disk": None,
        }
        if options.disk:
            progress("making the bootable disk image")
            manifest["disk"] = disk.make_disk(out_tmp, staging, builder.roots, APPEND, key,
                                              progress)
        with open(os.path.join(out_tmp, "manifest.json"), "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=1, sort_keys=True)
        final = os.path.join(cache_dir, key)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.rename(out_tmp, final)
        return manifest
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(out_tmp, ignore_errors=True)
