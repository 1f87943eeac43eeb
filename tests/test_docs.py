"""The documentation that is generated from code stays in sync with it."""

from pathlib import Path

from pytest_dtsvirt.config import schema

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
