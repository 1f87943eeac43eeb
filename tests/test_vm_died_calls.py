"""A qemu that dies while a QMP or guest agent call waits for its answer: the call raises
:class:`VmDied` with qemu's signal and the console tail, as the guest session, ``vm.qmp``,
``vm.agent`` and ``stop()`` do (not the raw QMP / agent error). Real qemu, killed with
SIGKILL from another thread while the call waits. Boots 2 guests (TCG).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.runtime import assert_nothing_left, local_dut, make_vm, write_cfg

from pytest_dtsvirt.errors import AgentTimeout, QmpError, VmDied
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.session.dut import Dut

pytestmark = pytest.mark.slow

KILLED = "died while the VM was in use: killed by signal 9 (SIGKILL)"


dut = pytest.fixture(scope="module", name="dut")(local_dut)  # one DUT for the module


@pytest.fixture
def vm(dut: Dut, tmp_path: Path) -> Iterator[QEMUKvm]:
    vm = make_vm(dut, write_cfg(tmp_path))
    vm.start()
    yield vm
    with contextlib.suppress(VmDied):  # the test killed it
        vm.stop()
    assert_nothing_left(vm)


def _kill_later(pid: int, delay: float) -> threading.Thread:
    def kill() -> None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _pid(vm: QEMUKvm) -> int:
    assert vm._proc is not None and vm._proc.pid is not None
    return vm._proc.pid


def test_qemu_killed_while_a_qmp_call_waits(vm: QEMUKvm) -> None:
    qmp = vm.qmp  # the client, taken while the VM runs
    assert qmp.query_status() == "running"
    pid = _pid(vm)
    os.kill(pid, signal.SIGSTOP)  # the next call is sent and waits for its reply
    killer = _kill_later(pid, 1.0)
    began = time.monotonic()
    with pytest.raises(VmDied) as info:
        qmp.execute("query-status", timeout=30)
    killer.join()
    assert time.monotonic() - began < 15, "the call waited for its timeout"
    text = str(info.value)
    assert text.startswith("vm0: qemu (PID") and KILLED in text, text
    assert "console tail" in text
    assert isinstance(info.value.__cause__, QmpError)  # the raw error stays as the cause


def test_qemu_killed_while_an_agent_call_waits(vm: QEMUKvm) -> None:
    agent = vm.agent
    killer = _kill_later(_pid(vm), 1.5)
    began = time.monotonic()
    with pytest.raises(VmDied) as info:
        agent.exec(["/bin/sleep", "30"], timeout=60)  # guest-exec, then polling its status
    killer.join()
    assert time.monotonic() - began < 20, "the call waited for its timeout"
    assert KILLED in str(info.value) and "console tail" in str(info.value)


def test_a_call_that_times_out_on_a_live_vm_is_no_death(vm: QEMUKvm) -> None:
    with pytest.raises(AgentTimeout, match=re.escape("still running after 1 s")):
        vm.agent.exec(["/bin/sleep", "5"], timeout=1)
    assert vm.qmp.query_status() == "running"  # and the clients still work
    vm.agent.ping()
