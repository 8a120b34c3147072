"""Every public name of a package is exported exactly once, from a private module (STYLE 1)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["grammar", "dag", "executors", "cache", "oci", "reapi"]


@pytest.mark.parametrize("package", PACKAGES)
def test_public_names_exported_once(package: str) -> None:
    source = (REPO / package / "__init__.py").read_text()
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom) and node.level == 1:  # from ._x import Name as Name
            names += [alias.asname or alias.name for alias in node.names]
    module = importlib.import_module(f"pybuild.{package}")
    if hasattr(module, "__all__"):  # a package with lazily loaded names lists them all here
        assert set(names) <= set(module.__all__)
        names = list(module.__all__)
    assert len(names) == len(set(names)), "a name is exported twice"
    for name in names:
        assert hasattr(module, name), name
        assert not name.startswith("_"), name


def test_grammar_exports_parse() -> None:
    grammar = importlib.import_module("pybuild.grammar")
    assert callable(grammar.parse) and callable(grammar.parse_ast) and callable(grammar.dump)


def test_lark_types_stay_inside_grammar() -> None:
    for package in ("dag", "executors", "cache", "oci", "cli"):
        for path in (REPO / package).rglob("*.py"):
            assert "import lark" not in path.read_text() and "from lark" not in path.read_text(), path


@pytest.mark.parametrize("package", PACKAGES)
def test_lazily_exported_names_resolve(package: str) -> None:
    """A name loaded on first use still points at a module that defines it (after a module moves)."""
    module = importlib.import_module(f"pybuild.{package}")
    lazy = getattr(module, "_LAZY", {})
    for name, where in lazy.items():
        defining = importlib.import_module(where, module.__name__)
        assert getattr(defining, name, None) is getattr(module, name), f"{name} from {where}"
        assert not name.startswith("_"), name
