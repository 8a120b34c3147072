"""The image config a stage produces, in Docker's JSON shape, and its history."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from .._frozen import frozen

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HISTORY_COMMENT = "buildkit.dockerfile.v0"


@frozen
class HistoryStep:
    """One history entry.  ``layer_op`` is the op whose layer this entry
    describes (None for metadata-only steps: ``empty_layer``)."""

    created_by: str
    comment: str = HISTORY_COMMENT
    layer_op: str | None = None
    created: str | None = None
    author: str | None = None

    @property
    def empty_layer(self) -> bool:
        return self.layer_op is None


@frozen
class StageImage:
    """Config and history of a stage's image (layers are known after solving).

    ``base_history`` is the base image's own history, copied verbatim;
    ``history`` is what this Dockerfile added.
    """

    config: Mapping[str, Any]
    os: str
    architecture: str
    variant: str = ""
    author: str | None = None
    base_history: tuple[Mapping[str, Any], ...] = ()
    base_diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryStep, ...] = field(default=())

    def config_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dict(self.config))


def parse_env_list(env: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for item in env:
        key, _, value = item.partition("=")
        out.append((key, value))
    return out


def set_env(env: list[str], key: str, value: str) -> list[str]:
    """Replace ``key`` in an env list, or append it (BuildKit's addEnv)."""
    for i, item in enumerate(env):
        if item.partition("=")[0] == key:
            env = list(env)
            env[i] = f"{key}={value}"
            return env
    return [*env, f"{key}={value}"]
