"""``dtsvirt boot`` and ``dtsvirt reap``: the runtime's steps by hand.

``dtsvirt boot CFG VM [--dut SPEC] [--exec CMD] [--keep]`` boots one VM of a suite config,
logs each readiness phase with its time, then runs CMD in the guest (exit status of CMD) or
opens an interactive shell, and tears the VM down unless ``--keep``.
``dtsvirt reap [--dut SPEC]`` removes leftovers of crashed runs on a DUT.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import sys
from pathlib import Path
from typing import Any

from pytest_dtsvirt.cli.command import Command
from pytest_dtsvirt.errors import ConfigError, Location
from pytest_dtsvirt.guest import DEFAULT_SSH, SSH_SERVERS
from pytest_dtsvirt.hypervisor import VmOptions
from pytest_dtsvirt.qemu.accel import POLICIES
from pytest_dtsvirt.runtime import rundir
from pytest_dtsvirt.session.channel import Pty, start_channel
from pytest_dtsvirt.session.dut import connect
from pytest_dtsvirt.session.dutconfig import (
    DutConfig,
    load_dut_configs,
    local_dut_config,
    parse_dut_spec,
)


def dut_arg(parser: argparse.ArgumentParser, what: str = "the DUT") -> None:
    """``--dut SPEC`` and ``--duts FILE`` (read back by :func:`dut_config`)."""
    parser.add_argument("--dut", default=None, metavar="SPEC",
                        help=f"{what}: 'local' (default) or [user@]host[:port] over SSH; "
                             "with --duts, the name of a DUT in that file (default: the first)")
    parser.add_argument("--duts", default=None, metavar="FILE",
                        help="a DUT config file (the format of --dtsvirt-duts)")


def dut_config(args: argparse.Namespace) -> DutConfig:
    """The DutConfig ``--dut``/``--duts`` name (the local machine by default)."""
    if args.duts is None:
        return local_dut_config() if args.dut in (None, "local") else parse_dut_spec(args.dut)
    configs = load_dut_configs(args.duts)
    if args.dut is None:
        return configs[0]
    for config in configs:
        if config.name == args.dut:
            return config
    raise ConfigError(f"no DUT {args.dut!r}; the file names: "
                      f"{', '.join(c.name for c in configs)}", Location(args.duts))


def _setup_boot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("cfg", help="suite config file (conf/<suite>.cfg)")
    parser.add_argument("vm", help="VM section name, e.g. vm0")
    dut_arg(parser)
    parser.add_argument("--exec", dest="command", metavar="CMD",
                        help="run CMD in the guest (through its shell) and exit with its status")
    parser.add_argument("--keep", action="store_true",
                        help="leave the VM running and print how to reach it")
    parser.add_argument("--accel", choices=POLICIES, default="auto",
                        help="accelerator policy (default: auto)")
    parser.add_argument("--boot-timeout", type=float, default=None, metavar="S",
                        help="boot budget in seconds (default: the cfg's start wait_seconds)")
    parser.add_argument("--cache-dir", default=None, help="test guest cache directory")
    parser.add_argument("--guest-ssh", choices=SSH_SERVERS, default=DEFAULT_SSH,
                        help="SSH server of the default test guest (default: dropbear)")


def _run_boot(args: argparse.Namespace) -> int:
    from pytest_dtsvirt.qemu.kvm import QEMUKvm

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(message)s", datefmt="%H:%M:%S")
    for noisy in ("paramiko", "qemu.qmp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    dut = connect(dut_config(args))
    suite = Path(args.cfg).stem
    options = VmOptions(cfg_path=args.cfg, accel=args.accel, boot_timeout=args.boot_timeout,
                        cache_dir=args.cache_dir, guest_ssh=args.guest_ssh)
    vm = QEMUKvm(dut, args.vm, suite, options)
    try:
        vm_dut = vm.start()
        for phase, seconds in vm.phase_timings.items():
            print(f"{phase:>13}: {seconds:6.2f} s", file=sys.stderr)
        if args.command is not None:
            result = vm_dut.session.run(["sh", "-c", args.command], timeout=None)
            sys.stdout.write(result.stdout)
            sys.stderr.write(result.stderr)
            status = result.exit_status
        else:
            status = _interactive(vm_dut.session)
        if args.keep:
            print(f"VM {args.vm} left running; reach it with:\n{vm.keep()}", file=sys.stderr)
        return status
    finally:
        if not args.keep:
            vm.stop()
        dut.close()


def _interactive(session: Any) -> int:
    """A terminal on the guest through the session's SSH transport (raw tty bridge)."""
    import termios
    import tty

    size = os.get_terminal_size() if sys.stdin.isatty() else os.terminal_size((80, 24))
    pty = Pty(os.environ.get("TERM", "xterm"), size.columns, size.lines)
    chan = start_channel(session.transport, None, name=session.name, timeout=30.0, pty=pty)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    try:
        if saved is not None:
            tty.setraw(fd)
        while not chan.exit_status_ready() or chan.recv_ready():
            ready, _, _ = select.select([chan, fd], [], [], 0.5)
            if chan in ready:
                data = chan.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if fd in ready:
                data = os.read(fd, 1024)
                if not data:
                    chan.shutdown_write()
                else:
                    chan.sendall(data)
        return int(chan.recv_exit_status())
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        chan.close()


def _setup_reap(parser: argparse.ArgumentParser) -> None:
    dut_arg(parser)


def _run_reap(args: argparse.Namespace) -> int:
    config = dut_config(args)
    dut = connect(config)
    try:
        reaped = rundir.reap(dut.session, config.workdir)
    finally:
        dut.close()
    for path in reaped:
        print(f"reaped {config.name}:{path}")
    print(f"{len(reaped)} leftover run dir(s) removed from {config.name}:{config.workdir}",
          file=sys.stderr)
    return 0


COMMANDS = (
    Command("boot", "boot a VM of a suite config, run a command or a shell, tear down",
            _setup_boot, _run_boot),
    Command("reap", "remove leftovers of crashed dtsvirt runs on a DUT",
            _setup_reap, _run_reap),
)
