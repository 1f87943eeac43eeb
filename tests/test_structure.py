"""The package's import graph, read from the source with ``ast``: no import circle, no
import that runs upward through the layers, every error class in ``errors.py`` (pure code).

An import counts wherever it is written (module level, inside a function, under
``TYPE_CHECKING``), and so does a string naming a module of the package (an
``importlib.import_module`` target), except a module naming itself or its own package
(logger names, package resources).
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PACKAGE = "pytest_dtsvirt"
SOURCE = Path(__file__).resolve().parents[1] / PACKAGE

#: lowest first; a module may import modules of its own layer and of the layers below.
#: A module belongs to the layer of the longest entry that is it or a package above it
#: ("" is the package itself: the public API).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "secret", "shacrypt", "unixsock", "xdist_duts"),
    ("config", "guest", "marker"),
    ("session", "dpdk"),
    ("qemu", "runtime"),
    ("hypervisor", "qemu.kvm", "vhost", "testing", "backends"),
    ("vmfactory",),
    ("fixtures", "plugin", "compat"),
    ("cli", "__main__", ""),
)


def _modules() -> dict[str, Path]:
    mods = {}
    for path in SOURCE.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(SOURCE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _resolve(module: str, name: str | None = None) -> str | None:
    """The module an import names: ``from a.b import c`` is ``a.b.c`` if that is a module."""
    if name is not None and f"{module}.{name}" in MODULES:
        return f"{module}.{name}"
    return module if module in MODULES else None


def imports_of(module: str) -> set[str]:
    """The package's modules that ``module`` imports (see the module docstring)."""
    tree = ast.parse(MODULES[module].read_text())
    found: set[str] = set()
    own = {module.rsplit(".", n)[0] for n in range(module.count(".") + 1)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {m for a in node.names if (m := _resolve(a.name))}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {m for a in node.names if (m := _resolve(node.module, a.name))}
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value in MODULES and node.value not in own):
            found.add(node.value)
    found.discard(module)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def layer_of(module: str) -> int:
    rel = module[len(PACKAGE) + 1:]
    best = max((entry for layer in LAYERS for entry in layer
                if entry == "" or rel == entry or rel.startswith(entry + ".")), key=len)
    return next(i for i, layer in enumerate(LAYERS) if best in layer)


def test_every_module_has_a_layer_and_the_graph_is_read() -> None:
    assert len(MODULES) > 40
    for module in MODULES:
        layer_of(module)
    assert "pytest_dtsvirt.session.base" in GRAPH["pytest_dtsvirt.session.dut"]
    assert "pytest_dtsvirt.cli.runtime" in GRAPH["pytest_dtsvirt.cli"]
    # a string naming another module counts (as the old registry of built-in backends did)
    assert "pytest_dtsvirt.qemu.kvm" in GRAPH[f"{PACKAGE}"]


def test_no_import_runs_upward() -> None:
    upward = sorted(f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
                    for m, deps in GRAPH.items() for d in deps if layer_of(d) > layer_of(m))
    assert upward == []


def _cycles() -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle() -> None:
    assert _cycles() == []


def test_the_cycle_finder_finds_one() -> None:
    saved = GRAPH["pytest_dtsvirt.errors"]
    GRAPH["pytest_dtsvirt.errors"] = saved | {"pytest_dtsvirt.session.dut"}
    try:
        assert any({"pytest_dtsvirt.errors", "pytest_dtsvirt.session.dut"} <= set(cycle)
                   for cycle in _cycles())
    finally:
        GRAPH["pytest_dtsvirt.errors"] = saved


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))
def test_exception_classes_live_in_errors(module: str) -> None:
    """Every exception class of the package is defined in errors.py, under DtsvirtError."""
    from pytest_dtsvirt.errors import DtsvirtError

    mod = importlib.import_module(module)
    for name, obj in vars(mod).items():
        if inspect.isclass(obj) and issubclass(obj, BaseException) \
                and obj.__module__ == module:
            assert module == f"{PACKAGE}.errors", f"{module}.{name} belongs in errors.py"
            assert issubclass(obj, DtsvirtError), f"{name} is outside the DtsvirtError tree"
