"""A stage of a conversion: ``StageState`` while its instructions are
dispatched (``_convert``, and ``_copy`` for COPY and ADD), ``StageResult``
when it is done.  Apart from both, so neither imports the other for it."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._frozen import frozen
from ._image import HistoryStep, StageImage
from ._platform import Platform
from ._scope import env_map


@frozen
class StageResult:
    index: int
    name: str  # the stage's name, or "stage-N"
    op: str | None  # the op whose result is the stage's filesystem; None for scratch
    image: StageImage
    platform: Platform | None = None  # what its RUN steps run as (FROM --platform, or the target)
    # the step environment it ends with (image Env and ARG values), which a stage
    # based on this one starts from
    env: tuple[str, ...] = ()


@dataclass
class StageState:
    """A stage while it is being converted (mutable; ``_convert`` and ``_copy`` change it)."""

    index: int
    name: str
    op: str | None
    env: list[str]  # the step environment: image Env plus ARGs, in order
    config: dict[str, Any]
    os: str
    architecture: str
    variant: str
    author: str | None
    base_history: tuple[Mapping[str, Any], ...]
    base_diff_ids: tuple[str, ...]
    history: list[HistoryStep]
    args: list[tuple[str, str | None]]  # ARGs declared in the stage (BuildKit's d.buildArgs)
    cmd_set: bool = False
    step: int = 0
    total: int = 0
    platform: Platform | None = None  # FROM --platform's, a base stage's, or the target's


    def env_map(self) -> dict[str, str]:
        return env_map(self.env)

    @property
    def workdir(self) -> str:
        return self.config.get("WorkingDir") or "/"

    @property
    def user(self) -> str:
        return self.config.get("User") or ""

    def finish(self) -> StageResult:
        image = StageImage(
            config=MappingProxyType(copy.deepcopy(self.config)),
            os=self.os,
            architecture=self.architecture,
            variant=self.variant,
            author=self.author,
            base_history=self.base_history,
            base_diff_ids=self.base_diff_ids,
            history=tuple(self.history),
        )
        return StageResult(self.index, self.name, self.op, image, self.platform, tuple(self.env))
