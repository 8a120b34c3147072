"""Normalise an image config so that BuildKit's and pybuild's can be compared.

``normalize(config)`` takes a parsed image config (the JSON blob a registry
holds under the manifest's ``config`` descriptor) and returns a new dict in
which only what legitimately differs between two engines, or between two runs
of one engine, has been replaced or removed.  Every rule is listed in
``README.md`` beside this file, with the reason for it; keep the two in step.

This module is used by ``generate.py`` (to write ``expected.json``) and by the
converter tests (on pybuild's output), so that both sides go through exactly
the same function.  It has no dependencies beyond the standard library and
does not import pybuild.
"""

from __future__ import annotations

import copy
import json
from typing import Any

#: Placeholder for every ``created`` timestamp (image and history entries).
CREATED = "<created>"
#: Placeholder for every layer digest in ``rootfs.diff_ids``.
DIFF_ID = "<diff_id>"

#: Top-level fields written only by the Docker daemon (the legacy builder's
#: container, the daemon's version) or as engine-specific provenance.
DROPPED_TOP_LEVEL = frozenset(
    {
        "container",
        "container_config",
        "docker_version",
        "moby.buildkit.buildinfo.v0",
        "moby.buildkit.buildinfo.v1",
    }
)


def _is_go_empty(value: Any) -> bool:
    """True for the values Go's ``encoding/json`` drops under ``omitempty``."""
    if value is None or value is False:
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, (str, list, dict)):
        return len(value) == 0
    return False


def normalize(config: dict[str, Any]) -> dict[str, Any]:
    """Return a normalised deep copy of an image config (the input is not changed)."""
    out = copy.deepcopy(config)

    for key in DROPPED_TOP_LEVEL:
        out.pop(key, None)

    if "created" in out:
        out["created"] = CREATED

    # Execution parameters: an empty value and a missing key mean the same to
    # every consumer.  Drop the empty ones, as Go's `omitempty` (used by the
    # OCI image-spec types) would, so that engines that serialise unset fields
    # (`"OnBuild": null`, docker's `"Hostname": ""`) compare equal to engines
    # that leave them out.  Only this level is touched: the `{}` values inside
    # ExposedPorts/Volumes are data.
    if isinstance(out.get("config"), dict):
        out["config"] = {k: v for k, v in out["config"].items() if not _is_go_empty(v)}

    history = out.get("history")
    if isinstance(history, list):
        entries = []
        for entry in history:
            # Same rule as above: every field of a history entry is
            # `omitempty` in OCI's and docker's Go types, so `"empty_layer":
            # false` or `"comment": ""` mean the same as leaving them out.
            entry = {k: v for k, v in entry.items() if not _is_go_empty(v)}
            if "created" in entry:
                entry["created"] = CREATED
            entries.append(entry)
        out["history"] = entries

    rootfs = out.get("rootfs")
    if isinstance(rootfs, dict) and isinstance(rootfs.get("diff_ids"), list):
        rootfs["diff_ids"] = [DIFF_ID] * len(rootfs["diff_ids"])

    return out


def dumps(config: dict[str, Any]) -> str:
    """The on-disk form of ``expected.json``: sorted keys, 2-space indent, final newline."""
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def load_normalized(raw: bytes | str) -> dict[str, Any]:
    """Parse raw config JSON and normalise it."""
    return normalize(json.loads(raw))
