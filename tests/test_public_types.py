"""No `Any` at a package boundary: what a package exports is typed.

mypy (``make typecheck``) checks that every function is annotated; it has no option for
"Any in a public signature". This test reads the annotations of every public name (its
parameters and return, a class's fields, public methods and properties) and fails on `Any`,
unless the place is listed in ALLOWED with the reason.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ["grammar", "dag", "executors", "cache", "oci", "reapi"]  # cli exports nothing: nothing imports it
ANY = re.compile(r"(?<![\w.])(typing\.)?Any\b")

# "package.Name[.member]": why an Any is the honest type there (mostly JSON documents,
# whose shape is checked where they are read, not by the type checker).
ALLOWED: dict[str, str] = {
    "cache.CacheIndex.put_image": "an image record's meta, a JSON object kept as given",
    "cache.ImageRecord.__init__": "an image record's meta, a JSON object kept as given",
    "cache.ImageRecord.fields": "an image record's meta, a JSON object kept as given",
    "dag.Definition.networkx": "networkx has no type information",
    "dag.Definition.to_json": "a JSON document about to be serialized",
    "dag.StageImage.__init__": "the image config, a JSON document kept as read (unknown fields are preserved); the base's history entries likewise",
    "dag.StageImage.config_dict": "a JSON document about to be serialized",
    "dag.StageImage.fields": "the image config, a JSON document kept as read (unknown fields are preserved); the base's history entries likewise",
    "dag.BuildOutcome.__init__": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "dag.BuildOutcome.fields": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "executors.ContainerRecord.__init__": "the container's config (Docker's, JSON) as stored with it",
    "executors.ContainerRecord.fields": "the container's config (Docker's, JSON) as stored with it",
    "executors.ContainerRecord.from_json": "a JSON document as read, checked field by field inside",
    "executors.ContainerRecord.to_json": "a JSON document about to be serialized",
    "executors.process_env": "the container's config (Docker's, JSON)",
    "oci.ContainerConfig.from_dict": "a JSON document as read, checked field by field inside",
    "oci.ContainerConfig.to_dict": "a JSON document about to be serialized",
    "oci.Descriptor.of": "keyword arguments forwarded to Descriptor's constructor",
    "oci.Descriptor.to_dict": "a JSON document about to be serialized",
    "oci.Healthcheck.from_dict": "a JSON document as read, checked field by field inside",
    "oci.Healthcheck.to_dict": "a JSON document about to be serialized",
    "oci.HistoryEntry.to_dict": "a JSON document about to be serialized",
    "oci.ImageConfig.from_dict": "a JSON document as read, checked field by field inside",
    "oci.ImageConfig.to_dict": "a JSON document about to be serialized",
    "oci.ImagePlatform.from_dict": "a JSON document as read, checked field by field inside",
    "oci.ImagePlatform.to_dict": "a JSON document about to be serialized",
    "oci.ImageStore.add_image": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "oci.ImageStore.import_tarball": "the --change instructions as a partial image config (JSON)",
    "oci.ImageStore.register": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "oci.Index.descriptor": "keyword arguments forwarded to Descriptor's constructor",
    "oci.Index.from_dict": "a JSON document as read, checked field by field inside",
    "oci.Index.to_dict": "a JSON document about to be serialized",
    "oci.Manifest.descriptor": "keyword arguments forwarded to Descriptor's constructor",
    "oci.Manifest.from_dict": "a JSON document as read, checked field by field inside",
    "oci.Manifest.to_dict": "a JSON document about to be serialized",
    "oci.ResolvedImage.__init__": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "oci.ResolvedImage.fields": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "oci.StoredImage.__init__": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "oci.StoredImage.fields": "the image config, a JSON document kept as read (unknown fields are preserved)",
    "oci.canonical_json": "any JSON value",
    "oci.write_docker_archive": "the entries of Docker's manifest.json (JSON)",
}


def _public_names(package: str) -> list[str]:
    module = importlib.import_module(f"pybuild.{package}")
    if hasattr(module, "__all__"):
        return list(module.__all__)
    tree = ast.parse((REPO / package / "__init__.py").read_text())
    relative = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.level == 1]
    imported = [alias.asname or alias.name for node in relative for alias in node.names]
    return [name for name in imported if not name.startswith("_")] + list(getattr(module, "_LAZY", {}))


def _annotations(function: object) -> dict[str, object]:
    function = inspect.unwrap(function)  # type: ignore[arg-type]
    return dict(getattr(function, "__annotations__", {}))


def _members(cls: type) -> Iterator[tuple[str, dict[str, object]]]:
    """(member, its annotations) for the class's fields and its public callables."""
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("pybuild."):
            continue
        fields = {k: v for k, v in vars(klass).get("__annotations__", {}).items() if not k.startswith("_")}
        if fields:
            yield "fields", fields
        for name, value in vars(klass).items():
            if name.startswith("_") and name not in ("__init__", "__call__", "__enter__", "__aenter__"):
                continue
            if isinstance(value, (staticmethod, classmethod)):
                value = value.__func__
            if isinstance(value, property):
                value = value.fget
            if inspect.isfunction(value):
                yield name, _annotations(value)


def _boundary() -> Iterator[tuple[str, dict[str, object]]]:
    for package in PACKAGES:
        module = importlib.import_module(f"pybuild.{package}")
        for name in _public_names(package):
            value = getattr(module, name)
            where = f"{package}.{name}"
            if inspect.isclass(value):
                for member, annotations in _members(value):
                    yield f"{where}.{member}", annotations
            elif callable(value):
                yield where, _annotations(value)


def _with_any() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for where, annotations in _boundary():
        bad = [f"{k}: {v}" for k, v in annotations.items() if ANY.search(str(v))]
        if bad:
            found.setdefault(where, []).extend(bad)
    return found


def test_public_signatures_have_no_any() -> None:
    found = {where: bad for where, bad in _with_any().items() if where not in ALLOWED}
    assert not found, "Any in a public signature (type it, or allow it in ALLOWED with the reason):\n" + "\n".join(
        f"  {where}: {', '.join(bad)}" for where, bad in sorted(found.items())
    )


def test_allowed_anys_are_still_there() -> None:
    """An allowance whose Any is gone is removed, so the list stays the list of exceptions."""
    found = _with_any()
    assert [where for where in ALLOWED if where not in found] == []


def test_the_check_sees_an_any() -> None:
    """The search finds Any however it is written, and only the name Any."""
    assert ANY.search("dict[str, Any]") and ANY.search("typing.Any | None") and ANY.search("Any")
    assert not ANY.search("Anything") and not ANY.search("CompanyAny") and not ANY.search("x.Any")


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_has_a_boundary_to_check(package: str) -> None:
    assert _public_names(package), package


def _typed_for_the_checker(package: str) -> dict[str, str]:
    """Names the package's ``if TYPE_CHECKING:`` block imports, and from where (".module")."""
    tree = ast.parse((REPO / package / "__init__.py").read_text())
    typed: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                if isinstance(inner, ast.ImportFrom):
                    for alias in inner.names:
                        typed[alias.asname or alias.name] = "." * inner.level + (inner.module or "")
    return typed


@pytest.mark.parametrize("package", PACKAGES)
def test_lazily_loaded_names_are_typed(package: str) -> None:
    """A name the package loads on first use (``_LAZY``, through ``__getattr__``) would be
    Any to mypy: each is also imported under TYPE_CHECKING, from the module it loads from."""
    lazy = dict(getattr(importlib.import_module(f"pybuild.{package}"), "_LAZY", {}))
    assert _typed_for_the_checker(package) == lazy, (
        f"{package}/__init__.py: for each name in _LAZY add `from MODULE import NAME as NAME`"
        " under `if TYPE_CHECKING:` (and drop those no longer lazy)"
    )
