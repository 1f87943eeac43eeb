"""SHA-512 crypt(3) on the host (the guest password is sent hashed)."""

from __future__ import annotations

import re

import pytest

from pytest_dtsvirt.shacrypt import sha512_crypt, shadow_with_hash


def test_the_specifications_vectors() -> None:
    # from Drepper's "Unix crypt using SHA-256 and SHA-512" test vectors
    assert sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFd"
        "cbYEdFCoEOfaS35inz1")
    assert sha512_crypt("Hello world!", "saltstringsaltstring", 10000) == (
        "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/Ur"
        "jmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.")
    # checked against glibc's crypt(3); rounds below 1000 count as 1000, as in glibc
    low = ("$6$rounds=1000$roundstoolow$yjTuW7RnC.d35QcVTFIb6uvh/7IQ1.GFtFN3i/.jwmeWEhzjf4uD/"
           "OPCb4jRl6atJGYhLst8IyR6YAtTrriMU1")
    pw = "we have a short salt string but not a short password"
    assert sha512_crypt(pw, "roundstoolow", 1000) == low
    assert sha512_crypt(pw, "roundstoolow", 10) == low


def test_random_salt_and_bad_salt() -> None:
    a, b = sha512_crypt("pw", rounds=1000), sha512_crypt("pw", rounds=1000)
    assert a != b and re.fullmatch(r"\$6\$rounds=1000\$[./0-9A-Za-z]{16}\$[./0-9A-Za-z]{86}", a)
    with pytest.raises(ValueError, match="salt"):
        sha512_crypt("pw", "bad$salt")


def test_shadow_with_hash_replaces_only_the_users_password_field() -> None:
    shadow = "root:*:19000:0:99999:7:::\nroot2:x:1::::::\ndaemon:*:19000::::::\n"
    out = shadow_with_hash(shadow, "root", "$6$s$h")
    assert out == "root:$6$s$h:19000:0:99999:7:::\nroot2:x:1::::::\ndaemon:*:19000::::::\n"
    assert shadow_with_hash(shadow, "alice", "$6$s$h") is None
    assert shadow_with_hash("root:*:1::::::", "root", "h") == "root:h:1::::::"  # no newline
    for bad in ("", "a:b", "a\nb"):
        with pytest.raises(ValueError):
            shadow_with_hash(shadow, "root", bad)
