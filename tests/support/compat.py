"""Helpers for tests of the compat layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_dtsvirt.compat import context


def as_outside_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the compat layer behave as in a script: no running test's or session's request,
    so a legacy ``VM()`` reads ``conf/`` of the cwd and belongs to no factory."""
    monkeypatch.setattr(context, "_REQUEST", [])
    monkeypatch.setattr(context, "_SESSION", [])


def script_conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> Path:
    """``tmp_path/conf`` with ``files`` (name -> text), ``tmp_path`` the cwd and the compat
    layer as in a script (:func:`as_outside_pytest`): a legacy ``VM()`` reads that dir."""
    as_outside_pytest(monkeypatch)
    conf = tmp_path / "conf"
    conf.mkdir()
    for name, text in files.items():
        (conf / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return conf
