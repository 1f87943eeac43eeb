"""``dtsvirt cmdline``, ``lint`` and ``check``: a suite config's qemu command line printed,
its problems listed, and the real qemu started paused on it."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from pytest_dtsvirt.cli.command import (
    EXIT_FAIL,
    EXIT_NOT_CHECKABLE,
    EXIT_OK,
    Command,
    err,
    fmt,
    print_warnings,
)
from pytest_dtsvirt.config.cfgfile import read_cfg
from pytest_dtsvirt.config.load import (
    load_vm_params,
    params_for_section,
    vm_sections,
)
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError, ConfigWarning, DtsvirtError, Location
from pytest_dtsvirt.qemu.accel import POLICIES

PLACEHOLDER = "<DEFAULT-GUEST-{}: run 'dtsvirt image build'>"


def load_spec(cfg: str, vm: str) -> tuple[VmSpec, list[ConfigWarning]]:
    """The VmSpec of section ``vm`` of ``cfg`` (with ``virt_global.cfg`` next to it)."""
    return load_vm_params(cfg, Path(cfg).stem, vm).build()


def resolve_guest(spec: VmSpec) -> tuple[VmSpec, str | None]:
    """``spec`` with the default guest filled in; placeholders (and a note) when the guest
    image cannot be had."""
    if not spec.uses_default_guest:
        return spec, None
    from pytest_dtsvirt import guest

    try:
        image = guest.ensure_guest_image(dpdk=spec.guest.dpdk)
        return spec.with_guest(image), None
    except DtsvirtError as exc:
        note = f"default guest image not available ({exc}); placeholder paths"
        ph = guest.GuestImage(kernel=PLACEHOLDER.format("KERNEL"),
                              vmlinux=PLACEHOLDER.format("VMLINUX"),
                              initrd=PLACEHOLDER.format("INITRD"), append="console=ttyS0",
                              disk=None, key="placeholder", packages={})
        return spec.with_guest(ph), note


# ---- cmdline -------------------------------------------------------------------------------

def _setup_cmdline(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", help="suite config file")
    p.add_argument("vm", help="VM section name")
    p.add_argument("--json", action="store_true", help="print a JSON list of strings")
    p.add_argument("--accel", choices=POLICIES, default="auto")
    p.add_argument("--run-dir", help="run dir (default /tmp/dtsvirt-<vm>; create it 0700)")
    p.add_argument("--hostfwd-port", type=int, help="SSH port on 127.0.0.1 (default: free)")
    p.add_argument("--vnc-display", type=int, help="VNC display when the cfg names none")


def _run_cmdline(args: argparse.Namespace) -> int:
    from pytest_dtsvirt.qemu.accel import local_accel
    from pytest_dtsvirt.qemu.argv import build_argv, notes
    from pytest_dtsvirt.qemu.check import local_placement

    spec, warnings = load_spec(args.cfg, args.vm)
    print_warnings(warnings)
    spec, note = resolve_guest(spec)
    if note:
        err(f"note: {note}")
    accel, reason = local_accel(args.accel, spec.enable_kvm)
    err(f"note: accel {accel}: {reason}")
    placement = local_placement(
        spec, accel, args.run_dir or f"/tmp/dtsvirt-{spec.name}",
        hostfwd_port=args.hostfwd_port,
        vnc_display=args.vnc_display if args.vnc_display is not None else 0)
    argv = build_argv(spec, placement)
    for line in notes(spec, placement):
        err(f"note: {line}")
    print(json.dumps(argv) if args.json else shlex.join(argv))
    return EXIT_OK


# ---- lint ----------------------------------------------------------------------------------

def lint_file(path: str) -> tuple[list[ConfigError], list[ConfigWarning]]:
    """Every problem and warning of every VM section of one file."""
    try:
        cfg = read_cfg(path)
    except ConfigError as exc:
        return list(exc.problems), []
    problems: list[ConfigError] = []
    warnings: list[ConfigWarning] = []
    for section in vm_sections(cfg):
        _, probs, warns = params_for_section(section, path).check()
        problems += probs
        warnings += warns
    return problems, warnings


def _setup_lint(p: argparse.ArgumentParser) -> None:
    p.add_argument("cfg", nargs="+", help="suite config files")


def _run_lint(args: argparse.Namespace) -> int:
    failed = False
    for path in args.cfg:
        problems, warnings = lint_file(path)
        for pr in problems:
            print(fmt(pr.location, pr.message))
        for w in warnings:
            print(fmt(w.location, w.message, warning=True))
        failed = failed or bool(problems)
    return EXIT_FAIL if failed else EXIT_OK


# ---- check ---------------------------------------------------------------------------------

def _setup_check(p: argparse.ArgumentParser) -> None:
    from pytest_dtsvirt.cli.runtime import dut_arg

    p.add_argument("cfg", help="suite config file")
    p.add_argument("vm", help="VM section name")
    p.add_argument("--accel", choices=POLICIES, default="auto")
    dut_arg(p, "the DUT whose CPUs, hugepages and files are checked (qemu itself is "
               "checked here, on this machine, only for the local DUT)")


def check_dut_facts(args: argparse.Namespace) -> tuple[bool, str | None]:
    """The VM's config against the DUT's facts (``--dut``, default this machine); the
    problems printed like lint's. ``(ok, the DUT's name unless it is local)``."""
    from pytest_dtsvirt.cli.runtime import dut_config
    from pytest_dtsvirt.qemu.dutfacts import check_on_dut
    from pytest_dtsvirt.session.dut import connect

    config = dut_config(args)
    params = load_vm_params(args.cfg, Path(args.cfg).stem, args.vm)
    spec, _ = params.build()
    dut = connect(config)
    try:
        check_on_dut(params, spec, dut.session, config.name)
    except ConfigError as exc:
        for pr in exc.problems:
            print(fmt(pr.location, pr.message))
        return False, None
    finally:
        dut.close()
    err(f"note: DUT {config.name}: CPUs, hugepages and files are there")
    return True, None if config.is_local else config.name


def _run_check(args: argparse.Namespace) -> int:
    from pytest_dtsvirt.errors import NotCheckable
    from pytest_dtsvirt.qemu.accel import local_accel
    from pytest_dtsvirt.qemu.check import check_spec

    spec, warnings = load_spec(args.cfg, args.vm)
    print_warnings(warnings)
    facts_ok, remote = check_dut_facts(args)
    if not facts_ok:
        return EXIT_FAIL
    if remote is not None:
        print(f"{args.cfg}: [{args.vm}]: DUT {remote}: the config fits (qemu's own check "
              "runs on the local DUT only)")
        return EXIT_OK
    spec, note = resolve_guest(spec)
    if note:
        raise ConfigError(f"cannot check [{args.vm}]: {note}", Location(args.cfg))
    accel, reason = local_accel(args.accel, spec.enable_kvm)
    err(f"note: accel {accel}: {reason}")
    try:
        result = check_spec(spec, accel)
    except NotCheckable as exc:
        print(f"{args.cfg}: [{args.vm}]: not checkable: " + "; ".join(exc.reasons))
        return EXIT_NOT_CHECKABLE
    if result.ok:
        print(f"{args.cfg}: [{args.vm}]: qemu accepts the command line "
              f"(status {result.status}, {result.seconds:.2f} s)")
        return EXIT_OK
    print(f"{args.cfg}: [{args.vm}]: qemu refused the command line:\n{result.message}")
    err(shlex.join(result.argv))
    return EXIT_FAIL


COMMANDS = (
    Command("cmdline", "print the qemu command line of a VM", _setup_cmdline, _run_cmdline),
    Command("lint", "check config files; one line per problem", _setup_lint, _run_lint),
    Command("check", "start qemu paused with the VM's command line, then quit",
            _setup_check, _run_check),
)
