"""``pybuild build``'s remote flags: REAPI remote execution and the ``type=reapi`` cache.

The build command calls three hooks: ``add_arguments`` (the flags),
``is_reapi_cache`` (a ``--cache-from``/``--cache-to`` value this module owns,
kept away from the registry/local cache parser) and ``runner_factory`` (wraps
the local runner when a remote flag asks for it). Without a remote flag nothing
of the remote machinery is imported.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pybuild.dag import BuildPlan, BuildRunner


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The remote flags (none yet)."""


def is_reapi_cache(value: str) -> bool:
    """Whether a ``--cache-from``/``--cache-to`` value names a REAPI cache."""
    return False


def runner_factory(
    args: argparse.Namespace, local: Callable[[BuildPlan], BuildRunner], emit: Any
) -> Callable[[BuildPlan], BuildRunner]:
    """The runner factory the build uses: the local one unless a remote flag is given."""
    return local
