"""SHA-512 ``crypt(3)`` hashes (``$6$``, Drepper's SHA-crypt) computed on the host (pure).

The test guest's password is set per VM through the agent; hashing it on the host and
writing the hash into the guest's ``/etc/shadow`` through the agent's file commands
(:func:`shadow_with_hash`) spares the guest its ``chpasswd`` (a shell, ``mkpasswd``,
``awk``, ``mv``), which under TCG right after a restore costs 0.1-0.4 s. The
stdlib ``crypt`` module is deprecated (and gone in Python 3.13), hence this implementation.
"""

from __future__ import annotations

import hashlib
import secrets

_ITOA64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: the byte triples of the final digest, in the order SHA-crypt encodes them
_ORDER = [(0, 21, 42), (22, 43, 1), (44, 2, 23), (3, 24, 45), (25, 46, 4), (47, 5, 26),
          (6, 27, 48), (28, 49, 7), (50, 8, 29), (9, 30, 51), (31, 52, 10), (53, 11, 32),
          (12, 33, 54), (34, 55, 13), (56, 14, 35), (15, 36, 57), (37, 58, 16),
          (59, 17, 38), (18, 39, 60), (40, 61, 19), (62, 20, 41)]
DEFAULT_ROUNDS = 5000
MIN_ROUNDS, MAX_ROUNDS = 1000, 999_999_999


def _b64(value: int, chars: int) -> str:
    out = []
    for _ in range(chars):
        out.append(_ITOA64[value & 0x3F])
        value >>= 6
    return "".join(out)


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def sha512_crypt(password: str, salt: str | None = None, rounds: int | None = None) -> str:
    """The ``$6$`` hash of ``password`` (``salt``: at most 16 characters of ``./0-9A-Za-z``,
    random when None; ``rounds`` clamped to 1000..999999999, 5000 when None)."""
    if salt is None:
        salt = "".join(secrets.choice(_ITOA64) for _ in range(16))
    if any(c not in _ITOA64 for c in salt):
        raise ValueError("sha512_crypt: the salt may use ./0-9A-Za-z only")
    pw, sb = password.encode(), salt[:16].encode()
    n = DEFAULT_ROUNDS if rounds is None else min(max(rounds, MIN_ROUNDS), MAX_ROUNDS)
    b = hashlib.sha512(pw + sb + pw).digest()
    a = hashlib.sha512(pw + sb + _repeat(b, len(pw)))
    length = len(pw)
    while length:
        a.update(b if length & 1 else pw)
        length >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(pw * len(pw)).digest(), len(pw))
    s = _repeat(hashlib.sha512(sb * (16 + c[0])).digest(), len(sb))
    for i in range(n):
        ctx = hashlib.sha512(p if i & 1 else c)
        if i % 3:
            ctx.update(s)
        if i % 7:
            ctx.update(p)
        ctx.update(c if i & 1 else p)
        c = ctx.digest()
    text = "".join(_b64((c[x] << 16) | (c[y] << 8) | c[z], 4) for x, y, z in _ORDER)
    text += _b64(c[63], 2)
    prefix = "$6$" if rounds is None else f"$6$rounds={n}$"
    return f"{prefix}{sb.decode()}${text}"


def shadow_with_hash(shadow: str, user: str, hashed: str) -> str | None:
    """``/etc/shadow`` text with ``user``'s password field set to ``hashed`` (pure); None
    when there is no such user. ValueError for a hash that would break the file."""
    if not hashed or any(c in hashed for c in ":\n"):
        raise ValueError("shadow_with_hash: the hash must not be empty or hold ':' or a newline")
    lines = shadow.splitlines(keepends=True)
    for i, line in enumerate(lines):
        fields = line.split(":")
        if len(fields) >= 2 and fields[0] == user:
            fields[1] = hashed
            lines[i] = ":".join(fields)
            return "".join(lines)
    return None


__all__ = ["DEFAULT_ROUNDS", "MIN_ROUNDS", "sha512_crypt", "shadow_with_hash"]
