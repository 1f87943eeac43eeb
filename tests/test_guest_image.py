"""The test guest image: pure pieces (cpio, modules.dep, apt parsing) and real builds."""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path

import pytest
from support.guest import session_image

from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import (
    GuestImage,
    cpio,
    default_cache_dir,
    ensure_guest_image,
    kernel,
    rootfs,
)
from pytest_dtsvirt.guest import apt as guest_apt
from pytest_dtsvirt.guest.cpio import Node


def read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    """A reader written against the newc spec, independent of the writer: path -> (mode, data)."""
    out: dict[str, tuple[int, bytes]] = {}
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        mode, uid, gid, mtime, size, namesize = (fields[1], fields[2], fields[3], fields[5],
                                                 fields[6], fields[11])
        assert (uid, gid, mtime) == (0, 0, 0)
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += -pos % 4
        body = data[pos:pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, body)


# ---- pure pieces -----------------------------------------------------------------------------

def test_cpio_roundtrip_and_parents() -> None:
    tree = {"b/c/file": Node.file(b"hello", 0o755), "a": Node.symlink("/b/c/file"),
            "dev/console": Node.chr(5, 1)}
    arch = cpio.pack(tree)
    got = read_newc(arch)
    assert list(got) == ["a", "b", "b/c", "b/c/file", "dev", "dev/console"]
    assert got["b/c/file"] == (0o100755, b"hello")
    assert got["a"] == (0o120777, b"/b/c/file")
    assert got["b"][0] == 0o040755
    assert got["dev/console"][0] == 0o020600
    # the real cpio tool agrees
    if shutil.which("cpio"):
        import subprocess
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=arch, capture_output=True,
                                 check=True).stdout.decode().split()
        assert listing == list(got)


def test_cpio_and_gzip_are_deterministic() -> None:
    tree = {f"d/{i}": Node.file(bytes([i]) * i) for i in range(50)}
    reordered = dict(reversed(list(tree.items())))
    assert cpio.pack(tree) == cpio.pack(reordered)
    assert cpio.gzip_bytes(cpio.pack(tree)) == cpio.gzip_bytes(cpio.pack(reordered))
    assert gzip.decompress(cpio.gzip_bytes(b"x" * 100)) == b"x" * 100


def _info(name: str, *deps: str) -> kernel.ModInfo:
    return kernel.ModInfo(name, deps, (f"alias-{name}",), ())


def test_modules_dep_closure_and_load_order() -> None:
    infos = {"vxlan": _info("vxlan", "udp_tunnel", "ip6_udp_tunnel"),
             "ip6_udp_tunnel": _info("ip6_udp_tunnel", "udp_tunnel"),
             "udp_tunnel": _info("udp_tunnel"), "e1000": _info("e1000"),
             "unused": _info("unused")}
    need = kernel.closure(["vxlan", "e1000"], infos.get)
    assert sorted(need) == ["e1000", "ip6_udp_tunnel", "udp_tunnel", "vxlan"]
    paths = {n: f"kernel/{n}.ko" for n in infos}
    dep = kernel.modules_dep(need, infos, paths).splitlines()
    line = next(x for x in dep if x.startswith("kernel/vxlan.ko:"))
    deps = line.split(":")[1].split()
    # modprobe loads from the end: udp_tunnel must come after (load before) ip6_udp_tunnel
    assert deps.index("kernel/udp_tunnel.ko") > deps.index("kernel/ip6_udp_tunnel.ko")
    assert "kernel/e1000.ko:" in dep
    with pytest.raises(GuestImageError, match="nosuch"):
        kernel.closure(["nosuch"], infos.get)
    with pytest.raises(GuestImageError, match="missing_dep"):
        kernel.closure(["x"], {"x": _info("x", "missing_dep")}.get)


def test_apt_record_and_depends_parsing() -> None:
    text = ("Package: a\nVersion: 1:2.0-1\nArchitecture: amd64\nSHA256: ab\n"
            "Filename: pool/a.deb\nDescription: x\n more\n\nPackage: b\nVersion: 1\n")
    recs = guest_apt.parse_records(text)
    assert recs[0]["Description"] == "x\nmore" and recs[1]["Package"] == "b"
    pkg = guest_apt.to_package(recs[0])
    assert pkg.deb_name == "a_1%3a2.0-1_amd64.deb"
    assert guest_apt.parse_depends("libc6 (>= 2.34), libfoo1 | libbar2, x:any") == \
        ["libc6", "libfoo1", "x"]


@pytest.mark.parametrize(("soname", "package"), [
    ("libmnl.so.0", "libmnl0"), ("libpcre2-8.so.0", "libpcre2-8-0"),
    ("libgssapi_krb5.so.2", "libgssapi-krb5-2"), ("libz.so.1", "libz1"),
])
def test_soname_package_guess(soname: str, package: str) -> None:
    assert rootfs.soname_package_guess(soname) == package


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("DTSVIRT_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == str(tmp_path)
    monkeypatch.delenv("DTSVIRT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/y")
    assert default_cache_dir() == "/x/y/pytest-dtsvirt"


def test_missing_apt_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GuestImageError, match=r"apt-cache.*not found|not found.*apt"):
        ensure_guest_image(str(tmp_path))


def test_unknown_package_names_apt_get_update(tmp_path: object) -> None:
    with pytest.raises(GuestImageError, match=r"no-such-pkg-dtsvirt.*apt-get update"):
        ensure_guest_image(str(tmp_path), extra=("no-such-pkg-dtsvirt",))


def test_bzimage_check() -> None:
    with pytest.raises(GuestImageError, match="bzImage"):
        kernel.extract_vmlinux(b"\0" * 4096)


# ---- real builds -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def image() -> GuestImage:
    return session_image()


def test_image_contents(image: GuestImage) -> None:
    with open(image.vmlinux, "rb") as fh:
        assert fh.read(4) == b"\x7fELF"
    with open(image.kernel, "rb") as fh:
        assert fh.read(0x206)[0x202:] == b"HdrS"
    assert "console=ttyS0" in image.append
    assert any(n.startswith("linux-image-6") and n.endswith("-amd64") for n in image.packages)
    with open(image.initrd, "rb") as fh:
        files = read_newc(gzip.decompress(fh.read()))
    for path in ("init", "sbin/shutdown", "bin/busybox", "bin/ip", "usr/sbin/qemu-ga",
                 "usr/sbin/dropbear", "etc/dropbear/dropbear_ed25519_host_key",
                 "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
                 "usr/lib/x86_64-linux-gnu/libglib-2.0.so.0", "dev/console", "sbin/udhcpc"):
        assert path in files, path
    assert files["etc/shadow"][0] & 0o777 == 0o600
    # no usable root password in the image: the runtime sets one per VM through the agent
    assert files["etc/shadow"][1].startswith(b"root:*:")
    assert files["usr/sbin/chpasswd"][0] & 0o777 == 0o755  # for guest-set-user-password
    kver = next(p.split("/")[2] for p in files if p.startswith("lib/modules/") and
                p.count("/") == 2)
    dep = files[f"lib/modules/{kver}/modules.dep"][1].decode()
    vx = next(line for line in dep.splitlines() if "/vxlan.ko:" in line)
    assert "udp_tunnel.ko" in vx and "ip6_udp_tunnel.ko" in vx
    for line in dep.splitlines():  # every module named in modules.dep is in the image
        for mod in line.replace(":", " ").split():
            assert f"lib/modules/{kver}/{mod}" in files, mod
    assert "e1000.ko" in dep and "virtio_net.ko" in dep and "ext4.ko" in dep


def test_warm_call_reuses_the_cache(image: GuestImage) -> None:
    msgs: list[str] = []
    start = time.monotonic()
    again = ensure_guest_image(progress=msgs.append)
    took = time.monotonic() - start
    assert again == image
    assert msgs == [], msgs
    assert took < 3.0, took  # a rebuild takes tens of seconds


def _shared_cache(tmp: str) -> str:
    """A fresh cache dir that shares the downloaded .debs and the host keys."""
    base = default_cache_dir()
    os.makedirs(tmp, exist_ok=True)
    os.symlink(os.path.join(base, "debs"), os.path.join(tmp, "debs"))
    shutil.copytree(os.path.join(base, "hostkeys"), os.path.join(tmp, "hostkeys"))
    return tmp


def test_rebuild_is_byte_identical(image: GuestImage, tmp_path: object) -> None:
    cache = _shared_cache(os.path.join(str(tmp_path), "cache"))
    msgs: list[str] = []
    other = ensure_guest_image(cache, progress=msgs.append)
    assert any("building" in m for m in msgs)
    assert other.key == image.key
    assert other.initrd != image.initrd
    for a, b in ((other.initrd, image.initrd), (other.vmlinux, image.vmlinux)):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read(), a
    assert not [n for n in os.listdir(cache) if n.startswith(".staging")]


def test_cli_json(image: GuestImage, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pytest_dtsvirt.cli import main
    assert main(["image", "build", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["initrd"] == image.initrd and out["key"] == image.key
    assert set(out) >= {"kernel", "vmlinux", "initrd", "append", "disk", "key", "packages"}




def test_prune_removes_only_other_builds(tmp_path: Path) -> None:
    from pytest_dtsvirt.guest import prune_cache

    keep, old = "a" * 20, "0123456789abcdef0123"
    for name in (keep, old, "debs", "hostkeys", "resolved"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "f").write_text("x")
    (tmp_path / "0123456789abcdef0124.txt").write_text("not a build dir")
    removed = prune_cache(str(tmp_path), keep={keep})
    assert removed == [str(tmp_path / old)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "0123456789abcdef0124.txt", keep, "debs", "hostkeys", "resolved"]
