"""The ``dtsvirt`` command line.

Each subcommand module of this package lists its :class:`~pytest_dtsvirt.cli.command.Command`
records in ``COMMANDS``: :mod:`~pytest_dtsvirt.cli.config` (``cmdline``, ``lint``,
``check``), :mod:`~pytest_dtsvirt.cli.image` (``image``) and
:mod:`~pytest_dtsvirt.cli.runtime` (``boot``, ``reap``). Adding a subcommand: add its record
to a module's ``COMMANDS`` (or a new module to :data:`MODULES`). User mistakes (DtsvirtError)
are printed as one line each, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from pytest_dtsvirt.cli import config, image, runtime
from pytest_dtsvirt.cli.command import (
    EXIT_FAIL,
    EXIT_NOT_CHECKABLE,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    err,
    fmt,
)
from pytest_dtsvirt.cli.config import lint_file
from pytest_dtsvirt.errors import ConfigError, DtsvirtError, Location

#: the subcommand modules, in the order of ``dtsvirt --help``
MODULES = (config, image, runtime)
#: every subcommand
COMMANDS: tuple[Command, ...] = tuple(cmd for mod in MODULES for cmd in mod.COMMANDS)


def build_parser() -> argparse.ArgumentParser:
    """The parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="dtsvirt", description="pytest-dtsvirt by hand: print, lint and check qemu command "
        "lines of DTS suite configs, build the test guest, boot a VM, reap leftovers.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS:
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
            err(fmt(_in_context(pr.location, args), pr.message))
        return EXIT_FAIL
    except BrokenPipeError:  # e.g. `dtsvirt cmdline ... | head`
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - let the interpreter close it
        return EXIT_OK
    except DtsvirtError as exc:
        err(f"dtsvirt: error: {exc}")
        return EXIT_FAIL
    except KeyboardInterrupt:
        return 130


__all__ = ["COMMANDS", "EXIT_FAIL", "EXIT_NOT_CHECKABLE", "EXIT_OK", "EXIT_USAGE", "MODULES",
           "Command", "build_parser", "fmt", "lint_file", "main"]
