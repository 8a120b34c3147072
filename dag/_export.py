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

from ._stage import StageResult
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
    times = _history_times(stage, results, created, source_date_epoch)
    timestamp = rfc3339(times[-1]) if times else rfc3339(source_date_epoch if source_date_epoch is not None else created)
    history: list[dict[str, Any]] = [dict(entry) for entry in image.base_history]
    for step, moment in zip(image.history, times, strict=True):
        result = results.get(step.layer_op) if step.layer_op else None
        entry: dict[str, Any] = {"created": rfc3339(moment), "created_by": step.created_by, "comment": step.comment}
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


def _history_times(
    stage: StageResult, results: Mapping[str, Result], now: float, source_date_epoch: int | None
) -> list[float]:
    """When each history entry was made, BuildKit's way, so a cached rebuild is byte-identical.

    A step with a layer has its layer's creation time (kept in the cache);
    a metadata step takes the time of the layer before it, or of the first
    layer after it when none came before.
    """
    if source_date_epoch is not None:
        return [float(source_date_epoch)] * len(stage.image.history)
    own = [
        results[step.layer_op].created if step.layer_op and step.layer_op in results and results[step.layer_op].created else None
        for step in stage.image.history
    ]
    first = next((t for t in own if t is not None), now)
    out: list[float] = []
    previous = first
    for moment in own:
        if moment is not None:
            previous = moment
        out.append(previous)
    return out


def _without_empty(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if v not in (None, [], {}) or k in ("Env",)}


def layers_of(stage: StageResult, results: Mapping[str, Result]) -> tuple[str, ...]:
    """The stage's snapshot ids, bottom first (its base image's layers included)."""
    if stage.op is None:
        return ()
    return tuple(reversed(results[stage.op].chain))
