"""No module imports, even only for type checking, a module that imports it back.

A cycle makes the order of imports matter and hides which module depends on
which; imports inside functions (loaded on first use) are not counted, the
ones under ``if TYPE_CHECKING:`` are.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SKIPPED = {".venv", "tests", "build", "benchmarks", "examples"}


def module_name(path: Path, root: Path) -> str:
    parts = ["pybuild", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_level_imports(body: list[ast.stmt], package: str) -> Iterator[tuple[str, str | None]]:
    """(module, name) of each import outside functions (``if`` and ``try`` blocks included)."""
    for node in body:
        if isinstance(node, ast.If | ast.Try):
            yield from module_level_imports([*node.body, *node.orelse], package)
        elif isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield from ((module, alias.name) for alias in node.names)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules it imports; ``from package import _module`` is an edge to the module alone."""
    paths = {module_name(p, root): p for p in root.rglob("*.py") if not SKIPPED & set(p.relative_to(root).parts)}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        graph[name] = set()
        for module, imported in module_level_imports(ast.parse(path.read_text()).body, package):
            target = f"{module}.{imported}" if f"{module}.{imported}" in paths else module
            if target in paths and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            component = stack[stack.index(module):]
            del stack[stack.index(module):]
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return found


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(import_graph(REPO)) == []


def test_a_cycle_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    (tmp_path / "dag").mkdir()
    (tmp_path / "dag" / "__init__.py").write_text("")
    (tmp_path / "dag" / "_a.py").write_text("from ._b import helper\n")
    (tmp_path / "dag" / "_b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ._a import A\n")
    (tmp_path / "dag" / "_c.py").write_text("def later():\n    from ._a import A\n")  # loaded on first use: not counted
    (tmp_path / "dag" / "_d.py").write_text("from . import _c\n")
    assert cycles(import_graph(tmp_path)) == [["pybuild.dag._a", "pybuild.dag._b"]]
