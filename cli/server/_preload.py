"""Everything a build imports, imported once by the server before it forks anything.

Every module of the packages a build runs (not their subpackages: remote
execution, the build checks, the remote cache stay out, as in a plain build; the
registry client is in) plus what those import inside functions.  Walking the
packages rather than listing modules keeps up with new ones; a served child then
imports nothing a plain build needs (``PYBUILD_SERVER_DEBUG=1`` names what it still
loaded).  Importing must not start a thread or trio, nor open the root's
database: a fork needs a single-threaded process, and a SQLite connection must
not be shared with children.
"""

from __future__ import annotations

import gc
import importlib
import pkgutil
import threading

PACKAGES = (
    "pybuild.grammar", "pybuild.cache", "pybuild.oci", "pybuild.oci.registry", "pybuild.executors", "pybuild.dag", "pybuild.cli",
)
# imported inside functions of those modules during a build
MODULES = ("trio", "trio.lowlevel", "trio.to_thread", "sqlite3", "subprocess", "tempfile", "uuid", "ctypes.util")


class PreloadError(Exception):
    """Importing left the process unfit to fork (a thread started)."""


def preload() -> int:
    """Import it all; how many modules are loaded then."""
    import sys

    for name in MODULES:
        importlib.import_module(name)
    for package in PACKAGES:
        module = importlib.import_module(package)
        for info in pkgutil.iter_modules(module.__path__):
            if not info.ispkg:
                importlib.import_module(f"{package}.{info.name}")
    if threading.active_count() != 1:
        raise PreloadError(f"importing started {threading.active_count() - 1} thread(s)")
    gc.collect()
    gc.freeze()  # the children's collector leaves these objects (and their pages) alone
    return len(sys.modules)
