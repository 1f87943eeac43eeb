"""Passwords never reach an output: every secret the framework learns is masked.

Each password, wherever it comes from (a cfg's or marker's ``login``, ``set_vm_login()``,
the DUT config's ``password``, the per-VM ones generated here), is :func:`register`\\ ed when
it is read. From then on :func:`mask` replaces it with ``******`` in any text, and every log
record of the process is masked when it is made (a log record factory, installed on the first
registration), so no handler - pytest's live log, its report sections, a log file - sees it.
The plugin masks test reports (tracebacks, sections, JUnit properties) with :func:`mask` too.

Secrets stay in memory; only a kept VM's generated password is written, to a file of mode
0600 in its private run dir, so that a human can log in.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
from typing import Any

MASK = "******"
#: shorter values are not masked: they protect nothing and masking them would garble every
#: output (a password "x" would hide each word "x")
MIN_LENGTH = 4
#: secrets shorter than this are masked only as a whole word (not inside other words)
_SHORT = 8

_lock = threading.Lock()
_known: set[str] = set()
_pattern: re.Pattern[str] | None = None
_installed = False


def register(value: str | None) -> str | None:
    """Remember ``value`` as a secret (None and values shorter than :data:`MIN_LENGTH`
    are ignored); returns it."""
    global _pattern
    if value and len(value) >= MIN_LENGTH:
        with _lock:
            if value not in _known:
                _known.add(value)
                _pattern = _compile(_known)
                _install_log_masking()
    return value


def generate(nbytes: int = 16) -> str:
    """A fresh random password of ``nbytes`` random bytes in URL-safe characters (4 for 3
    bytes), registered. VNC uses only 8 characters of a password: ``generate(6)``."""
    value = secrets.token_urlsafe(nbytes)
    register(value)
    return value


def _compile(values: set[str]) -> re.Pattern[str]:
    parts = []
    for v in sorted(values, key=len, reverse=True):  # longest first: no partial masks
        esc = re.escape(v)
        parts.append(esc if len(v) >= _SHORT else rf"(?<![A-Za-z0-9_]){esc}(?![A-Za-z0-9_])")
    return re.compile("|".join(parts))


def mask(text: str) -> str:
    """``text`` with every registered secret replaced by ``******``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def contains_secret(text: str) -> bool:
    """True when ``text`` holds a registered secret."""
    pattern = _pattern
    return pattern is not None and pattern.search(text) is not None


def _install_log_masking() -> None:
    """Mask every log record's message when it is made (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to the handler to report
            return record
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            exc_text = logging.Formatter().formatException(record.exc_info)
            if contains_secret(exc_text):
                record.exc_text = mask(exc_text)
                record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)


__all__ = ["MASK", "MIN_LENGTH", "contains_secret", "generate", "mask", "register"]
