"""The few helpers of legacy ``framework.utils`` that VM suites call (pure)."""

from __future__ import annotations

from collections.abc import Iterable


def RED(text: str) -> str:
    """Legacy: ``text`` in red on a terminal."""
    return f"\x1b[1;31m{text}\x1b[0m"


def GREEN(text: str) -> str:
    """Legacy: ``text`` in green on a terminal."""
    return f"\x1b[1;32m{text}\x1b[0m"


def create_mask(indexes: Iterable[int | str]) -> str:
    """Legacy: the hex CPU mask of lcore numbers (``[0, 1, 3]`` -> ``"0xb"``)."""
    mask = 0
    for index in indexes:
        mask |= 1 << int(index)
    return hex(mask)
