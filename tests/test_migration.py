"""qemu/migration.py: pure URI/argv helpers, a scripted QMP peer for the protocol corners,
and real qemu (no guest) saving to a file and restoring from it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pytest_dtsvirt.errors import MigrationError, QmpError
from pytest_dtsvirt.qemu import migration
from pytest_dtsvirt.qemu.qmp import Qmp

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                    "capabilities": []}}


# -- pure -----------------------------------------------------------------------------------

def test_uris_quote_for_the_shell() -> None:
    assert migration.save_uri("/w/a b.snap") == "exec:cat > '/w/a b.snap'"
    assert migration.restore_uri("/w/x;rm -rf ~") == "exec:cat '/w/x;rm -rf ~'"
    assert migration.fd_uri(4) == "fd:4"
    with pytest.raises(ValueError, match="standard stream"):
        migration.fd_uri(0)
    assert migration.tcp_uri("127.0.0.1", 4444) == "tcp:127.0.0.1:4444"
    assert migration.tcp_uri("::1", 5) == "tcp:[::1]:5"
    with pytest.raises(ValueError, match="port 70000"):
        migration.tcp_uri("h", 70000)


def test_incoming_argv_and_strip() -> None:
    part = migration.incoming_argv("exec:cat /x")
    assert part == ["-incoming", "exec:cat /x"]
    argv = ["qemu", "-m", "64", *part, "-S"]
    assert migration.strip_incoming(argv) == ["qemu", "-m", "64", "-S"]
    with pytest.raises(ValueError):
        migration.incoming_argv("-S")


# -- scripted peer --------------------------------------------------------------------------

class Peer:
    """A QMP server on a socketpair answering each command from ``script[name]`` in turn
    (the last answer repeats); records the commands it saw."""

    def __init__(self, script: dict[str, list[dict[str, Any]]]) -> None:
        self.script = script
        self.seen: list[tuple[str, Any]] = []
        self.client_sock, self.peer = socket.socketpair()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        decoder, buf = json.JSONDecoder(), ""
        with self.peer:
            self.peer.sendall(json.dumps(GREETING).encode() + b"\n")
            while True:
                try:
                    data = self.peer.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data.decode()
                while buf.strip():
                    try:
                        msg, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break
                    buf = buf.lstrip()[end:]
                    name = msg["execute"]
                    if name != "qmp_capabilities":
                        self.seen.append((name, msg.get("arguments")))
                    answers = self.script.get(name, [{"return": {}}])
                    reply = dict(answers.pop(0) if len(answers) > 1 else answers[0])
                    reply["id"] = msg.get("id")
                    self.peer.sendall(json.dumps(reply).encode() + b"\n")


@pytest.fixture
def peer() -> Iterator[Any]:
    made: list[tuple[Peer, Qmp]] = []

    def make(script: dict[str, list[dict[str, Any]]]) -> tuple[Peer, Qmp]:
        p = Peer(script)
        made.append((p, Qmp(p.client_sock, timeout=2)))
        return made[-1]

    yield make
    for p, q in made:
        q.close()
        p.thread.join(5)
        assert not p.thread.is_alive()


def test_migrate_polls_until_completed(peer: Any) -> None:
    p, qmp = peer({"query-migrate": [{"return": {"status": "setup"}},
                                     {"return": {"status": "active"}},
                                     {"return": {"status": "completed", "total-time": 5}}]})
    info = migration.migrate(qmp, migration.save_uri("/s"), timeout=5)
    assert info["total-time"] == 5
    assert p.seen[0] == ("migrate", {"uri": "exec:cat > /s"})
    assert [n for n, _ in p.seen].count("query-migrate") == 3


def test_failed_migration_carries_qemus_reason(peer: Any) -> None:
    _, qmp = peer({"query-migrate": [{"return": {"status": "failed",
                                                 "error-desc": "Unable to write to socket"}}]})
    with pytest.raises(MigrationError, match="migration failed: Unable to write") as info:
        migration.migrate(qmp, "tcp:127.0.0.1:1", timeout=5)
    assert info.value.status == "failed" and "Unable" in info.value.desc


def test_migrate_refused_and_deadline(peer: Any) -> None:
    _, qmp = peer({"migrate": [{"error": {"class": "GenericError",
                                          "desc": "There's a migration process in progress"}}]})
    with pytest.raises(MigrationError, match="in progress"):
        migration.start(qmp, "exec:cat > /x")
    _, qmp2 = peer({"query-migrate": [{"return": {"status": "active"}}]})
    t0 = time.monotonic()
    with pytest.raises(MigrationError, match=r"not completed within 0\.3 s \(status active\)"):
        migration.wait(qmp2, 0.3)
    assert time.monotonic() - t0 < 2


def test_capabilities_parameters_stop_cont(peer: Any) -> None:
    p, qmp = peer({})
    migration.set_capabilities(qmp, {"events": True})
    migration.set_parameters(qmp, {"max-bandwidth": 1 << 30})
    migration.set_capabilities(qmp, {})  # nothing to send
    migration.stop(qmp)
    migration.cont(qmp)
    assert p.seen == [
        ("migrate-set-capabilities", {"capabilities": [{"capability": "events", "state": True}]}),
        ("migrate-set-parameters", {"max-bandwidth": 1 << 30}), ("stop", None), ("cont", None)]


def test_wait_incoming(peer: Any) -> None:
    _, qmp = peer({"query-status": [{"return": {"status": "inmigrate"}},
                                    {"return": {"status": "paused"}}],
                   "query-migrate": [{"return": {"status": "active"}},
                                     {"return": {"status": "completed"}}]})
    assert migration.wait_incoming(qmp, 5) == "paused"
    _, qmp2 = peer({"query-status": [{"return": {"status": "inmigrate"}}],
                    "query-migrate": [{"return": {"status": "failed",
                                                  "error-desc": "load of migration failed"}}]})
    with pytest.raises(MigrationError, match="incoming migration failed: load of"):
        migration.wait_incoming(qmp2, 5)


# -- real qemu ------------------------------------------------------------------------------

def _qemu(tmp: str, name: str, extra: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """qemu without a guest; its stdout (where HMP qemu-io prints) goes to <name>.out."""
    qmp_path = os.path.join(tmp, f"{name}.sock")
    argv = ["qemu-system-x86_64", "-accel", "tcg", "-nodefaults", "-display", "none",
            "-machine", "pc", "-m", "64", "-device", "e1000,id=pt_0",
            "-chardev", f"socket,id=qmp,path={qmp_path},server=on,wait=off",
            "-mon", "chardev=qmp,mode=control", *extra]
    with open(os.path.join(tmp, f"{name}.out"), "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not os.path.exists(qmp_path):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc, qmp_path


def _open(path: str) -> Qmp:
    """Connect, retrying briefly: qemu binds its socket a moment before it listens."""
    deadline = time.monotonic() + 5
    while True:
        try:
            return Qmp.open(path, 5)
        except QmpError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _end(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stderr:
        proc.stderr.close()


def test_real_qemu_save_restore_and_a_bad_stream() -> None:
    with tempfile.TemporaryDirectory(prefix="dtsvirt-mig-") as tmp:
        snap = os.path.join(tmp, "a snap")  # a space: the URI must quote it
        src, src_sock = _qemu(tmp, "src", [])
        try:
            with _open(src_sock) as qmp:
                migration.stop(qmp)
                info = migration.migrate(qmp, migration.save_uri(snap), timeout=30)
                assert info["status"] == "completed"
        finally:
            _end(src)
        assert os.path.getsize(snap) > 1024
        dst, dst_sock = _qemu(tmp, "dst", migration.incoming_argv(migration.restore_uri(snap)))
        try:
            with _open(dst_sock) as qmp:
                assert migration.wait_incoming(qmp, 30) == "paused"  # the source was paused
                migration.cont(qmp)
                assert qmp.query_status() == "running"
        finally:
            _end(dst)
        with open(snap, "r+b") as f:  # a truncated stream: qemu rejects it
            f.truncate(os.path.getsize(snap) // 2)
        bad, bad_sock = _qemu(tmp, "bad", migration.incoming_argv(migration.restore_uri(snap)))
        try:
            try:
                qmp = _open(bad_sock)
            except QmpError:  # qemu may reject the stream before we are connected
                assert bad.wait(10) != 0
            else:
                with qmp, pytest.raises(MigrationError):
                    migration.wait_incoming(qmp, 30)
            assert bad.wait(10) != 0
            assert bad.stderr is not None and b"load" in bad.stderr.read()
        finally:
            _end(bad)


def test_real_qemu_stream_without_run_state_runs_once_loaded() -> None:
    """A paused source saved with ``store-global-state=off`` (shape.NO_GLOBAL_STATE): a
    restore runs as soon as it is loaded (RESUME event), one under ``-S`` stays paused until
    a ``cont`` that may come during the load; a stream with a run state is continued."""
    from pytest_dtsvirt.qemu import shape

    with tempfile.TemporaryDirectory(prefix="dtsvirt-mig-") as tmp:
        snap = os.path.join(tmp, "snap")
        src, src_sock = _qemu(tmp, "src", shape.NO_GLOBAL_STATE)
        try:
            with _open(src_sock) as qmp:
                migration.stop(qmp)
                migration.migrate(qmp, migration.save_uri(snap), timeout=30)
        finally:
            _end(src)
        incoming = migration.incoming_argv(migration.restore_uri(snap))
        for name, extra in (("run", []), ("held", ["-S"])):
            dst, dst_sock = _qemu(tmp, name, [*shape.NO_GLOBAL_STATE, *extra, *incoming])
            try:
                with _open(dst_sock) as qmp:
                    if extra:
                        migration.cont(qmp)  # during or after the load: runs once loaded
                    assert migration.wait_running(qmp, 30) in ("inmigrate", "running",
                                                               "paused")
                    assert qmp.query_status() == "running"
            finally:
                _end(dst)
        with open(snap, "r+b") as f:  # a stream qemu cannot load: it exits, no hang
            f.truncate(os.path.getsize(snap) // 2)
        bad, bad_sock = _qemu(tmp, "bad", incoming)
        try:
            try:
                qmp = _open(bad_sock)
            except QmpError:
                pass
            else:
                with qmp, pytest.raises(MigrationError):
                    migration.wait_running(qmp, 30)
            assert bad.wait(10) != 0
        finally:
            _end(bad)


def test_real_qemu_disk_overlay_travels_with_the_snapshot() -> None:
    """A snapshot=on disk opened through an explicit overlay (qemu/overlay.py): what was
    written before the save is in every restore, what a restored VM writes is not in the
    next one, and the base image is never written."""
    from pytest_dtsvirt.qemu import overlay
    from pytest_dtsvirt.session.local import LocalSession

    session = LocalSession()
    with tempfile.TemporaryDirectory(prefix="dtsvirt-mig-") as tmp:
        base = os.path.join(tmp, "base.raw")
        with open(base, "wb") as f:
            f.truncate(1 << 20)
        snap = os.path.join(tmp, "s.snap")

        def vm(name: str, run: str, extra: list[str], copy_from: str | None
               ) -> tuple[subprocess.Popen[bytes], str]:
            os.makedirs(run)
            argv = ["-drive", f"file={base},if=none,id=d0,snapshot=on"]
            argv, disks = overlay.rewrite(argv, run, overlay.probe_formats(
                session, overlay.bases(argv)))
            assert disks and "snapshot=on" not in argv[1] and argv[1].startswith(f"file={run}/")
            if copy_from is None:
                overlay.create(session, disks)
            else:
                overlay.copy(session, [(overlay.saved_name(copy_from, 0), disks[0].path)])
            return _qemu(tmp, name, [*argv, *extra])

        def io(qmp: Qmp, cmd: str) -> None:
            qmp.execute("human-monitor-command", {"command-line": f"qemu-io d0 \"{cmd}\""})

        def printed(name: str) -> str:
            with open(os.path.join(tmp, f"{name}.out")) as f:
                return f.read()

        src, sock = vm("src", os.path.join(tmp, "run1"), [], None)
        try:
            with _open(sock) as qmp:
                io(qmp, "write -P 0xab 0 4k")
                migration.stop(qmp)
                migration.migrate(qmp, migration.save_uri(snap), timeout=30)
                overlay.copy(session, [(os.path.join(tmp, "run1", "disk0.qcow2"),
                                        overlay.saved_name(snap, 0))])
        finally:
            _end(src)
        restore = migration.incoming_argv(migration.restore_uri(snap))
        for i in (2, 3):
            dst, sock = vm(f"dst{i}", os.path.join(tmp, f"run{i}"), restore, snap)
            try:
                with _open(sock) as qmp:
                    assert migration.wait_incoming(qmp, 30) == "paused"
                    migration.cont(qmp)
                    io(qmp, "read -P 0xab 0 4k")  # written before the save
                    io(qmp, "read -P 0 8k 4k")  # written by restore 2 only, after it
                    io(qmp, "write -P 0xcd 8k 4k")
                    io(qmp, "read -P 0xcd 8k 4k")
            finally:
                _end(dst)
            text = printed(f"dst{i}")
            assert text.count("read 4096/4096") == 3 and "wrote 4096/4096" in text, text
            assert "verification failed" not in text, text
        assert "wrote 4096/4096" in printed("src")
        with open(base, "rb") as f:
            assert f.read() == bytes(1 << 20)  # the base was never written
