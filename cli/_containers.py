"""What the container commands read from their flags and show: ``-e`` entries and ``ps``'s command.

The containers themselves (their layout, names and records) live in ``executors``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pybuild.errors import UsageError


def env_entries(values: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """``-e K=V`` as given; ``-e K`` takes K from pybuild's environment, or is dropped if unset (Docker's rule)."""
    out = []
    for value in values:
        if "=" in value:
            if value.startswith("="):
                raise UsageError(f"invalid environment variable: {value}", hint="use -e NAME=VALUE")
            out.append(value)
        elif value in environ:
            out.append(f"{value}={environ[value]}")
    return out


def display_command(args: Sequence[str]) -> str:
    """The command as ``docker ps`` shows it before quoting: the words joined by spaces."""
    return " ".join(args)
