"""What the framework adds to a boot, measured side by side in one run.

For N rounds, alternating so that machine load hits both alike:
  (a) the raw floor: the very argv QEMUKvm would run, started by hand with a fixed hostfwd
      port, and polled for an SSH login as tightly as possible (paramiko, no sleeps);
  (b) QEMUKvm.start() to a usable VM DUT (QMP, agent, host_connect, SSH, a shell);
  (c) QEMUKvm.stop() until qemu is gone and the run dir removed.
Prints the medians and the ratio b/a. Goal: b/a <= 1.05 and stop under 1 s (the legacy
framework spent 12 s or more in fixed sleeps).

    python benchmarks/boot_overhead.py -n 5
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import textwrap
import time

import paramiko

from pytest_dtsvirt.config.load import load_vm_params
from pytest_dtsvirt.errors import DtsvirtError
from pytest_dtsvirt.guest import ensure_guest_image
from pytest_dtsvirt.hypervisor import VmOptions
from pytest_dtsvirt.qemu.argv import build_argv
from pytest_dtsvirt.qemu.kvm import QEMUKvm
from pytest_dtsvirt.qemu.placement import Placement
from pytest_dtsvirt.qemu.qga import GuestAgent
from pytest_dtsvirt.session.dut import connect
from pytest_dtsvirt.session.dutconfig import local_dut_config

CFG = """\
[vm0]
login =
    user=root,password=tester;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def set_root_password(qga_path: str, password: str, proc: subprocess.Popen[bytes]) -> None:
    """Set root's password through the guest agent, as the framework does (the test guest
    has none of its own)."""
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"qemu exited with {proc.returncode}")
        try:
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(qga_path)
        except OSError:
            sock.close()
            time.sleep(0.02)
            continue
        agent = GuestAgent(sock, timeout=2)
        try:
            agent.wait_ready(60, attempt=0.5)
            agent.set_user_password("root", password)
            return
        except (OSError, DtsvirtError):
            time.sleep(0.05)
        finally:
            agent.close()


def raw_floor(cfg: str) -> float:
    """Seconds from starting the argv by hand to a successful SSH login (root's password
    set through the agent first, as the framework does)."""
    spec, _ = load_vm_params(cfg, "bench", "vm0").build()
    spec = spec.with_guest(ensure_guest_image())
    run_dir = tempfile.mkdtemp(prefix="dtsb-", dir="/tmp")
    port = free_port()
    argv = build_argv(spec, Placement(run_dir=run_dir, accel="tcg", hostfwd_port=port))
    password = secrets.token_urlsafe(16)
    begin = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        set_root_password(f"{run_dir}/qga.sock", password, proc)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"qemu exited with {proc.returncode}")
            try:
                # short per-attempt timeouts: until the guest's network is up, slirp holds a
                # forwarded connection open without an answer
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                    transport = paramiko.Transport(sock)
                    transport.banner_timeout = 0.5
                    try:
                        transport.start_client(timeout=2)
                        transport.auth_password("root", password)
                        chan = transport.open_session()
                        chan.exec_command("true")
                        chan.recv_exit_status()
                        return time.monotonic() - begin
                    finally:
                        transport.close()
            except (OSError, paramiko.SSHException, EOFError):
                continue
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(run_dir, ignore_errors=True)


def framework(cfg: str, dut: object) -> tuple[float, float]:
    """Seconds for QEMUKvm.start() to a usable VM DUT, and for stop()."""
    vm = QEMUKvm(dut, "vm0", "bench", VmOptions(cfg_path=cfg, accel="tcg"))  # type: ignore[arg-type]
    begin = time.monotonic()
    vm_dut = vm.start()
    vm_dut.send_expect("true", "# ")
    started = time.monotonic() - begin
    begin = time.monotonic()
    vm.stop()
    return started, time.monotonic() - begin


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # the raw floor's failed polls
    workdir = tempfile.mkdtemp(prefix="dtsbench-")
    cfg = os.path.join(workdir, "bench.cfg")
    with open(cfg, "w") as fh:
        fh.write(textwrap.dedent(CFG))
    ensure_guest_image()  # build outside the measurement
    dut = connect(local_dut_config())
    floors, starts, stops = [], [], []
    try:
        for i in range(args.n):
            floors.append(raw_floor(cfg))
            s, t = framework(cfg, dut)
            starts.append(s)
            stops.append(t)
            print(f"round {i + 1}: raw {floors[-1]:.2f} s  start {s:.2f} s  stop {t:.2f} s",
                  flush=True)
    finally:
        dut.close()
        shutil.rmtree(workdir, ignore_errors=True)
    a, b, c = (statistics.median(x) for x in (floors, starts, stops))
    print(f"\nmedians over {args.n} rounds (TCG, fast profile):")
    print(f"  (a) raw floor, argv by hand to SSH login : {a:6.2f} s")
    print(f"  (b) QEMUKvm.start() to a usable VM DUT    : {b:6.2f} s")
    print(f"  (c) QEMUKvm.stop()                        : {c:6.2f} s")
    print(f"  b/a = {b / a:.3f}   (goal <= 1.05; stop goal < 1 s)")


if __name__ == "__main__":
    main()
