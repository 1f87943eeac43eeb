"""Helpers for tests of the compat layer."""

from __future__ import annotations

import pytest

from pytest_dtsvirt.compat import context


def as_outside_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the compat layer behave as in a script: no running test's or session's request,
    so a legacy ``VM()`` reads ``conf/`` of the cwd and belongs to no factory."""
    monkeypatch.setattr(context, "_REQUEST", [])
    monkeypatch.setattr(context, "_SESSION", [])
