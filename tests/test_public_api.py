"""The public API: ``from pytest_dtsvirt import ...`` gives what a suite author uses, and the
README, the docs and the example import from there (pure code, no qemu)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest_dtsvirt
from pytest_dtsvirt import errors

ROOT = Path(__file__).resolve().parents[1]
#: probe signals of the boot ladder: in the error tree, never raised to a test
INTERNAL_ERRORS = {"NotYet", "Fatal"}


def test_every_name_in_all_imports() -> None:
    assert len(set(pytest_dtsvirt.__all__)) == len(pytest_dtsvirt.__all__)
    namespace: dict[str, object] = {}
    exec("from pytest_dtsvirt import *", namespace)
    for name in pytest_dtsvirt.__all__:
        assert name in namespace, name
        obj = getattr(pytest_dtsvirt, name)
        if name != "__version__":
            assert inspect.getdoc(obj), f"{name} has no docstring"
    assert set(dir(pytest_dtsvirt)) >= set(pytest_dtsvirt.__all__)


def test_what_a_suite_author_uses_is_there() -> None:
    for name in ("VmFactory", "QEMUKvm", "Hypervisor", "Dut", "VmDut", "TestpmdBackend",
                 "TestpmdHost", "DtsvirtError", "ConfigError", "VmStartError"):
        assert name in pytest_dtsvirt.__all__, name
    tree = {name for name, obj in vars(errors).items()
            if inspect.isclass(obj) and issubclass(obj, errors.DtsvirtError)}
    assert tree - INTERNAL_ERRORS <= set(pytest_dtsvirt.__all__)


def test_the_vm_fixture_type_has_what_the_readme_promises() -> None:
    """The fixture table's ``vm`` row names attributes; the type the fixture is annotated
    with (Hypervisor) and the qemu backend have each of them."""
    from pytest_dtsvirt import Hypervisor, QEMUKvm
    from pytest_dtsvirt.fixtures import vm

    readme = (ROOT / "README.md").read_text()
    row = next(line for line in readme.splitlines() if line.startswith("| `vm`, `vm_dut`"))
    promised = re.findall(r"`(\w+)`", row.split("(", 1)[1].split(")", 1)[0])
    assert {"pci_maps", "qmp", "agent", "monitor_socket"} <= set(promised)
    assert inspect.signature(vm).return_annotation in ("Hypervisor", Hypervisor)
    for name in promised:
        assert hasattr(Hypervisor, name), name
        assert hasattr(QEMUKvm, name), name
    doc = inspect.getdoc(vm) or ""
    listed = doc.split("(", 1)[1].split(");", 1)[0]  # "(the Hypervisor: ``pci_maps``, ...)"
    assert "pci_maps" in listed
    for name in re.findall(r"``(\w+)(?:\(\))?``", listed):
        assert hasattr(Hypervisor, name), f"the vm fixture's docstring names {name!r}"


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, re.S)


def _imports(code: str) -> list[str]:
    return [line.strip() for line in code.splitlines()
            if re.match(r"\s*(from|import) pytest_dtsvirt", line)]


def test_readme_and_docs_examples_import_from_the_public_api() -> None:
    lines = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in _python_blocks(doc.read_text()):
            lines += _imports(block)
    assert "from pytest_dtsvirt import QEMUKvm" in lines
    for line in lines:
        assert line.startswith("from pytest_dtsvirt import "), line
        exec(line, {})


def test_the_example_suite_imports_from_the_public_api() -> None:
    ports = ROOT / "examples" / "dts_ports"  # ported legacy suites: the compat layer's API
    for path in sorted((ROOT / "examples").rglob("*.py")):
        allowed = ("from pytest_dtsvirt import ",)
        if ports in path.parents:
            allowed += ("from pytest_dtsvirt.compat", "import pytest_dtsvirt.compat.",
                        "from pytest_dtsvirt.errors import ")
        for line in _imports(path.read_text()):
            assert line.startswith(allowed), f"{path.name}: {line}"
