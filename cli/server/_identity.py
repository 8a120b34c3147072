"""What a served build must share with the server: the interpreter and the code.

The client's Python fingerprint must equal the server's (the same executable,
version, flags, import path and pybuild package), so the modules the server has
loaded are the ones the client would have loaded.  ``sys.path[0]`` is left out:
it is the script's directory or the working directory (``python -m``), different
for every caller; the child takes the client's whole ``sys.path`` for anything it
still imports.  Light: the client computes its fingerprint.
"""

from __future__ import annotations

import os
import sys

NAMESPACES = ("mnt", "net", "pid", "user", "uts", "ipc", "cgroup")


def python_fingerprint() -> bytes:
    import pybuild

    words = [sys.executable, sys.version, repr(tuple(sys.flags)), str(getattr(pybuild, "__file__", None)), *sys.path[1:]]
    return b"\0".join(os.fsencode(word) for word in words)


def namespaces(pid: int | str) -> list[str] | None:
    """The namespaces of a process (``self`` or a pid); None when they cannot be read."""
    try:
        return [os.readlink(f"/proc/{pid}/ns/{name}") for name in NAMESPACES]
    except OSError:
        return None


Signature = tuple[int, int, int, int]


def code_signatures() -> dict[str, Signature]:
    """(st_dev, st_ino, st_size, st_mtime_ns) of every loaded module's file and of the
    interpreter: an upgrade or an edit changes one of them."""
    found: dict[str, Signature] = {}
    files = [sys.executable] + [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    for path in files:
        if isinstance(path, str) and path not in found:
            signature = _signature(path)
            if signature is not None:
                found[path] = signature
    return found


def changed_code(recorded: dict[str, Signature]) -> str | None:
    """The first recorded file whose signature changed (or which is gone), else None."""
    for path, signature in recorded.items():
        if _signature(path) != signature:
            return path
    return None


def _signature(path: str) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
