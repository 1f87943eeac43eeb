"""SSH host keys of the guest: generated once, kept in the cache, reused by every build so
the guest's identity (and the initramfs bytes) do not change between builds."""

from __future__ import annotations

import hashlib
import os
import subprocess

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pytest_dtsvirt.errors import GuestImageError

DROPBEAR_KEY = "dropbear_ed25519_host_key"
OPENSSH_KEY = "ssh_host_ed25519_key"


def keys_dir(cache_dir: str) -> str:
    """Where the host keys live."""
    return os.path.join(cache_dir, "hostkeys")


def _write_private(path: str, data: bytes) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(path + ".tmp", path)


def ensure_openssh(cache_dir: str) -> dict[str, bytes]:
    """The OpenSSH ed25519 host key pair (generated with ``cryptography`` on first use)."""
    d = keys_dir(cache_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, OPENSSH_KEY)
    if not os.path.exists(path) or not os.path.exists(path + ".pub"):
        key = Ed25519PrivateKey.generate()
        _write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.OpenSSH,
                                               serialization.NoEncryption()))
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH)
        with open(path + ".pub", "wb") as fh:
            fh.write(pub + b" root@dtsvirt-guest\n")
    out = {}
    for name in (OPENSSH_KEY, OPENSSH_KEY + ".pub"):
        with open(os.path.join(d, name), "rb") as fh:
            out[name] = fh.read()
    return out


def ensure_dropbear(cache_dir: str, ldso: str, libpath: str, dropbearkey: str) -> dict[str, bytes]:
    """The dropbear ed25519 host key, made on first use by the packaged ``dropbearkey``
    (run through the packaged loader, so no host library is involved)."""
    d = keys_dir(cache_dir)
    os.makedirs(d, mode=0o700, exist_ok=True)
    path = os.path.join(d, DROPBEAR_KEY)
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.new"
        proc = subprocess.run([ldso, "--library-path", libpath, dropbearkey, "-t", "ed25519",
                               "-f", tmp], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise GuestImageError(f"dropbearkey failed: {proc.stderr.strip()}")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    with open(path, "rb") as fh:
        return {DROPBEAR_KEY: fh.read()}


def current_digest(cache_dir: str, names: list[str]) -> str | None:
    """Hash of the named key files now in the cache, or None if one is missing."""
    keys = {}
    for name in names:
        try:
            with open(os.path.join(keys_dir(cache_dir), name), "rb") as fh:
                keys[name] = fh.read()
        except OSError:
            return None
    return digest(keys)


def digest(keys: dict[str, bytes]) -> str:
    """Hash of the given key files."""
    h = hashlib.sha256()
    for name in sorted(keys):
        h.update(name.encode() + b"\0" + keys[name])
    return h.hexdigest()
