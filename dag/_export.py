"""The image config of a solved stage: config, history aligned with layers, rootfs.

Layers come from the solved chain (bottom first).  A step whose change was
empty added no layer, so its history entry is marked ``empty_layer`` (as
BuildKit's exporter does), which keeps ``history`` and ``rootfs.diff_ids``
consistent for every consumer.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from ._convert import StageResult
from ._solver import Result


def rfc3339(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{moment.microsecond:06d}".rstrip("0")
    return text + (f".{fraction}" if fraction else "") + "Z"


def image_config(
    stage: StageResult,
    results: Mapping[str, Result],
    *,
    created: float,
    source_date_epoch: int | None = None,
) -> dict[str, Any]:
    """The OCI image config JSON (as a dict) for ``stage``, without ``rootfs`` filled."""
    image = stage.image
    timestamp = rfc3339(source_date_epoch if source_date_epoch is not None else created)
    history: list[dict[str, Any]] = [dict(entry) for entry in image.base_history]
    for step in image.history:
        result = results.get(step.layer_op) if step.layer_op else None
        entry: dict[str, Any] = {"created": timestamp, "created_by": step.created_by, "comment": step.comment}
        if result is None or result.layer is None:
            entry["empty_layer"] = True
        history.append(entry)
    config: dict[str, Any] = {
        "architecture": image.architecture,
        "os": image.os,
        "config": _without_empty(dict(image.config)),
        "created": timestamp,
        "history": history,
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    if image.variant:
        config["variant"] = image.variant
    if image.author:
        config["author"] = image.author
    return config


def _without_empty(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if v not in (None, [], {}) or k in ("Env",)}


def layers_of(stage: StageResult, results: Mapping[str, Result]) -> tuple[str, ...]:
    """The stage's snapshot ids, bottom first (its base image's layers included)."""
    if stage.op is None:
        return ()
    return tuple(reversed(results[stage.op].chain))
