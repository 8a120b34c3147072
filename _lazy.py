"""Public names a package loads on first use (a PEP 562 module ``__getattr__``).

``cache``, ``dag``, ``executors`` and ``oci`` keep some of their public names
out of their import (conformance checks, build checks, the container runtime,
the network clients): ``lazy_getattr`` builds the ``__getattr__`` that imports
the defining module when such a name is first asked for.  Like ``errors``, this
module sits beside the layers and imports nothing from them.
"""

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_getattr(package: str, lazy: Mapping[str, str]) -> Callable[[str], Any]:
    """The module ``__getattr__`` for ``package``, which is being imported.

    ``lazy`` maps each deferred name to the module defining it, relative to
    ``package`` (``{"check_dockerfile": ".checks"}``).
    """
    namespace = vars(sys.modules[package])

    def __getattr__(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        namespace[name] = value  # later lookups find it without calling back here
        return value

    return __getattr__
