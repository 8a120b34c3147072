"""Packages meet only at their public surfaces (HACKING "Layers and imports").

A package's ``_x`` modules are its own: another package imports what it needs
from the package itself (``from pybuild.oci import apply_layer``), never from
``pybuild.oci._tar_apply``.  The check reads the source with ``ast``, so it
also sees imports inside functions and under ``TYPE_CHECKING`` that running
the code would not reach.  Tests may import private modules (they test them).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("grammar", "dag", "executors", "cache", "oci", "cli", "reapi")
DOTTED = re.compile(r"pybuild(\.\w+)+")  # a module named in a string, for importlib.import_module


def module_name(path: Path) -> str:
    """``dag/_build.py`` -> ``pybuild.dag._build``; ``oci/__init__.py`` -> ``pybuild.oci``."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["pybuild", *parts])


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of everything an import statement names, resolved to absolute names.

    ``from X import y`` yields ``X.y``: ``y`` may be a submodule, and a name with a
    leading underscore is private whether it is a module or not.  A string that is
    a dotted ``pybuild.`` name counts too: ``import_module`` would load it.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and DOTTED.fullmatch(node.value):
            yield node.lineno, node.value


def owning_package(dotted: str) -> str | None:
    """``pybuild.oci._store.X`` -> ``oci``; None outside the layered packages."""
    parts = dotted.split(".")
    if len(parts) >= 2 and parts[0] == "pybuild" and parts[1] in PACKAGES:
        return parts[1]
    return None


def is_private(dotted: str) -> bool:
    """A name inside a package with any underscore component below the package (``pybuild.oci._store``)."""
    return any(part.startswith("_") for part in dotted.split(".")[2:])


def private_imports(path: Path) -> list[str]:
    module = module_name(path)
    importer = owning_package(module)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found = []
    for line, dotted in imported_modules(tree, module, path.name == "__init__.py"):
        owner = owning_package(dotted)
        if owner is not None and owner != importer and is_private(dotted):
            found.append(f"{path.relative_to(REPO)}:{line}: imports {dotted} (use pybuild.{owner})")
    return found


def package_sources() -> list[Path]:
    paths = [p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))]
    paths += sorted(REPO.glob("*.py"))  # pybuild/__main__.py, errors.py: outside every package
    return [p for p in paths if "__pycache__" not in p.parts]


def test_no_package_imports_another_packages_private_modules() -> None:
    found = [line for path in package_sources() for line in private_imports(path)]
    assert not found, "\n".join(found)


# A package's pybuild imports are limited to these (besides its own modules and the top-level
# pybuild.errors and pybuild._lazy, importable from everywhere). Only reapi is checked so far.
MAY_IMPORT = {"reapi": set()}
# A third-party library is imported by one package only (HACKING "Layers and imports").
FOREIGN = {"grpc": "reapi", "buildgrid": "reapi", "google.protobuf": "reapi"}


def pybuild_imports(path: Path) -> list[tuple[int, str]]:
    module = module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return [(line, dotted) for line, dotted in imported_modules(tree, module, path.name == "__init__.py")]


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    allowed = {package, *MAY_IMPORT[package]}
    found = [
        f"{path.relative_to(REPO)}:{line}: imports {dotted}"
        for path in sorted((REPO / package).rglob("*.py"))
        for line, dotted in pybuild_imports(path)
        if dotted.startswith("pybuild.")
        and owning_package(dotted) not in allowed
        and dotted.split(".")[1] not in ("errors", "_lazy")
    ]
    assert not found, "\n".join(found)


def test_foreign_libraries_stay_in_their_package() -> None:
    found = []
    for path in package_sources():
        importer = owning_package(module_name(path))
        for line, dotted in pybuild_imports(path):
            for library, owner in FOREIGN.items():
                if (dotted == library or dotted.startswith(library + ".")) and importer != owner:
                    found.append(f"{path.relative_to(REPO)}:{line}: imports {dotted} (only {owner} may)")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    ("source", "where", "expected"),
    [
        ("from pybuild.oci._store import Layer\n", "dag/_x.py", ["imports pybuild.oci._store"]),
        ("def f():\n    from ..oci._tar_apply import apply_layer\n", "dag/_x.py", [":2: imports pybuild.oci._tar_apply"]),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pybuild.cache._index\n",
            "oci/_x.py",
            [":3: imports pybuild.cache._index"],
        ),
        ("from pybuild.dag import _worker\n", "cli/_x.py", ["imports pybuild.dag._worker"]),
        ("from pybuild.oci._store import *\n", "dag/_x.py", ["imports pybuild.oci._store"]),
        ("from pybuild.oci.registry._client import A, B\n", "dag/_x.py", [".A", ".B"]),
        ("from ..registry._client import X\n", "oci/sub/_x.py", []),  # inside its own package
        ("from . import _store\nfrom ._store import Layer\n", "oci/_x.py", []),
        ("from pybuild.oci import Layer\nfrom ..cache import Root\n", "dag/_x.py", []),
        ("from pybuild.errors import BuildError\n", "dag/_x.py", []),
        ("import importlib\nimportlib.import_module('pybuild.oci._push')\n", "cli/_x.py", [":2: imports pybuild.oci._push"]),
        ("COMMANDS = {'build': 'pybuild.cli._build'}\n", "cli/main.py", []),
    ],
)
def test_the_check_sees_private_imports_in_every_form(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, where: str, expected: list[str]
) -> None:
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    found = private_imports(path)
    assert len(found) == len(expected), found
    for line, fragment in zip(found, expected):
        assert fragment in line
