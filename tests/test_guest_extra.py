"""``--extra PKG``: the package whole plus the dependencies apt resolves (real build, real boot)."""

from __future__ import annotations

import gzip
import logging

import pytest
from support.guest import booted, run, ssh
from test_guest_image import read_newc

from pytest_dtsvirt.cli import main
from pytest_dtsvirt.errors import GuestImageError
from pytest_dtsvirt.guest import aptdeps, ensure_guest_image
from pytest_dtsvirt.guest.apt import native_arch

SIMULATION = """\
NOTE: This is only a simulation!
Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [amd64])
Inst libpcap0.8 [1.10.2-1] (1.10.3-1 Debian:12.15/oldstable [amd64])
Inst libgcrypt20 (1.10.1-3+deb12u1 Debian:12.15/oldstable, Debian-Security:12 [amd64])
Conf libpcap0.8 (1.10.3-1 Debian:12.15/oldstable [amd64])
Inst python3:amd64 (3.11.2-1+b1 Debian:12.15/oldstable [amd64])
"""


def test_parse_simulation() -> None:
    assert aptdeps.parse_simulation(SIMULATION) == {
        "libc6": "2.36-9+deb12u14", "libpcap0.8": "1.10.3-1", "libgcrypt20": "1.10.1-3+deb12u1",
        "python3": "3.11.2-1+b1"}


def test_unknown_extra_is_a_clear_cli_error(capsys: pytest.CaptureFixture[str],
                                            tmp_path: object) -> None:
    assert main(["image", "build", "--cache-dir", str(tmp_path),
                 "--extra", "no-such-pkg-dtsvirt"]) == 1
    err = capsys.readouterr().err
    assert "no-such-pkg-dtsvirt" in err and "Unable to locate package" in err, err
    assert "Traceback" not in err


@pytest.mark.slow
def test_transitional_extra_fails_instead_of_an_empty_guest() -> None:
    # apt-transport-https is only documentation now; apt, its dependency, is base system
    with pytest.raises(GuestImageError, match=r"--extra apt-transport-https: neither the "
                                              r"package nor its direct dependencies"):
        ensure_guest_image(extra=("apt-transport-https",))


@pytest.mark.slow
def test_extra_brings_its_dependencies_libraries_and_runs_in_the_guest() -> None:
    # tcpdump's binary needs libpcap.so.0.8 (package libpcap0.8) and libcrypto.so.3 (libssl3):
    # neither soname names its package, apt's resolution brings them
    image = ensure_guest_image(extra=("tcpdump",), progress=logging.getLogger("dtsvirt").info)
    versions = aptdeps.closure(["tcpdump"], native_arch())
    for name in ("tcpdump", "libpcap0.8", "libssl3"):
        assert image.packages.get(name) == versions[name], name
    with open(image.initrd, "rb") as fh:
        files = read_newc(gzip.decompress(fh.read()))
    assert "usr/bin/tcpdump" in files
    assert "usr/lib/x86_64-linux-gnu/libpcap.so.0.8" in files
    with booted(image, "fast") as vm:
        rc, out = run(ssh(vm, timeout=120), "tcpdump --version")
        assert rc == 0 and "libpcap version 1." in out and "OpenSSL 3" in out, out
