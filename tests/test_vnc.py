"""VNC with real qemu (paused, ``-S``): only when asked for, password-protected, display
search from a base with the display read back, a taken display said in the log.

The RFB handshake is spoken here: qemu must offer VNC authentication only (never "None"),
refuse a wrong password and accept the one the runtime set through QMP.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from pytest_dtsvirt.config.cfgfile import parse_cfg
from pytest_dtsvirt.config.load import params_for_section
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.qemu.access import VNC_PORT_BASE, Access
from pytest_dtsvirt.qemu.argv import build_argv
from pytest_dtsvirt.qemu.check import local_placement
from pytest_dtsvirt.qemu.qmp import Qmp

NO_KERNEL = "disk = file=/dev/null,opt_format=raw;\n"


def spec_of(text: str) -> VmSpec:
    s, _ = params_for_section(parse_cfg("[vm0]\n" + text, "t.cfg").section("vm0"),
                              "t.cfg").build()
    return s


@contextlib.contextmanager
def paused_qemu(spec: VmSpec) -> Iterator[Qmp]:
    """qemu for ``spec`` started paused, with its QMP connected; ended by PID."""
    run_dir = tempfile.mkdtemp(prefix="dtsvirt-vnc-")
    placement = local_placement(spec, "tcg", run_dir)
    argv = [*build_argv(spec, placement), "-S"]
    with open(placement.qemu_log, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(placement.qmp_socket):
            assert proc.poll() is None, Path(placement.qemu_log).read_text()
            assert time.monotonic() < deadline, "no QMP socket"
            time.sleep(0.02)
        with Qmp.open(placement.qmp_socket, 10) as qmp:
            yield qmp
    finally:
        proc.kill()
        proc.wait(10)
        subprocess.run(["rm", "-rf", "--", run_dir], check=True)


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"closed after {data!r}")
        data += chunk
    return data


def rfb_login(port: int, password: str | None) -> tuple[list[int], bool]:
    """RFB 3.8 handshake: (security types offered, whether ``password`` was accepted)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        assert _recv(s, 12).startswith(b"RFB 003.")
        s.sendall(b"RFB 003.008\n")
        types = list(_recv(s, _recv(s, 1)[0]))
        if password is None or 2 not in types:
            return types, False
        s.sendall(bytes([2]))
        challenge = _recv(s, 16)
        key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
        enc = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
        s.sendall(enc.update(challenge) + enc.finalize())
        (status,) = struct.unpack(">I", _recv(s, 4))
        return types, status == 0


def test_no_vnc_unless_asked_for() -> None:
    argv = build_argv(spec_of(NO_KERNEL), local_placement(spec_of(NO_KERNEL), "tcg", "/r"))
    assert "-vnc" not in argv and argv[argv.index("-display") + 1] == "none"


def test_vnc_is_password_protected_and_reads_back_its_display(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    access = Access("vm0")
    with paused_qemu(spec_of(NO_KERNEL + "vnc = listen=127.0.0.1;\n")) as qmp:
        access.setup_vnc(qmp.command, None)
        assert access.vnc_display is not None and access.vnc_display >= 0
        port = VNC_PORT_BASE + access.vnc_display
        assert access.vnc_where == f"127.0.0.1:{port}"
        password = access.vnc_password
        assert password and len(password) == 8
        assert rfb_login(port, None)[0] == [2]  # VNC authentication only, never "None"
        assert rfb_login(port, "wrong-pw") == ([2], False)
        assert rfb_login(port, password) == ([2], True)
        assert Access("vm1").vnc_password != password
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"vm0: VNC on 127.0.0.1 display {access.vnc_display} (port {port}), " \
           "password-protected" in logged
    assert "set_password" in logged or "VNC on" in logged
    assert password not in logged  # QMP traffic is logged at DEBUG: masked


def test_before_the_password_is_set_nobody_gets_in() -> None:
    with paused_qemu(spec_of(NO_KERNEL + "vnc = listen=127.0.0.1;\n")) as qmp:
        info = qmp.command("query-vnc")
        types, ok = rfb_login(int(info["service"]), "")
        assert types == [2] and not ok


def test_a_taken_display_is_said_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with socket.socket() as blocker:
        for display in range(60, 90):  # a display nobody uses here
            try:
                blocker.bind(("127.0.0.1", VNC_PORT_BASE + display))
                break
            except OSError:
                continue
        blocker.listen()
        access = Access("vm0")
        with paused_qemu(spec_of(NO_KERNEL + f"vnc = displayNum={display};\n")) as qmp:
            access.setup_vnc(qmp.command, display)
        assert access.vnc_display is not None and access.vnc_display > display
    assert (f"vm0: VNC display {display} is taken; qemu chose display {access.vnc_display} "
            f"(127.0.0.1 port {VNC_PORT_BASE + access.vnc_display})") in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)
