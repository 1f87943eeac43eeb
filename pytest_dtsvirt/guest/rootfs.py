"""Assemble the guest's file tree from unpacked packages (reads files; runs the packaged
``ld.so --list`` and ``busybox --list-full``; never uses the host's libraries)."""

from __future__ import annotations

import os
import re
import stat
import struct
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest.cpio import Node

LIB_SUBDIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib")
LDSO_REL = ("lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
SKIP_PREFIXES = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/lintian",
                 "usr/share/locale", "usr/share/bash-completion", "usr/lib/systemd",
                 "lib/systemd", "lib/udev", "etc/init.d", "usr/share/zsh")
_LDD_LINE = re.compile(r"^\s*(\S+)(?: => (.*?))?(?: \(0x[0-9a-f]+\))?$")


def is_dynamic(path: str) -> bool:
    """True for an ELF64 file with a PT_INTERP header (a dynamically linked program).

    Shared libraries without an interpreter are dynamic too; only static executables
    (which the packaged loader cannot --list) are excluded.
    """
    with open(path, "rb") as fh:
        head = fh.read(64)
        if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        e_type, = struct.unpack_from("<H", head, 0x10)
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    types = {struct.unpack_from("<I", table, i * phentsize)[0] for i in range(phnum)}
    return 3 in types or (e_type == 3 and 2 in types)  # PT_INTERP, or a .so with PT_DYNAMIC


def add_path(tree: dict[str, Node], root: str, rel: str) -> list[str]:
    """Copy ``root/rel`` (file, symlink or directory, recursively) into ``tree``.

    Returns the relative paths of the ELF files added.
    """
    full = os.path.join(root, rel)
    st = os.lstat(full)
    elfs: list[str] = []
    if stat.S_ISLNK(st.st_mode):
        tree[rel] = Node.symlink(os.readlink(full))
    elif stat.S_ISDIR(st.st_mode):
        tree[rel] = Node.dir(stat.S_IMODE(st.st_mode))
        for name in sorted(os.listdir(full)):
            sub = f"{rel}/{name}"
            if not sub.startswith(SKIP_PREFIXES):
                elfs += add_path(tree, root, sub)
    elif stat.S_ISREG(st.st_mode):
        with open(full, "rb") as fh:
            data = fh.read()
        tree[rel] = Node.file(data, stat.S_IMODE(st.st_mode))
        if data[:4] == b"\x7fELF":
            elfs.append(rel)
    return elfs


def has_payload(root: str) -> bool:
    """True when the unpacked package at ``root`` has a file the guest would get (not only
    documentation, lintian overrides and the like)."""
    for dirpath, dirnames, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        dirnames[:] = [d for d in dirnames if d != "DEBIAN" and
                       not os.path.join(rel, d).lstrip("./").startswith(SKIP_PREFIXES)]
        if rel != "." and rel.startswith(SKIP_PREFIXES):
            continue
        if files:
            return True
    return False


def busybox_links(busybox: str) -> list[str]:
    """Applet paths (``sbin/ip``, ...) of a static busybox, from ``busybox --list-full``."""
    proc = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise GuestImageError(f"{busybox} --list-full failed: {proc.stderr.strip()}")
    return sorted(line.strip().lstrip("/") for line in proc.stdout.splitlines() if line.strip())


def find_ldso(roots: Iterable[str]) -> str:
    """The packaged dynamic loader (from the unpacked libc6)."""
    for root in roots:
        for rel in LDSO_REL:
            path = os.path.join(root, rel)
            if os.path.isfile(path) and not os.path.islink(path):
                return path
    raise GuestImageError("the unpacked libc6 has no ld-linux-x86-64.so.2")


def library_path(roots: Sequence[str]) -> str:
    """``--library-path`` value covering every unpacked package's library directories."""
    dirs = [os.path.join(r, d) for r in roots for d in LIB_SUBDIRS]
    return ":".join(d for d in dirs if os.path.isdir(d))


def list_libs(ldso: str, libpath: str, binary: str,
              roots: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """Shared libraries ``binary`` needs, by the packaged ``ld.so --list``.

    Returns (guest path -> host file for each library found in an unpacked package,
    sonames not found in any unpacked package). Libraries the loader found only on the host
    count as not found: the host's libraries never go into the guest.
    """
    if not is_dynamic(binary):
        return {}, set()
    proc = subprocess.run([ldso, "--inhibit-cache", "--library-path", libpath, "--list", binary],
                          capture_output=True, text=True, check=False,
                          env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        if "not a dynamic executable" in proc.stdout + proc.stderr:
            return {}, set()
        raise GuestImageError(f"ld.so --list {binary} failed: {proc.stderr.strip()}")
    found: dict[str, str] = {}
    missing: set[str] = set()
    for line in proc.stdout.splitlines():
        m = _LDD_LINE.match(line)
        if m is None:
            continue
        soname, target = m.group(1), m.group(2)
        if soname.startswith("linux-vdso") or (target is None and soname.startswith("/")):
            continue
        if target is None or target == "not found":
            missing.add(soname)
            continue
        for root in roots:
            prefix = root.rstrip("/") + "/"
            if target.startswith(prefix):
                found[target[len(prefix):]] = target
                break
        else:
            missing.add(soname)
    return found, missing


def soname_package_guess(soname: str) -> str:
    """Debian's library package name for a soname (policy 8.1): libfoo.so.1 -> libfoo1."""
    base, _, version = soname.partition(".so.")
    base = base.lower().replace("_", "-")
    if not version:
        return base
    major = version.split(".")[0]
    return f"{base}-{major}" if base[-1:].isdigit() else f"{base}{major}"


def add_libraries(tree: dict[str, Node], libs: Mapping[str, str]) -> None:
    """Put each library's file content at its soname path (no symlink chains needed).

    A path already in ``tree`` (a package that went in whole) is kept: a DPDK plugin must be
    the same file under its library path and in the plugin directory, or it loads twice.
    """
    for rel, host_path in libs.items():
        if rel in tree:
            continue
        real = os.path.realpath(host_path)
        with open(real, "rb") as fh:
            tree[rel] = Node.file(fh.read(), 0o755)


def guest_file(name: str) -> bytes:
    """A file shipped in ``pytest_dtsvirt/guest/files``."""
    return resources.files("pytest_dtsvirt.guest").joinpath("files", name).read_bytes()




def base_tree(ssh: str, hostkeys: Mapping[str, bytes]) -> dict[str, Node]:
    """The guest's own files: init, shutdown, accounts, scripts, host keys, device nodes."""
    tree: dict[str, Node] = {
        "init": Node.file(guest_file("init"), 0o755),
        "sbin/shutdown": Node.file(guest_file("shutdown"), 0o755),
        "bin/rootsh": Node.file(guest_file("rootsh"), 0o755),
        "etc/profile": Node.file(guest_file("profile")),
        "etc/profile.d/iproute2.sh": Node.file(guest_file("iproute2.sh")),
        "etc/udhcpc.script": Node.file(guest_file("udhcpc.script"), 0o755),
        "etc/inittab": Node.file(guest_file("inittab")),
        "etc/passwd": Node.file(guest_file("passwd")),
        "etc/group": Node.file(guest_file("group")),
        "etc/shadow": Node.file(guest_file("shadow"), 0o600),
        "usr/sbin/chpasswd": Node.file(guest_file("chpasswd"), 0o755),
        "etc/shells": Node.file(guest_file("shells")),
        "etc/hosts": Node.file(guest_file("hosts")),
        "etc/hostname": Node.file(b"dtsvirt-guest\n"),
        "etc/resolv.conf": Node.file(b""),
        "etc/mtab": Node.symlink("/proc/self/mounts"),  # e2fsck's "is it mounted" check
        "dev/console": Node.chr(5, 1),
        "dev/null": Node.chr(1, 3, 0o666),
        "root": Node.dir(0o700),
        "proc": Node.dir(), "sys": Node.dir(), "dev": Node.dir(), "run": Node.dir(),
        "tmp": Node.dir(0o1777), "var/run": Node.symlink("/run"), "var/tmp": Node.dir(0o1777),
        "lib/modules": Node.dir(),
    }
    if ssh == "openssh":
        tree["etc/ssh/sshd_config"] = Node.file(guest_file("sshd_config"))
        for name, data in hostkeys.items():
            tree[f"etc/ssh/{name}"] = Node.file(data, 0o600 if not name.endswith(".pub")
                                                else 0o644)
    else:
        for name, data in hostkeys.items():
            tree[f"etc/dropbear/{name}"] = Node.file(data, 0o600)
    return tree
