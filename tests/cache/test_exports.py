"""The public surface of pybuild.cache: every public name exported once, nothing private."""

from __future__ import annotations

from types import ModuleType

import pybuild.cache as cache


def test_every_public_name_is_exported_once() -> None:
    assert len(cache.__all__) == len(set(cache.__all__))
    # bound at import (not subpackages such as cache.remote, nor TYPE_CHECKING), or loaded on first use
    bound = {n for n, v in vars(cache).items() if not n.startswith("_") and not isinstance(v, (ModuleType, bool))}
    assert sorted(cache.__all__) == sorted(bound | set(cache._LAZY))
    for name in cache.__all__:
        assert getattr(cache, name) is not None


def test_implementation_modules_are_private() -> None:
    import inspect

    for name in cache.__all__:
        value = getattr(cache, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__module__.startswith("pybuild.cache._"), f"{name} comes from {value.__module__}"


def test_cache_imports_no_higher_layer() -> None:
    import sys

    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("pybuild.cache") and module is not None:
            source = getattr(module, "__file__", "") or ""
            if source.endswith(".py"):
                text = open(source, encoding="utf-8").read()
                for layer in ("pybuild.oci", "pybuild.dag", "pybuild.cli", "pybuild.executors"):
                    assert layer not in text, f"{module_name} imports {layer}"
