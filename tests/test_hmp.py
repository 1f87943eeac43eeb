"""The HMP helper: the ``info pci`` parser on captured text, and a real qemu."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from pytest_dtsvirt.errors import VmError
from pytest_dtsvirt.qemu.hmp import Hmp, parse_info_pci, strip_terminal
from pytest_dtsvirt.qemu.qmp import Qmp

# The example in reference/virtualization-framework.rst ("Qemu Monitor").
REFERENCE_EXAMPLE = """\
\tBus  0, device   4, function 0:
\t\tEthernet controller: PCI device 8086:10ed
\t\t  BAR0: 64 bit memory at 0xfebb0000 [0xfebb3fff].
\t\t  BAR3: 64 bit memory at 0xfebb4000 [0xfebb7fff].
\t\t  id "pt_0"
\tBus  0, device   5, function 0:
\t\tEthernet controller: PCI device 8086:10ed
\t\t  BAR0: 64 bit memory at 0xfebb8000 [0xfebbbfff].
\t\t  BAR3: 64 bit memory at 0xfebbc000 [0xfebbffff].
\t\t  id "pt_1"
"""

# Captured from qemu 7.2.22 over the -monitor unix socket (after the echo line), shortened.
CAPTURED = (
    '  Bus  0, device   0, function 0:\r\n    Host bridge: PCI device 8086:1237\r\n'
    '      PCI subsystem 1af4:1100\r\n      id ""\r\n'
    '  Bus  0, device   4, function 0:\r\n    Ethernet controller: PCI device 8086:100e\r\n'
    '      IRQ 0, pin A\r\n      BAR0: 32 bit memory at 0xffffffffffffffff [0x0001fffe].\r\n'
    '      id "pt_0"\r\n'
    '  Bus  0, device  16, function 2:\r\n    Ethernet controller: PCI device 8086:100e\r\n'
    '      id "pt_1"\r\n'
    '  Bus  0, device  31, function 0:\r\n    Ethernet controller: PCI device 8086:100e\r\n'
    '      BAR1: I/O at 0xffffffffffffffff [0x003e].\r\n      id "hc"\r\n'
)


def test_parse_reference_example() -> None:
    assert parse_info_pci(REFERENCE_EXAMPLE) == {"pt_0": "00:04.0", "pt_1": "00:05.0"}


def test_parse_reads_decimal_numbers() -> None:
    """``device 31`` is slot 0x1f and ``device 16`` is 0x10 (the legacy parser read hex)."""
    assert parse_info_pci(CAPTURED) == {"pt_0": "00:04.0", "pt_1": "00:10.2", "hc": "00:1f.0"}


def test_parse_bridge_bus_and_no_ids() -> None:
    text = '  Bus 12, device   2, function 7:\n      id "x"\n  Bus  0, device 3, function 0:\n'
    assert parse_info_pci(text) == {"x": "0c:02.7"}
    assert parse_info_pci("") == {}


def test_strip_terminal() -> None:
    echo = "i\x1b[K\x1b[Din\x1b[K\x1b[D\x1b[Dinfo pci\x1b[K\r\n"
    assert strip_terminal(echo) == "iininfo pci\n"


@pytest.fixture
def qemu_sockets() -> Iterator[tuple[str, str, subprocess.Popen[bytes]]]:
    with tempfile.TemporaryDirectory(prefix="dtsvirt-hmp-") as tmp:
        qmp_path, hmp_path = os.path.join(tmp, "qmp.sock"), os.path.join(tmp, "hmp.sock")
        argv = ["qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults", "-display", "none",
                "-machine", "pc", "-m", "64",
                "-chardev", f"socket,id=qmp,path={qmp_path},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-monitor", f"unix:{hmp_path},server=on,wait=off",
                "-device", "e1000,id=pt_0,addr=04", "-device", "e1000,id=pt_1,addr=0x10.2",
                "-device", "e1000,id=pt_2,addr=0x10.0,multifunction=on",
                "-device", "e1000,id=hc,addr=1f"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not (os.path.exists(qmp_path) and os.path.exists(hmp_path)):
                assert proc.poll() is None, "qemu exited"
                assert time.monotonic() < deadline, "qemu sockets did not appear"
                time.sleep(0.02)
            yield qmp_path, hmp_path, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def test_real_qemu_info_pci_matches_qmp(
        qemu_sockets: tuple[str, str, subprocess.Popen[bytes]]) -> None:
    qmp_path, hmp_path, proc = qemu_sockets
    with Hmp.open(hmp_path, timeout=5) as hmp:
        assert hmp.banner.startswith("QEMU ")
        assert hmp.command("info status") == "VM status: paused (prelaunch)\n"
        hmp_map = hmp.info_pci()
        assert hmp_map == {"pt_0": "00:04.0", "pt_1": "00:10.2", "pt_2": "00:10.0",
                           "hc": "00:1f.0"}
        assert hmp.command("info name") == ""  # no output, still in step with the prompt
        with pytest.raises(ValueError):
            hmp.command("info pci\ninfo status")
        with Qmp.open(qmp_path, timeout=5) as qmp:
            assert qmp.pci_map("") == hmp_map
            qmp.quit()
    assert proc.wait(5) == 0


def test_real_qemu_answer_after_a_timeout_goes_to_its_own_command(
        qemu_sockets: tuple[str, str, subprocess.Popen[bytes]]) -> None:
    """A command that times out (qemu stopped) does not hand its late answer to the next."""
    _qmp_path, hmp_path, proc = qemu_sockets
    with Hmp.open(hmp_path, timeout=5) as hmp:
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(VmError, match="no prompt after 'info pci'"):
                hmp.command("info pci", timeout=0.5)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        assert hmp.command("info status", timeout=10) == "VM status: paused (prelaunch)\n"
        assert hmp.command("info name", timeout=10) == ""


class _ScriptedMonitor:
    """The far end of an HMP socket: a banner, then the lines the client sends, on demand."""

    def __init__(self) -> None:
        self.client_sock, self._peer = socket.socketpair()
        self._peer.sendall(b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) ")
        self._received = b""

    def lines(self) -> list[str]:
        """The lines the client has sent so far."""
        self._peer.setblocking(False)
        try:
            while chunk := self._peer.recv(4096):
                self._received += chunk
        except BlockingIOError:
            pass
        return self._received.decode().splitlines()

    def answer(self, line: str, output: str) -> None:
        self._peer.sendall(f"{line}\r\n{output}(qemu) ".encode())

    def close(self) -> None:
        self._peer.close()


@pytest.fixture
def after_a_timeout() -> Iterator[tuple[_ScriptedMonitor, Hmp]]:
    """A scripted monitor and a client whose command ``info slow`` has just timed out."""
    peer = _ScriptedMonitor()
    try:
        with Hmp(peer.client_sock, timeout=5) as hmp:
            with pytest.raises(VmError, match="no prompt after 'info slow'"):
                hmp.command("info slow", timeout=0.2)
            yield peer, hmp
    finally:
        peer.close()


def test_late_answer_is_dropped_before_the_next_command_is_sent(
        after_a_timeout: tuple[_ScriptedMonitor, Hmp]) -> None:
    peer, hmp = after_a_timeout
    timer = threading.Timer(0.3, peer.answer, ("info slow", "slow output\r\n"))
    timer.start()
    reply: list[str] = []
    asker = threading.Thread(target=lambda: reply.append(hmp.command("info fast")))
    asker.start()
    deadline = time.monotonic() + 5
    while peer.lines() != ["info slow", "info fast"]:
        assert time.monotonic() < deadline, f"client sent {peer.lines()}"
        time.sleep(0.02)
    timer.join()  # the late answer is out before the one asked for now
    peer.answer("info fast", "fast output\r\n")
    asker.join(5)
    assert reply == ["fast output\n"]


def test_no_command_is_sent_while_a_late_answer_is_missing(
        after_a_timeout: tuple[_ScriptedMonitor, Hmp]) -> None:
    peer, hmp = after_a_timeout
    with pytest.raises(VmError, match="no prompt after the late answer to 'info slow'"):
        hmp.command("info fast", timeout=0.2)
    assert peer.lines() == ["info slow"]


def test_open_missing_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(VmError, match="cannot connect"):
        Hmp.open(os.path.join(tmp, "hmp.sock"), 1)
