"""A deterministic ``newc`` cpio writer for initramfs images (pure).

Entries are written sorted by path with fixed inode numbers, mtime, uid/gid 0 and nlink 1,
so the same tree always gives the same bytes. gzip with ``mtime=0`` keeps the compressed
image byte-identical too.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Mapping
from dataclasses import dataclass

MTIME = 0


@dataclass(frozen=True)
class Node:
    """One entry of a file tree: a regular file, directory, symlink or device node."""

    kind: str  # "file", "dir", "symlink", "chr"
    mode: int = 0o644  # permission bits
    data: bytes = b""  # file contents, or the symlink target
    rdev: tuple[int, int] = (0, 0)  # major, minor of a device node

    @staticmethod
    def file(data: bytes, mode: int = 0o644) -> Node:
        """A regular file."""
        return Node("file", mode, data)

    @staticmethod
    def dir(mode: int = 0o755) -> Node:
        """A directory."""
        return Node("dir", mode)

    @staticmethod
    def symlink(target: str) -> Node:
        """A symbolic link to ``target``."""
        return Node("symlink", 0o777, target.encode())

    @staticmethod
    def chr(major: int, minor: int, mode: int = 0o600) -> Node:
        """A character device node."""
        return Node("chr", mode, b"", (major, minor))


_TYPE = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
         "chr": stat.S_IFCHR}


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, mode: int, nlink: int, size: int, rdev: tuple[int, int],
            namesize: int) -> bytes:
    fields = (ino, mode, 0, 0, nlink, MTIME, size, 0, 0, rdev[0], rdev[1], namesize, 0)
    return b"070701" + b"".join(b"%08X" % f for f in fields)


def with_parents(tree: Mapping[str, Node]) -> dict[str, Node]:
    """``tree`` plus a directory entry for every missing parent directory."""
    out = dict(tree)
    for path in tree:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            out.setdefault("/".join(parts[:i]), Node.dir())
    return out


def pack(tree: Mapping[str, Node]) -> bytes:
    """The newc archive of ``tree`` (paths relative, no leading ``/``), sorted, with trailer."""
    chunks: list[bytes] = []
    full = with_parents(tree)
    for ino, path in enumerate(sorted(full), start=1):
        node = full[path]
        name = path.encode() + b"\0"
        data = b"" if node.kind in ("dir", "chr") else node.data
        nlink = 2 if node.kind == "dir" else 1
        hdr = _header(ino, _TYPE[node.kind] | node.mode, nlink, len(data), node.rdev, len(name))
        chunks += [hdr, name, _pad(len(hdr) + len(name)), data, _pad(len(data))]
    name = b"TRAILER!!!\0"
    hdr = _header(0, 0, 1, 0, (0, 0), len(name))
    chunks += [hdr, name, _pad(len(hdr) + len(name))]
    return b"".join(chunks)


def gzip_bytes(data: bytes, level: int = 6) -> bytes:
    """gzip ``data`` with mtime 0 and no file name, so equal input gives equal output."""
    return gzip.compress(data, compresslevel=level, mtime=0)
