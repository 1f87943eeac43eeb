"""Which DUT a pytest-xdist worker uses. Pure.

Worker ``gwN`` takes DUT ``N mod K`` of the K DUTs in the DUT config; a run without xdist
(or the xdist controller) takes the first. Independent of the ``--dist`` mode: the
assignment depends only on the worker, so ``load``, ``loadgroup``, ``loadscope`` and
``each`` all work.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")

_WORKER = re.compile(r"gw(\d+)")


def worker_id(environ: Mapping[str, str] | None = None) -> str | None:
    """This process's xdist worker id (``gw0``...), or None outside a worker."""
    env = os.environ if environ is None else environ
    return env.get("PYTEST_XDIST_WORKER") or None


def worker_index(worker: str | None) -> int:
    """``gwN`` -> N; None, ``master`` or ``controller`` -> 0.

    Raises ValueError for any other id, rather than guessing."""
    if worker is None or worker in ("master", "controller"):
        return 0
    match = _WORKER.fullmatch(worker)
    if match is None:
        raise ValueError(f"not an xdist worker id: {worker!r} (expected gw0, gw1, ...)")
    return int(match.group(1))


def assign(duts: Sequence[T], worker: str | None) -> T:
    """The DUT of ``worker``: ``duts[N % len(duts)]`` for ``gwN``, ``duts[0]`` otherwise."""
    if not duts:
        raise ValueError("the DUT list is empty")
    return duts[worker_index(worker) % len(duts)]


__all__ = ["assign", "worker_id", "worker_index"]
