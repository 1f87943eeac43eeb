"""The ``dtsvirt`` command line: ``cmdline``, ``lint``, ``check`` (and subcommands others
register: ``image``, ``boot``, ``reap``).

Adding a subcommand: in your module, call :func:`register_command` at import time and add
the module's dotted name to :data:`COMMAND_MODULES`. User mistakes (DtsvirtError) are
printed as one line each, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_dtsvirt.config.cfgfile import read_cfg
from pytest_dtsvirt.config.load import (
    load_vm_params,
    params_for_section,
    vm_sections,
)
from pytest_dtsvirt.config.model import VmSpec
from pytest_dtsvirt.errors import ConfigError, ConfigWarning, DtsvirtError, Location
from pytest_dtsvirt.qemu.accel import POLICIES

#: modules that register more subcommands when imported (e.g. "pytest_dtsvirt.guest.cli")
COMMAND_MODULES: list[str] = [
    "pytest_dtsvirt.guest.cli",
    "pytest_dtsvirt.runtime.cli",
]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_CHECKABLE = 0, 1, 2, 3

PLACEHOLDER = "<DEFAULT-GUEST-{}: run 'dtsvirt image build'>"


@dataclass(frozen=True)
class Command:
    """A registered subcommand."""

    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


_COMMANDS: dict[str, Command] = {}


def register_command(name: str, help: str, setup: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Add subcommand ``name``: ``setup(parser)`` adds its arguments, ``run(args)`` returns
    the exit code (raise DtsvirtError for user mistakes)."""
    _COMMANDS[name] = Command(name, help, setup, run)


def fmt(loc: Location, message: str, *, warning: bool = False) -> str:
    """``FILE:LINE: [section] key: message`` (``warning:`` after the place for warnings)."""
    where = loc.file if loc.line is None else f"{loc.file}:{loc.line}"
    parts = [f"{where}:"]
    if warning:
        parts.append("warning:")
    if loc.section is not None:
        parts.append(f"[{loc.section}]")
    parts.append(f"{loc.key}: {message}" if loc.key else message)
    return " ".join(parts)


def _err(text: str) -> None:
    print(text, file=sys.stderr)


def _print_warnings(warnings: Sequence[ConfigWarning]) -> None:
    for w in warnings:
        _err(fmt(w.location, w.message, warning=True))


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
    _print_warnings(warnings)
    spec, note = resolve_guest(spec)
    if note:
        _err(f"note: {note}")
    accel, reason = local_accel(args.accel, spec.enable_kvm)
    _err(f"note: accel {accel}: {reason}")
    placement = local_placement(
        spec, accel, args.run_dir or f"/tmp/dtsvirt-{spec.name}",
        hostfwd_port=args.hostfwd_port,
        vnc_display=args.vnc_display if args.vnc_display is not None else 0)
    argv = build_argv(spec, placement)
    for line in notes(spec, placement):
        _err(f"note: {line}")
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
    p.add_argument("cfg", help="suite config file")
    p.add_argument("vm", help="VM section name")
    p.add_argument("--accel", choices=POLICIES, default="auto")


def _run_check(args: argparse.Namespace) -> int:
    from pytest_dtsvirt.qemu.accel import local_accel
    from pytest_dtsvirt.qemu.check import NotCheckable, check_spec

    spec, warnings = load_spec(args.cfg, args.vm)
    _print_warnings(warnings)
    spec, note = resolve_guest(spec)
    if note:
        raise ConfigError(f"cannot check [{args.vm}]: {note}", Location(args.cfg))
    accel, reason = local_accel(args.accel, spec.enable_kvm)
    _err(f"note: accel {accel}: {reason}")
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
    _err(shlex.join(result.argv))
    return EXIT_FAIL


register_command("cmdline", "print the qemu command line of a VM", _setup_cmdline,
                 _run_cmdline)
register_command("lint", "check config files; one line per problem", _setup_lint, _run_lint)
register_command("check", "start qemu paused with the VM's command line, then quit",
                 _setup_check, _run_check)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    for mod in COMMAND_MODULES:
        importlib.import_module(mod)
    parser = argparse.ArgumentParser(
        prog="dtsvirt", description="pytest-dtsvirt by hand: print, lint and check qemu command "
        "lines of DTS suite configs, build the test guest, boot a VM, reap leftovers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in _COMMANDS.values():
        sp = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.setup(sp)
        sp.set_defaults(_run=cmd.run)
    return parser


def _in_context(loc: Location, args: argparse.Namespace) -> Location:
    """Errors found after loading (argv building) know no file: name the command's cfg."""
    if loc.file != Location().file or not hasattr(args, "cfg"):
        return loc
    return dataclasses.replace(loc, file=str(args.cfg), section=loc.section or args.vm)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``dtsvirt``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args._run(args)
        return code
    except ConfigError as exc:
        for pr in exc.problems:
            _err(fmt(_in_context(pr.location, args), pr.message))
        return EXIT_FAIL
    except BrokenPipeError:  # e.g. `dtsvirt cmdline ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - let the interpreter close it
        return EXIT_OK
    except DtsvirtError as exc:
        _err(f"dtsvirt: error: {exc}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    # run the imported module, where the other modules register their subcommands
    from pytest_dtsvirt.cli import main as _main

    sys.exit(_main())


__all__ = ["COMMAND_MODULES", "Command", "fmt", "lint_file", "main", "register_command"]
