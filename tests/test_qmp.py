"""The QMP facade: against a real qemu (-S, no guest) and a scripted peer for failures."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pytest_dtsvirt.errors import QmpError, VmError
from pytest_dtsvirt.qemu.qmp import PciDevice, Qmp, parse_query_pci, pci_map_of

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": []}}


@dataclass
class Qemu:
    proc: subprocess.Popen[bytes]
    qmp_path: str
    hmp_path: str


def wait_for_socket(path: str, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"qemu exited: {proc.stderr.read()!r}" if proc.stderr else ""
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


@pytest.fixture
def qemu() -> Iterator[Qemu]:
    with tempfile.TemporaryDirectory(prefix="dtsvirt-qmp-") as tmp:
        qmp_path, hmp_path = os.path.join(tmp, "qmp.sock"), os.path.join(tmp, "hmp.sock")
        argv = ["qemu-system-x86_64", "-S", "-accel", "tcg", "-nodefaults", "-display", "none",
                "-machine", "pc", "-smp", "2", "-m", "64",
                "-chardev", f"socket,id=qmp,path={qmp_path},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-monitor", f"unix:{hmp_path},server=on,wait=off",
                "-device", "e1000,id=pt_0,addr=04", "-device", "e1000,id=pt_1,addr=0x5.0",
                "-device", "e1000,id=host_connect_nic,addr=1f"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            wait_for_socket(qmp_path, proc)
            wait_for_socket(hmp_path, proc)
            yield Qemu(proc, qmp_path, hmp_path)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stderr:
                proc.stderr.close()


def test_real_qemu_status_pci_threads_quit(qemu: Qemu) -> None:
    qmp = Qmp.open(qemu.qmp_path, timeout=5)
    try:
        assert qmp.query_status() == "prelaunch"
        assert qmp.pci_map() == {"pt_0": "00:04.0", "pt_1": "00:05.0"}
        assert qmp.pci_map("host_") == {"host_connect_nic": "00:1f.0"}
        nic = next(d for d in qmp.query_pci() if d.qdev_id == "host_connect_nic")
        assert (nic.bus, nic.slot, nic.function) == (0, 31, 0)
        assert (nic.vendor_id, nic.device_id) == (0x8086, 0x100E)
        assert nic.description == "Ethernet controller"
        threads = qmp.vcpu_threads()
        assert len(threads) == 2 and len(set(threads)) == 2
        for tid in threads:  # each is a thread of this qemu process
            assert os.path.isdir(f"/proc/{qemu.proc.pid}/task/{tid}")
        machine_type = qmp.execute("qom-get", {"path": "/machine", "property": "type"})
        assert machine_type.startswith("pc-i440fx-")  # hyphenated args pass through
        with pytest.raises(QmpError) as info:
            qmp.command("no-such-command")
        assert info.value.error_class == "CommandNotFound"
        assert isinstance(info.value, VmError)
        qmp.quit()
        event = qmp.wait_event("SHUTDOWN", 2)
        assert event["data"]["reason"] == "host-qmp-quit"
        assert qemu.proc.wait(5) == 0
        with pytest.raises(QmpError, match="closed"):
            qmp.query_status()
    finally:
        qmp.close()


def test_real_qemu_cont_and_events_from_foreign_threads(qemu: Qemu) -> None:
    """Usable from a thread that runs its own asyncio loop, and from several threads."""
    async def inside_a_loop() -> str:
        with Qmp.open(qemu.qmp_path, timeout=5) as qmp:
            qmp.cont()
            status = qmp.query_status()
            assert qmp.wait_event("RESUME", 2)["event"] == "RESUME"
            results: list[str] = []
            workers = [threading.Thread(target=lambda: results.append(qmp.query_status()))
                       for _ in range(4)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(5)
            assert results == ["running"] * 4
            qmp.command("stop")
            assert qmp.wait_event("STOP", 2)["event"] == "STOP"
            assert [e["event"] for e in qmp.events] == ["RESUME", "STOP"]
            with pytest.raises(QmpError, match=r"no RESUME event within 0\.2 s"):
                qmp.wait_event("RESUME", 0.2)  # the one RESUME was consumed already
            return status

    assert asyncio.run(inside_a_loop()) == "running"
    # closing the client leaves qemu running; a second client may connect
    with Qmp.open(qemu.qmp_path, timeout=5) as qmp:
        assert qmp.query_status() == "paused"
        qmp.quit()
    assert qemu.proc.wait(5) == 0


def test_open_missing_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp, pytest.raises(QmpError, match="cannot connect"):
        Qmp.open(os.path.join(tmp, "qmp.sock"), 1)


class ScriptedQmp:
    """A QMP server on a socketpair: greeting, capabilities, then a scripted behaviour."""

    def __init__(self, *, greet: bool = True, answer: bool = True, close_after: int = -1):
        self.client_sock, self.peer = socket.socketpair()
        self.greet, self.answer, self.close_after = greet, answer, close_after
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.peer:
            if not self.greet:
                self.stop.wait(10)
                return
            self.peer.sendall(json.dumps(GREETING).encode() + b"\n")
            buf, served, decoder = "", 0, json.JSONDecoder()
            while not self.stop.is_set():
                try:
                    data = self.peer.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data.decode()
                while buf.strip():  # qemu.qmp sends no newline after a message
                    try:
                        msg, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break  # incomplete
                    buf = buf.lstrip()[end:]
                    if msg["execute"] == "qmp_capabilities":
                        reply: dict[str, object] = {"return": {}}
                    elif served == self.close_after:
                        return
                    elif not self.answer:
                        continue
                    else:
                        reply = {"return": {"status": "running", "running": True},
                                 "id": msg.get("id")}
                    served += msg["execute"] != "qmp_capabilities"
                    self.peer.sendall(json.dumps(reply).encode() + b"\n")

    def close(self) -> None:
        self.stop.set()
        self.client_sock.close()
        self.thread.join(5)


@pytest.fixture
def scripted() -> Iterator[type[ScriptedQmp]]:
    made: list[ScriptedQmp] = []

    class Made(ScriptedQmp):
        def __init__(self, **kw: object) -> None:
            super().__init__(**kw)  # type: ignore[arg-type]
            made.append(self)

    yield Made
    for peer in made:
        peer.close()
        assert not peer.thread.is_alive()


def test_no_greeting_times_out(scripted: type[ScriptedQmp]) -> None:
    peer = scripted(greet=False)
    start = time.monotonic()
    with pytest.raises(QmpError, match=r"connect/negotiate: no answer within 0\.3 s"):
        Qmp(peer.client_sock, timeout=0.3)
    assert time.monotonic() - start < 3.0


def test_command_without_answer_times_out(scripted: type[ScriptedQmp]) -> None:
    peer = scripted(answer=False)
    with Qmp(peer.client_sock, timeout=10) as qmp:
        start = time.monotonic()
        with pytest.raises(QmpError, match=r"query-status: no answer within 0\.3 s"):
            qmp.execute("query-status", timeout=0.3)
        assert time.monotonic() - start < 3.0


def test_eof_during_command(scripted: type[ScriptedQmp]) -> None:
    peer = scripted(close_after=1)
    with Qmp(peer.client_sock, timeout=10) as qmp:
        assert qmp.query_status() == "running"
        start = time.monotonic()
        with pytest.raises(QmpError):
            qmp.query_status()
        assert time.monotonic() - start < 3.0  # the EOF, not the 10 s timeout
        with pytest.raises(QmpError, match="connection closed before a SHUTDOWN event"):
            qmp.wait_event("SHUTDOWN", 1)


QUERY_PCI = [{"bus": 0, "devices": [
    {"bus": 0, "slot": 0, "function": 0, "class_info": {"class": 1536, "desc": "Host bridge"},
     "id": {"vendor": 32902, "device": 4663}, "qdev_id": "", "regions": []},
    {"bus": 0, "slot": 30, "function": 0, "class_info": {"class": 1540, "desc": "PCI bridge"},
     "id": {"vendor": 6966, "device": 1}, "qdev_id": "br0", "regions": [],
     "pci_bridge": {"bus": {"number": 1, "secondary": 1, "subordinate": 1},
                    "devices": [{"bus": 1, "slot": 2, "function": 1,
                                 "class_info": {"class": 512},
                                 "id": {"vendor": 32902, "device": 5421},
                                 "qdev_id": "pt_3", "regions": []}]}},
    {"bus": 0, "slot": 31, "function": 0, "class_info": {"class": 512},
     "id": {"vendor": 32902, "device": 4110}, "qdev_id": "pt_0", "regions": []}]}]


def test_parse_query_pci_flattens_bridges() -> None:
    devices = parse_query_pci(QUERY_PCI)
    assert [d.bdf for d in devices] == ["00:00.0", "00:1e.0", "01:02.1", "00:1f.0"]
    assert devices[2] == PciDevice(1, 2, 1, 0x8086, 0x152D, 512, "", "pt_3")
    assert pci_map_of(devices) == {"pt_3": "01:02.1", "pt_0": "00:1f.0"}
    assert pci_map_of(devices, "") == {"br0": "00:1e.0", "pt_3": "01:02.1", "pt_0": "00:1f.0"}


def test_parse_query_pci_rejects_garbage() -> None:
    with pytest.raises(QmpError, match="query-pci"):
        parse_query_pci([{"devices": [{"slot": 1}]}])
