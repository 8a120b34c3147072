"""Reading the Dockerfile a command names (a path, or ``-`` for stdin)."""

from __future__ import annotations

import sys

from pybuild.errors import UsageError


def read_dockerfile(path: str) -> tuple[bytes, str]:
    """The Dockerfile's bytes and the name to use in messages.

    At most one byte more than the parser accepts is read, so a huge file,
    a device or an endless pipe costs no memory: the parser refuses it.
    """
    from pybuild.grammar import MAX_DOCKERFILE_SIZE

    if path == "-":
        return sys.stdin.buffer.read(MAX_DOCKERFILE_SIZE + 1), "<stdin>"
    try:
        with open(path, "rb") as file:
            return file.read(MAX_DOCKERFILE_SIZE + 1), path
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file", hint="name the Dockerfile with -f PATH") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory", hint="name the Dockerfile itself with -f PATH") from None
    except OSError as error:
        raise UsageError(f"{path}: cannot read: {error.strerror}") from None
