"""The guest agent client against a scripted peer (protocol corner cases).

The peer behaves like qemu-ga where it matters: requests queue in the socket until it
"starts", a 0xFF byte is answered with a parse-error line, guest-sync-delimited replies with
``\\xff{"return": id}``, replies may arrive in small chunks, guest-shutdown never replies.
At the end, the real qemu-ga in the project's test guest, booted under TCG.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_dtsvirt.errors import AgentError, AgentReplyError, AgentTimeout
from pytest_dtsvirt.qemu.qga import (
    KILL_TIMEOUT,
    ExecResult,
    GuestAddress,
    GuestAgent,
    parse_interfaces,
)
from pytest_dtsvirt.qemu.qmp import Qmp

NO_REPLY = object()
CLOSE = object()
PARSE_ERROR = b'{"error": {"class": "GenericError", "desc": "Invalid JSON syntax"}}\n'

Handler = Callable[[dict[str, Any]], Any]


class FakeAgent:
    """A scripted qemu-ga on the far end of a socketpair, served by a thread."""

    def __init__(self, handlers: dict[str, Handler] | None = None, *, start_delay: float = 0.0,
                 chunk: int = 0, garbage_before: bytes = b"") -> None:
        self.handlers = handlers or {}
        self.start_delay = start_delay
        self.chunk = chunk
        self.garbage_before = garbage_before
        self.stop = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.sync_ids: list[int] = []
        self.client_sock, self.peer = socket.socketpair()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _send(self, data: bytes) -> None:
        if not self.chunk:
            self.peer.sendall(data)
            return
        for i in range(0, len(data), self.chunk):
            self.peer.sendall(data[i:i + self.chunk])
            time.sleep(0.001)

    def _run(self) -> None:
        if self.stop.wait(self.start_delay):
            self.peer.close()
            return
        buf = b""
        try:
            while True:
                data = self.peer.recv(4096)
                if not data:
                    return
                buf += data
                while buf:
                    if buf[0] == 0xFF:
                        buf = buf[1:]
                        self._send(PARSE_ERROR)
                        continue
                    if b"\n" not in buf:
                        break
                    line, _, buf = buf.partition(b"\n")
                    if self._answer(json.loads(line)) is CLOSE:
                        return
        except OSError:
            pass
        finally:
            self.peer.close()

    def _answer(self, req: dict[str, Any]) -> object:
        self.requests.append(req)
        name, args = req["execute"], req.get("arguments", {})
        if name == "guest-sync-delimited":
            self.sync_ids.append(args["id"])
            reply = b"\xff" + json.dumps({"return": args["id"]}).encode() + b"\n"
            self._send(self.garbage_before + reply)
            return None
        handler = self.handlers.get(name)
        result = handler(args) if handler else {
            "error": {"class": "CommandNotFound", "desc": f"The command {name} has not been found"}}
        if result is CLOSE or result is NO_REPLY:
            return result
        self._send(json.dumps(result).encode() + b"\n")
        return None

    def close(self) -> None:
        self.stop.set()
        self.client_sock.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def fake() -> Iterator[Callable[..., tuple[FakeAgent, GuestAgent]]]:
    made: list[FakeAgent] = []

    def make(handlers: dict[str, Handler] | None = None, timeout: float = 2.0,
             **kw: Any) -> tuple[FakeAgent, GuestAgent]:
        peer = FakeAgent(handlers, **kw)
        made.append(peer)
        return peer, GuestAgent(peer.client_sock, timeout)

    yield make
    for peer in made:
        peer.close()


def ok(value: Any = None) -> Handler:
    return lambda args: {"return": {} if value is None else value}


def test_sync_skips_parse_error_line_and_garbage(fake: Any) -> None:
    peer, agent = fake(garbage_before=b'{"return": 7}\nnoise without newline')
    agent.sync()
    assert len(peer.sync_ids) == 1
    assert peer.requests[0]["execute"] == "guest-sync-delimited"


def test_ping_syncs_first_then_pings(fake: Any) -> None:
    peer, agent = fake({"guest-ping": ok()})
    agent.ping()
    agent.ping()
    assert [r["execute"] for r in peer.requests] == [
        "guest-sync-delimited", "guest-ping", "guest-ping"]


def test_sync_ids_are_random(fake: Any) -> None:
    peer, agent = fake()
    for _ in range(5):
        agent.sync()
    assert len(set(peer.sync_ids)) == 5


def test_no_answer_times_out_within_bound(fake: Any) -> None:
    _peer, agent = fake(start_delay=3.0)
    start = time.monotonic()
    with pytest.raises(AgentTimeout, match="no answer to guest-sync-delimited"):
        agent.sync(0.3)
    assert 0.25 < time.monotonic() - start < 2.0  # the answer would come at 3 s


def test_retry_after_timed_out_sync_skips_stale_reply(fake: Any) -> None:
    """The agent starts late: the first sync times out, its request waits in the socket;
    the retry gets both answers (old id first) and must take only its own."""
    peer, agent = fake({"guest-ping": ok()}, start_delay=0.5, chunk=3)
    with pytest.raises(AgentTimeout):
        agent.sync(0.2)
    agent.sync(3.0)
    assert len(peer.sync_ids) == 2
    agent.ping()  # the stream is clean: the next reply is the ping's
    assert peer.requests[-1]["execute"] == "guest-ping"


def test_wait_ready_retries_until_agent_runs(fake: Any) -> None:
    peer, agent = fake({"guest-ping": ok()}, start_delay=0.6)
    took = agent.wait_ready(timeout=5.0, attempt=0.2)
    assert 0.5 < took < 3.0
    assert len(peer.sync_ids) >= 3  # several attempts, all but the last timed out
    agent.ping()


def test_wait_ready_gives_up(fake: Any) -> None:
    _peer, agent = fake(start_delay=3.0)
    start = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"not answering after 0\.5 s"):
        agent.wait_ready(timeout=0.5, attempt=0.2)
    assert time.monotonic() - start < 2.0  # the agent would answer at 3 s


def test_timed_out_command_resyncs_before_next(fake: Any) -> None:
    """A late reply to a timed-out command must not be taken as the next command's reply."""
    def slow_info(args: dict[str, Any]) -> Any:
        time.sleep(0.4)
        return {"return": {"version": "stale"}}

    peer, agent = fake({"guest-info": slow_info, "guest-ping": ok({"pong": 1})})
    with pytest.raises(AgentTimeout):
        agent.command("guest-info", timeout=0.2)
    assert agent.command("guest-ping") == {"pong": 1}
    assert [r["execute"] for r in peer.requests] == [
        "guest-sync-delimited", "guest-info", "guest-sync-delimited", "guest-ping"]


def test_error_reply_raises_with_class_and_desc(fake: Any) -> None:
    _peer, agent = fake({"guest-ping": ok()})
    with pytest.raises(AgentReplyError) as info:
        agent.command("guest-frobnicate")
    assert info.value.error_class == "CommandNotFound"
    assert info.value.desc == "The command guest-frobnicate has not been found"
    assert "guest-frobnicate" in str(info.value)
    agent.ping()  # still usable


def test_garbled_reply_is_an_error_and_forces_resync(fake: Any) -> None:
    peer, agent = fake({"guest-info": lambda a: ["not", "a", "reply"], "guest-ping": ok()})
    with pytest.raises(AgentError, match="unexpected reply to guest-info"):
        agent.command("guest-info")
    agent.ping()
    assert peer.requests[-2]["execute"] == "guest-sync-delimited"


def test_eof_is_an_error_not_a_timeout(fake: Any) -> None:
    _peer, agent = fake({"guest-ping": lambda a: CLOSE}, timeout=10.0)
    start = time.monotonic()
    with pytest.raises(AgentError, match="EOF") as info:
        agent.ping()
    assert not isinstance(info.value, AgentTimeout)
    assert time.monotonic() - start < 3.0  # the EOF, not the 10 s timeout


def test_chunked_replies(fake: Any) -> None:
    ifaces = [{"name": "lo", "hardware-address": "00:00:00:00:00:00",
               "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1",
                                 "prefix": 8}]}]
    _peer, agent = fake({"guest-network-get-interfaces": ok(ifaces)}, chunk=1)
    assert agent.network_interfaces()[0].addresses == (GuestAddress("ipv4", "127.0.0.1", 8),)


NETWORK_REPLY = [
    {"name": "lo", "hardware-address": "00:00:00:00:00:00",
     "ip-addresses": [{"ip-address-type": "ipv4", "ip-address": "127.0.0.1", "prefix": 8},
                      {"ip-address-type": "ipv6", "ip-address": "::1", "prefix": 128}],
     "statistics": {"rx-bytes": 0}},
    {"name": "host_connect", "hardware-address": "52:54:00:12:34:56",
     "ip-addresses": [{"ip-address-type": "ipv6", "ip-address": "fe80::5054:ff:fe12:3456",
                       "prefix": 64},
                      {"ip-address-type": "ipv4", "ip-address": "10.0.2.15", "prefix": 24}]},
    {"name": "eth1"},
]


def test_parse_interfaces() -> None:
    lo, hc, eth1 = parse_interfaces(NETWORK_REPLY)
    assert lo.name == "lo" and lo.ipv4 == ["127.0.0.1"]
    assert lo.addresses[1] == ("ipv6", "::1", 128)
    assert hc.hardware_address == "52:54:00:12:34:56"
    assert hc.ipv4 == ["10.0.2.15"]
    assert eth1.addresses == () and eth1.hardware_address is None


@pytest.mark.parametrize("bad", [{}, [{"ip-addresses": []}],
                                 [{"name": "x", "ip-addresses": [{"ip-address": "1.2.3.4"}]}]])
def test_parse_interfaces_rejects_garbage(bad: Any) -> None:
    with pytest.raises(AgentError):
        parse_interfaces(bad)


def test_ipv4_of(fake: Any) -> None:
    _peer, agent = fake({"guest-network-get-interfaces": ok(NETWORK_REPLY)})
    assert agent.ipv4_of("host_connect") == "10.0.2.15"
    assert agent.ipv4_of("eth1") is None
    assert agent.ipv4_of("missing") is None


def test_exec_polls_and_decodes_base64(fake: Any) -> None:
    polls = []

    def status(args: dict[str, Any]) -> Any:
        polls.append(args["pid"])
        if len(polls) < 3:
            return {"return": {"exited": False}}
        return {"return": {"exited": True, "exitcode": 3,
                           "out-data": base64.b64encode(b"hello\n\xc3\xa9").decode(),
                           "err-data": base64.b64encode(b"oops").decode()}}

    peer, agent = fake({"guest-exec": ok({"pid": 42}), "guest-exec-status": status})
    result = agent.exec(["/bin/sh", "-c", "echo hello; exit 3"], timeout=5)
    assert result == ExecResult(3, "hello\n\u00e9", "oops")
    assert polls == [42, 42, 42]
    start = next(r for r in peer.requests if r["execute"] == "guest-exec")
    assert start["arguments"] == {"path": "/bin/sh", "arg": ["-c", "echo hello; exit 3"],
                                  "capture-output": True}


def test_exec_signal_and_input(fake: Any) -> None:
    status = ok({"exited": True, "signal": 9})
    peer, agent = fake({"guest-exec": ok({"pid": 1}), "guest-exec-status": status})
    assert agent.exec(["cat"], input=b"data").exit_code == -9
    start = next(r for r in peer.requests if r["execute"] == "guest-exec")
    assert base64.b64decode(start["arguments"]["input-data"]) == b"data"


class _GuestProcesses:
    """``guest-exec``/``guest-exec-status`` of a guest where ``sleep`` runs until killed and
    ``kill`` does what ``kill_works`` says."""

    def __init__(self, kill_works: bool = True) -> None:
        self.kill_works = kill_works
        self.started: list[list[str]] = []
        self.killed = False

    def exec(self, args: dict[str, Any]) -> Any:
        self.started.append([args["path"], *args["arg"]])
        if args["path"] == "/bin/sh" and self.kill_works:
            self.killed = True
        return {"return": {"pid": 100 + len(self.started)}}

    def status(self, args: dict[str, Any]) -> Any:
        if args["pid"] == 101:  # the sleep
            done = {"exited": True, "signal": 9} if self.killed else {"exited": False}
            return {"return": done}
        if self.kill_works:
            return {"return": {"exited": True, "exitcode": 0}}
        return {"return": {"exited": True, "exitcode": 1,
                           "err-data": base64.b64encode(b"kill: No such process\n").decode()}}


def test_exec_timeout_kills_the_process(fake: Any) -> None:
    guest = _GuestProcesses()
    _peer, agent = fake({"guest-exec": guest.exec, "guest-exec-status": guest.status},
                        timeout=10.0)
    start = time.monotonic()
    with pytest.raises(AgentTimeout, match=r"still running after 0.5 s \(pid 101\); killed it"):
        agent.exec(["sleep", "100"], timeout=0.5)
    assert time.monotonic() - start < 3.0  # not waiting for ever
    assert guest.started == [["sleep", "100"], ["/bin/sh", "-c", 'kill -KILL "$1"', "sh", "101"]]


def test_exec_timeout_says_when_the_kill_fails(fake: Any) -> None:
    guest = _GuestProcesses(kill_works=False)
    _peer, agent = fake({"guest-exec": guest.exec, "guest-exec-status": guest.status},
                        timeout=10.0)
    start = time.monotonic()
    with pytest.raises(AgentTimeout, match="could not kill it: kill exited 1: kill: No such"):
        agent.exec(["sleep", "100"], timeout=0.3)
    assert time.monotonic() - start < 0.3 + KILL_TIMEOUT + 1.5


def test_shutdown_sends_and_returns_then_eof(fake: Any) -> None:
    got = threading.Event()

    def shutdown(args: dict[str, Any]) -> Any:
        got.set()
        time.sleep(1.5)  # qemu takes a moment to exit
        return CLOSE

    peer, agent = fake({"guest-shutdown": shutdown})
    start = time.monotonic()
    agent.shutdown()
    assert time.monotonic() - start < 1.0  # did not wait for a reply (1.5 s away)
    assert got.wait(2)
    agent.wait_closed(3)
    assert peer.requests[-1] == {"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}}


def test_wait_closed_times_out_while_open(fake: Any) -> None:
    _peer, agent = fake({"guest-shutdown": lambda a: NO_REPLY})
    agent.shutdown("reboot")
    with pytest.raises(AgentTimeout, match="still open"):
        agent.wait_closed(0.3)


def test_shutdown_rejects_unknown_mode(fake: Any) -> None:
    _peer, agent = fake()
    with pytest.raises(ValueError, match="poweroff"):
        agent.shutdown("poweroff")


def test_open_missing_socket() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "qga.sock")
        with pytest.raises(AgentError, match=r"qga\.sock: cannot connect"):
            GuestAgent.open(path, 1)


def test_open_by_path_with_a_real_listening_socket() -> None:
    """A unix-socket peer: connect() succeeds before the agent answers; requests queue."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "qga.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                time.sleep(0.3)  # the "agent" starts late
                data = b""
                while b"\n" not in data:
                    data += conn.recv(4096)
                req = json.loads(data[data.index(b"{"):].split(b"\n")[0])
                conn.sendall(PARSE_ERROR + b"\xff" + json.dumps(
                    {"return": req["arguments"]["id"]}).encode() + b"\n")
                conn.recv(1)  # wait for the client to close

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with GuestAgent.open(path, 2) as agent:
                assert agent.wait_ready(3, attempt=1.0) > 0.25
        finally:
            thread.join(5)
            server.close()
        assert not thread.is_alive()


GUEST_MAC = "52:54:00:12:34:56"


@pytest.mark.slow
def test_real_guest_agent() -> None:
    """Boot the test guest (fast profile) and drive its real qemu-ga end to end."""
    from pytest_dtsvirt.guest import ensure_guest_image

    image = ensure_guest_image()
    with tempfile.TemporaryDirectory(prefix="dtsvirt-qga-") as tmp:
        qga_path, qmp_path = os.path.join(tmp, "qga.sock"), os.path.join(tmp, "qmp.sock")
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "qemu64,+rdrand", "-smp", "1",
                "-m", "256", "-machine", "pc", "-nodefaults", "-display", "none",
                "-kernel", image.vmlinux, "-initrd", image.initrd, "-append", image.append,
                "-netdev", "user,id=net0,restrict=on",
                "-device", f"e1000,netdev=net0,addr=1f,autonegotiation=off,mac={GUEST_MAC}",
                "-device", "virtio-serial",
                "-chardev", f"socket,id=qga0,path={qga_path},server=on,wait=off",
                "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
                "-chardev", f"socket,id=qmp,path={qmp_path},server=on,wait=off",
                "-mon", "chardev=qmp,mode=control",
                "-serial", f"file:{os.path.join(tmp, 'console.log')}"]
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            deadline = start + 10
            while not (os.path.exists(qga_path) and os.path.exists(qmp_path)):
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline, "qemu sockets did not appear"
                time.sleep(0.02)
            qmp = Qmp.open(qmp_path, timeout=10)
            agent = GuestAgent.open(qga_path, timeout=10)
            with qmp, agent:
                assert qmp.query_status() == "running"
                agent.wait_ready(timeout=60, attempt=1.0)
                ready = time.monotonic() - start
                agent.ping()
                assert "guest-exec" in str(agent.info().get("supported_commands"))
                address = None
                while address is None and time.monotonic() < start + 60:
                    address = agent.ipv4_of("host_connect", timeout=5)
                    if address is None:
                        time.sleep(0.1)
                assert address == "10.0.2.15"
                addressed = time.monotonic() - start
                hc = next(i for i in agent.network_interfaces() if i.name == "host_connect")
                assert hc.hardware_address == GUEST_MAC
                assert GuestAddress("ipv4", "10.0.2.15", 24) in hc.addresses
                result = agent.exec(["/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"],
                                    timeout=20)
                assert result == ExecResult(3, "hello\n", "oops\n")
                assert agent.exec(["cat"], input=b"via stdin", timeout=20).stdout == "via stdin"
                with pytest.raises(AgentReplyError):
                    agent.exec(["/no/such/binary"], timeout=20)
                with pytest.raises(AgentTimeout, match=r"\(pid \d+\); killed it") as slow:
                    agent.exec(["/bin/sleep", "1000"], timeout=1.0)
                pid = re.search(r"\(pid (\d+)\)", str(slow.value))
                assert pid is not None
                gone = agent.exec(["/bin/sh", "-c", f"kill -0 {pid[1]}"], timeout=20)
                assert gone.exit_code == 1 and "No such process" in gone.stderr, gone
                down = time.monotonic()
                agent.shutdown()
                agent.wait_closed(30)
                assert qmp.wait_event("SHUTDOWN", 10)["data"]["reason"] == "guest-shutdown"
                assert proc.wait(30) == 0
                gone = time.monotonic() - down
            print(f"agent ready {ready:.1f} s, host_connect {addressed:.1f} s, "
                  f"shutdown -> exit {gone:.2f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            if proc.stderr:
                proc.stderr.close()
