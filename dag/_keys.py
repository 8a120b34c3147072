"""Cache keys (DESIGN.md: Cache keys).

``key(op) = sha256("pybuild-cache/v1" || op fields || contents)`` where the
op's fields leave out its cache-neutral ones (proxy variables, --no-cache)
and name each input by the input's *cache key*, not its digest, so that a
neutral change upstream does not change keys downstream; ``contents`` are
the digests of what the op reads (the context files a COPY selects).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any

from ._canonical import canonical_json, left_at_default

KEY_VERSION = "pybuild-cache/v1"


def _keyed(value: Any, input_keys: Mapping[str, str]) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"@type": type(value).__name__}
        for field in dataclasses.fields(value):
            if not field.metadata.get("cache_neutral") and not left_at_default(value, field):
                out[field.name] = _keyed(getattr(value, field.name), input_keys)
        return out
    if isinstance(value, (tuple, list)):
        return [_keyed(v, input_keys) for v in value]
    if isinstance(value, str) and value in input_keys:
        return {"input": input_keys[value]}
    return value


def cache_fields(op: Any, input_keys: Mapping[str, str]) -> Any:
    """The op as hashed into its cache key."""
    return _keyed(op, input_keys)


def make_key(op: Any, input_keys: Mapping[str, str], contents: Mapping[str, str] | None = None) -> str:
    h = hashlib.sha256(KEY_VERSION.encode())
    h.update(b"\0")
    h.update(canonical_json(cache_fields(op, input_keys)))
    h.update(b"\0")
    h.update(canonical_json(dict(contents or {})))
    return "sha256:" + h.hexdigest()
