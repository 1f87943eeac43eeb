"""The documentation that is generated from code stays in sync with it."""

import os
import re
from pathlib import Path

import pytest

from pytest_dtsvirt.config import schema
from pytest_dtsvirt.config.cfgfile import parse_cfg
from pytest_dtsvirt.config.load import params_for_section, vm_sections
from pytest_dtsvirt.session.dutconfig import parse_dut_configs

ROOT = Path(__file__).resolve().parents[1]


def test_parameter_reference_matches_the_schema() -> None:
    doc = (ROOT / "docs" / "parameters.md").read_text()
    assert schema.render_markdown().strip() in doc, (
        "docs/parameters.md is stale: regenerate it from schema.render_markdown()")


def test_readme_opens_with_the_two_commands() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    block = lines[lines.index("```sh") + 1: lines.index("```", lines.index("```sh"))]
    assert [line.split("#")[0].strip() for line in block] == [
        "scripts/run example", "scripts/run tests"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/run tests" in ci


# ---- every config sample of the docs parses -----------------------------------------------

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "examples").glob("*/README.md"))]
#: keys only a DUT config (--dtsvirt-duts) has: a sample with them is a DUT config
DUT_KEYS = {"host", "known_hosts", "host_key_check", "workdir", "memory_channels"}


def _ini_samples() -> list[tuple[Path, int, str]]:
    """``(doc, line of the block's first line, text)`` of every ```ini block, the text
    padded with blank lines so the reader's line numbers are the document's."""
    out = []
    for doc in DOCS:
        text = doc.read_text()
        for m in re.finditer(r"^```ini\n(.*?)^```", text, re.S | re.M):
            line = text.count("\n", 0, m.start(1)) + 1
            out.append((doc, line, "\n" * (line - 1) + m.group(1)))
    return out


SAMPLES = _ini_samples()


def _is_dut_config(text: str) -> bool:
    keys = {m.group(1) for m in re.finditer(r"^(\w+)\s*=", text, re.M)}
    return bool(keys & DUT_KEYS)


def _sample_params() -> list[object]:
    params = []
    for doc, line, text in SAMPLES:
        name = f"{doc.relative_to(ROOT)}:{line}"
        if _is_dut_config(text):
            params.append(pytest.param(doc, text, id=f"dut-config-{name}"))
        else:
            params.append(pytest.param(doc, text, id=f"suite-config-{name}"))
    return params


def test_the_docs_have_both_kinds_of_samples() -> None:
    kinds = [_is_dut_config(text) for _, _, text in SAMPLES]
    assert True in kinds and False in kinds


@pytest.mark.parametrize(("doc", "text"), _sample_params())
def test_config_sample_parses(doc: Path, text: str) -> None:
    """Each config sample reads without a problem, as a user who copies it would read it."""
    where = str(doc.relative_to(ROOT))
    if not _is_dut_config(text):
        cfg = parse_cfg(text, where)
        sections = vm_sections(cfg)
        assert sections, f"{where}: a suite config sample without a VM section"
        for section in sections:
            _, problems, _ = params_for_section(section, where).check()
            assert [str(p) for p in problems] == []
        return
    configs = parse_dut_configs(text, where)
    assert configs
    # every value is what the sample writes before its comment (a copied sample works)
    for m in re.finditer(r"^(\w+)\s*=\s*(.*)$", text, re.M):
        key, written = m.group(1), re.split(r"\s+[;#]", m.group(2))[0].strip()
        value = getattr(configs[0], key)
        assert str(value) in (written, os.path.expanduser(written)), (key, value)


# ---- Markdown that renders as written --------------------------------------------------------

def test_table_rows_have_as_many_cells_as_their_header() -> None:
    """An unescaped ``|`` inside a cell (even in backticks) starts a new cell in GitHub's
    Markdown and shifts the rest of the row."""
    for doc in DOCS:
        header = None
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if not line.startswith("|"):
                header = None
                continue
            cells = len(re.split(r"(?<!\\)\|", line))
            if header is None:
                header = cells
            assert cells == header, f"{doc.relative_to(ROOT)}:{number}: {cells - 2} cells"


# ---- nothing outside the repository ----------------------------------------------------------

#: what names a path beside the checkout or on a development machine (split so this file
#: does not name them itself)
OUTSIDE = ("../" + "shared", "/" + "work/", "/" + "root/")
SKIP_DIRS = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__",
             ".hypothesis"}


def _repo_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if path.is_file() and not SKIP_DIRS & set(rel.parts) \
                and not any(p.endswith(".egg-info") for p in rel.parts):
            out.append(path)
    return out


def test_no_file_names_a_path_outside_the_repository() -> None:
    """Only CI (.ci/) may name the corpus beside the checkout."""
    found = []
    for path in _repo_files():
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("examples/dts_ports/") and rel.endswith(".py") and \
                "/test_" in rel:
            continue  # legacy suite text kept as written (its paths are the guest's)
        for needle in OUTSIDE:
            if needle in text and not (rel.startswith(".ci/") and needle == OUTSIDE[0]):
                found.append(f"{rel}: {needle}")
    assert found == []
