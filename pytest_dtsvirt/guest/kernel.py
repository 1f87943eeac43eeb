"""Kernel pieces of the guest (pure): vmlinux from a bzImage, module info and modules.dep."""

from __future__ import annotations

import lzma
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from pytest_dtsvirt.errors import GuestImageError

XZ_MAGIC = b"\xfd7zXZ\x00"


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The uncompressed ELF ``vmlinux`` inside an XZ-compressed x86 ``bzImage``.

    Booting it directly (PVH entry) saves the ~2.4 s the bzImage spends decompressing
    itself under TCG.
    """
    if len(bzimage) < 0x250 or bzimage[0x202:0x206] != b"HdrS":
        raise GuestImageError("not an x86 bzImage (no HdrS setup header)")
    setup_sects = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + payload_offset
    payload = bzimage[start:start + payload_length]
    if not payload.startswith(XZ_MAGIC):
        pos = bzimage.find(XZ_MAGIC)
        if pos < 0:
            raise GuestImageError("bzImage payload is not XZ-compressed; cannot extract vmlinux")
        payload = bzimage[pos:]
    try:
        out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
    except lzma.LZMAError as exc:
        raise GuestImageError(f"cannot decompress the bzImage payload: {exc}")
    if not out.startswith(b"\x7fELF"):
        raise GuestImageError("the decompressed bzImage payload is not an ELF vmlinux")
    return out


def elf_section(data: bytes, wanted: str) -> bytes | None:
    """Contents of section ``wanted`` of a little-endian ELF64 file, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i: int) -> tuple[int, int, int]:
        base = shoff + i * shentsize
        name, = struct.unpack_from("<I", data, base)
        offset, size = struct.unpack_from("<QQ", data, base + 0x18)
        return name, offset, size

    _, str_off, str_size = header(shstrndx)
    names = data[str_off:str_off + str_size]
    for i in range(shnum):
        name_off, offset, size = header(i)
        end = names.find(b"\0", name_off)
        if names[name_off:end].decode(errors="replace") == wanted:
            return data[offset:offset + size]
    return None


def module_name(path: str) -> str:
    """``kernel/net/ipv4/udp_tunnel.ko`` -> ``udp_tunnel`` (dashes normalized)."""
    base = path.rsplit("/", 1)[-1]
    return base.removesuffix(".ko").replace("-", "_")


@dataclass(frozen=True)
class ModInfo:
    """What modules.dep and modules.alias need from a module's ``.modinfo``."""

    name: str
    depends: tuple[str, ...]
    aliases: tuple[str, ...]
    softdeps: tuple[str, ...]


def parse_modinfo(path: str, data: bytes) -> ModInfo:
    """Read ``depends=``, ``alias=`` and ``softdep=`` from a ``.ko`` file's ``.modinfo``."""
    section = elf_section(data, ".modinfo") or b""
    depends: tuple[str, ...] = ()
    aliases: list[str] = []
    softdeps: list[str] = []
    for item in section.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if not sep:
            continue
        if key == "depends":
            depends = tuple(d.replace("-", "_") for d in value.split(",") if d)
        elif key == "alias":
            aliases.append(value)
        elif key == "softdep":
            softdeps += [w.replace("-", "_") for w in value.split() if not w.endswith(":")]
    return ModInfo(module_name(path), depends, tuple(aliases), tuple(softdeps))


def closure(wanted: Iterable[str], info: Callable[[str], ModInfo | None]) -> dict[str, ModInfo]:
    """Modules needed for ``wanted`` plus their dependencies and the softdeps that exist.

    ``info(name)`` returns a module's info or None when the kernel has no such module; it is
    called only for modules in the closure, so only those need reading.
    """
    need: dict[str, ModInfo] = {}
    stack = [w.replace("-", "_") for w in wanted]
    missing = [w for w in stack if info(w) is None]
    if missing:
        raise GuestImageError(f"kernel package has no module(s): {', '.join(missing)}")
    while stack:
        name = stack.pop()
        if name in need:
            continue
        found = info(name)
        if found is None:
            raise GuestImageError(f"module dependency {name!r} is not in the kernel package")
        need[name] = found
        stack += list(found.depends) + [s for s in found.softdeps if info(s) is not None]
    return need


def modules_dep(names: Iterable[str], infos: Mapping[str, ModInfo],
                paths: Mapping[str, str]) -> str:
    """``modules.dep`` text in depmod's format: each module, then its dependencies so that
    loading from the end of the line to the start satisfies every dependency."""
    def visit(mod: str, seen: set[str], order: list[str]) -> None:
        if mod in seen:
            return
        seen.add(mod)
        for dep in infos[mod].depends:
            visit(dep, seen, order)
        order.append(mod)  # post-order: a module after everything it needs

    lines = []
    for name in sorted(names, key=lambda n: paths[n]):
        order: list[str] = []
        visit(name, set(), order)
        deps = [paths[m] for m in reversed(order) if m != name]
        lines.append(f"{paths[name]}:{''.join(' ' + d for d in deps)}")
    return "\n".join(lines) + "\n"


def modules_alias(names: Iterable[str], infos: Mapping[str, ModInfo]) -> str:
    """``modules.alias`` text for the given modules."""
    out = [f"alias {alias} {name}" for name in sorted(names) for alias in infos[name].aliases]
    return "\n".join(out) + "\n"
