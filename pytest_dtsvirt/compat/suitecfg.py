"""The ``[suite]`` section of a suite cfg, typed like the legacy reader (pure).

Legacy DTS evaluated each value of ``[suite]`` as Python (``packet_sizes = [64, 128]`` gave
a list, ``update_expected = True`` a bool). Here a value is read with
:func:`ast.literal_eval` (literals only: numbers, strings, lists, tuples, dicts, sets,
booleans, None); anything else stays the raw string, as legacy code that got a NameError
would have had to quote it anyway. Nothing is ever executed.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Any

from pytest_dtsvirt.config.cfgfile import read_cfg

SUITE_SECTION = "suite"


def typed(value: str) -> Any:
    """One legacy ``[suite]`` value: its Python literal, else the string (stripped)."""
    text = value.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def load_suite_cfg(cfg_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The typed ``[suite]`` section of ``cfg_path``; ``{}`` when the file or the section
    is missing (legacy: an empty suite cfg). A malformed file is a ConfigError."""
    path = Path(cfg_path)
    if not path.is_file():
        return {}
    cfg = read_cfg(path)
    section = next((s for s in cfg.sections if s.name == SUITE_SECTION), None)
    if section is None:
        return {}
    return {key: typed(raw) for key, raw in section.raw.items()}
