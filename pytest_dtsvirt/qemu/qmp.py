"""A small synchronous facade over QEMU's own QMP library (``qemu.qmp``).

:class:`Qmp` takes an already connected stream socket (from a Session's ``open_unix``) and
runs a private asyncio event loop in a daemon thread, so it can be called from any thread,
including threads that run no event loop or are not the main thread. Every call is bounded
by a timeout. Events are collected in the background as they arrive, so a ``SHUTDOWN`` that
came before :meth:`Qmp.wait_event` is not lost.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient, Runstate

from pytest_dtsvirt.errors import QmpError
from pytest_dtsvirt.unixsock import SocketClient

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(frozen=True)
class PciDevice:
    """One guest PCI function from ``query-pci`` (bridges flattened)."""

    bus: int
    slot: int
    function: int
    vendor_id: int
    device_id: int
    class_code: int
    description: str
    qdev_id: str

    @property
    def bdf(self) -> str:
        """The guest address as ``bb:ss.f`` in hex, e.g. ``00:1f.0``."""
        return f"{self.bus:02x}:{self.slot:02x}.{self.function:x}"


def parse_query_pci(reply: Any) -> list[PciDevice]:
    """Flatten the ``return`` of ``query-pci`` (buses, devices behind bridges)."""
    out: list[PciDevice] = []

    def walk(devices: Any) -> None:
        for dev in devices or []:
            ids = dev.get("id", {})
            cls = dev.get("class_info", {})
            out.append(PciDevice(
                bus=int(dev["bus"]), slot=int(dev["slot"]), function=int(dev["function"]),
                vendor_id=int(ids.get("vendor", 0)), device_id=int(ids.get("device", 0)),
                class_code=int(cls.get("class", 0)), description=str(cls.get("desc", "")),
                qdev_id=str(dev.get("qdev_id", "")),
            ))
            bridge = dev.get("pci_bridge")
            if isinstance(bridge, dict):
                walk(bridge.get("devices"))

    try:
        for bus in reply:
            walk(bus.get("devices"))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise QmpError(f"query-pci: unexpected reply ({exc}): {reply!r:.300}") from exc
    return out


def pci_map_of(devices: list[PciDevice], prefix: str = "pt_") -> dict[str, str]:
    """``{qdev_id: guest bdf}`` for the devices whose id starts with ``prefix``."""
    return {d.qdev_id: d.bdf for d in devices if d.qdev_id and d.qdev_id.startswith(prefix)}


class Qmp(SocketClient):
    """A connected, negotiated QMP session on ``sock``.

    The constructor reads the greeting and negotiates capabilities within ``timeout``.
    ``timeout`` is the default bound of each later call. Thread-safe for calls from several
    threads (the private loop serialises them). :meth:`close` ends the loop and the socket."""

    connect_error = QmpError
    connect_what = "QMP socket"

    def __init__(self, sock: socket.socket, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._events: list[dict[str, Any]] = []
        self._consumed = 0
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dtsvirt-qmp",
                                        daemon=True)
        self._thread.start()
        self._closed = False
        self._client = QMPClient("dtsvirt")
        self._listener = EventListener()
        self._client.register_listener(self._listener)
        self._drain_task: asyncio.Task[None] | None = None
        try:
            self._run(self._client.connect(sock), timeout, "connect/negotiate")
            self._drain_task = self._run(self._start_drain(), timeout, "start event reader")
        except BaseException:
            self.close()
            sock.close()
            raise

    # -- loop plumbing ---------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float, what: str) -> _T:
        if self._closed:
            coro.close()
            raise QmpError(f"QMP: {what}: the connection is closed")
        future = asyncio.run_coroutine_threadsafe(asyncio.wait_for(coro, timeout), self._loop)
        try:
            return future.result(timeout + 1.0)
        except TimeoutError as exc:
            future.cancel()
            raise self._failed(QmpError(f"QMP: {what}: no answer within {timeout:g} s"),
                               lost=False) from exc
        except ExecuteError as exc:  # an error reply: qemu is there
            desc = str(exc)
            raise QmpError(f"QMP: {what}: {exc.error_class}: {desc}",
                           exc.error_class, desc) from exc
        except QmpError:
            raise
        except Exception as exc:
            raise self._failed(QmpError(f"QMP: {what}: {type(exc).__name__}: {exc}"),
                               lost=True) from exc

    async def _start_drain(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        async for event in self._listener:
            with self._cond:
                self._events.append(dict(event))
                self._cond.notify_all()

    async def _shutdown(self) -> None:
        try:
            if self._client.runstate != Runstate.IDLE:
                await self._client.disconnect()
        finally:
            if self._drain_task is not None:
                self._drain_task.cancel()
                await asyncio.gather(self._drain_task, return_exceptions=True)

    # -- commands --------------------------------------------------------------------------

    def execute(self, name: str, args: Mapping[str, object] | None = None,
                timeout: float | None = None) -> Any:
        """Run QMP command ``name`` with ``args`` (hyphenated names welcome) and return its
        ``return`` value. QmpError on an error reply (with ``error_class``), a timeout, or
        a lost connection."""
        t = self.timeout if timeout is None else timeout
        return self._run(self._client.execute(name, dict(args) if args else None), t, name)

    def command(self, name: str, /, **args: object) -> Any:
        """``execute(name, args)`` with the default timeout and keyword arguments."""
        return self.execute(name, args)

    def query_status(self) -> str:
        """The run state, e.g. ``prelaunch``, ``running``, ``paused``, ``shutdown``."""
        return str(self.execute("query-status")["status"])

    def query_pci(self) -> list[PciDevice]:
        """All guest PCI functions, flattened."""
        return parse_query_pci(self.execute("query-pci"))

    def pci_map(self, prefix: str = "pt_") -> dict[str, str]:
        """``{qdev_id: "00:04.0"}`` for the devices whose id starts with ``prefix``."""
        return pci_map_of(self.query_pci(), prefix)

    def vcpu_threads(self) -> list[int]:
        """Host thread id of each vCPU, indexed by cpu-index (``query-cpus-fast``)."""
        cpus = self.execute("query-cpus-fast")
        try:
            pairs = sorted((int(c["cpu-index"]), int(c["thread-id"])) for c in cpus)
        except (KeyError, TypeError, ValueError) as exc:
            raise QmpError(f"query-cpus-fast: unexpected reply: {cpus!r:.300}") from exc
        if [i for i, _ in pairs] != list(range(len(pairs))):
            raise QmpError(f"query-cpus-fast: cpu indexes not 0..n-1: {pairs}")
        return [tid for _, tid in pairs]

    def cont(self) -> None:
        """``cont``: start the guest (after ``-S``) or resume it."""
        self.execute("cont")

    def quit(self, timeout: float | None = None) -> None:
        """``quit``: qemu exits. Waits (bounded) for qemu to hang up, so its ``SHUTDOWN``
        event is recorded, then closes. A connection lost before the answer is success."""
        t = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + t
        try:
            self.execute("quit", timeout=t)
        except QmpError as exc:
            if exc.error_class or self._client.runstate == Runstate.RUNNING:
                raise  # a real error reply, or a timeout with the connection still up
        while self._client.runstate == Runstate.RUNNING and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._client.runstate == Runstate.RUNNING:
            log.warning("QMP: qemu still connected %.1f s after quit", t)
        self.close()

    # -- events ----------------------------------------------------------------------------

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event received so far (dicts with ``event``, ``data``, ``timestamp``)."""
        with self._cond:
            return list(self._events)

    def wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        """The first event called ``name`` that no earlier ``wait_event`` returned, waiting up
        to ``timeout`` s. Events that arrived before the call count. QmpError on timeout or
        when the connection is gone with no such event."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self._consumed, len(self._events)):
                    if self._events[i].get("event") == name:
                        self._consumed = i + 1
                        return self._events[i]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise QmpError(f"QMP: no {name} event within {timeout:g} s")
                if self._closed or self._client.runstate != Runstate.RUNNING:
                    raise QmpError(f"QMP: connection closed before a {name} event")
                self._cond.wait(min(remaining, 0.1))

    # -- teardown --------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Disconnect, stop the private loop and its thread (idempotent, bounded)."""
        if self._closed:
            return
        try:
            self._run(self._shutdown(), timeout, "disconnect")
        except QmpError as exc:
            log.debug("QMP: disconnect: %s", exc)
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()
