"""Reading the Dockerfile a command names (a path, or ``-`` for stdin)."""

from __future__ import annotations

import sys
from pathlib import Path

from pybuild.errors import UsageError


def read_dockerfile(path: str) -> tuple[bytes, str]:
    """The Dockerfile's bytes and the name to use in messages."""
    if path == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        return Path(path).read_bytes(), path
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="name the Dockerfile with -f PATH") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory", hint="name the Dockerfile itself with -f PATH") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
