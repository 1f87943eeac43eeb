"""Where the config-reader tests find legacy DTS configs.

Two sources: our own small configs in ``tests/configs`` (always there; each idiom of the
legacy files has one), and the corpus of real legacy DTS configs, which is not part of this
repository: it is read from the directory that ``DTSVIRT_CORPUS_DIR`` names. Without that
variable the corpus tests are skipped with :data:`SKIP_REASON`; CI (``.ci/run``) sets it and
fails when the directory is missing, so there they always run. A variable that names no
directory fails those tests (a typo must not turn into a skip).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV = "DTSVIRT_CORPUS_DIR"
#: our own configs, one file or section per legacy idiom
OWN = Path(__file__).resolve().parents[1] / "configs"
SKIP_REASON = (f"legacy DTS config corpus not configured: set {ENV} to a dts-cfg-corpus "
               "directory to run these tests (CI does)")

_value = os.environ.get(ENV, "")
#: the corpus directory, or None when the variable is unset
CORPUS: Path | None = Path(_value) if _value else None

needs_corpus = pytest.mark.skipif(CORPUS is None, reason=SKIP_REASON)


def corpus_dir() -> Path:
    """The corpus directory (call only from a test marked :data:`needs_corpus`)."""
    assert CORPUS is not None, SKIP_REASON
    assert CORPUS.is_dir(), f"{ENV}={_value!r} is not a directory"
    return CORPUS


def corpus_files() -> list[Path]:
    """Every ``*.cfg`` of the corpus (empty when it is not configured)."""
    if CORPUS is None or not CORPUS.is_dir():
        return []
    return sorted(CORPUS.rglob("*.cfg"))


def roots() -> list[object]:
    """Parameters for a test that runs on our configs and on the corpus: ``own`` and
    ``corpus`` (skipped without the corpus). Both hold a ``vxlan_sample.cfg`` with the
    reference's VMs and a ``virt_global.cfg`` beside it."""
    return [pytest.param(OWN, id="own"),
            pytest.param(CORPUS, id="corpus", marks=needs_corpus)]
