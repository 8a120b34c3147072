"""Canonical bytes and digests for op data (sorted keys, no floats, UTF-8)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {"@type": type(value).__name__}
        for field in dataclasses.fields(value):
            if field.metadata.get("hashed", True) and not left_at_default(value, field):
                out[field.name] = _plain(getattr(value, field.name))
        return out
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, float):
        raise TypeError("floats are not canonical; use integers")
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def left_at_default(value: Any, field: dataclasses.Field[Any]) -> bool:
    """Whether ``field`` is one added later (``omit_when_default``) and still at its default."""
    return bool(field.metadata.get("omit_when_default")) and getattr(value, field.name) == field.default


def canonical_json(value: Any) -> bytes:
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogateescape"
    )


def digest_of(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()
