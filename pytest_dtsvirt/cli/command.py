"""What every ``dtsvirt`` subcommand module shares: the :class:`Command` record, the exit
codes and the ``FILE:LINE: [section] key: message`` format of problems."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_dtsvirt.errors import ConfigWarning, Location

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_CHECKABLE = 0, 1, 2, 3


@dataclass(frozen=True)
class Command:
    """A subcommand: ``setup(parser)`` adds its arguments, ``run(args)`` returns the exit
    code (and raises DtsvirtError for user mistakes)."""

    name: str
    help: str
    setup: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


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


def err(text: str) -> None:
    """One line to stderr."""
    print(text, file=sys.stderr)


def print_warnings(warnings: Sequence[ConfigWarning]) -> None:
    """Config warnings to stderr, one line each."""
    for w in warnings:
        err(fmt(w.location, w.message, warning=True))
