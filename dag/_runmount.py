"""``RUN --mount=...`` values -> RunMount specs (BuildKit's runmount semantics)."""

from __future__ import annotations

import csv
import posixpath
from typing import Any

from .._frozen import frozen


class MountSyntaxError(ValueError):
    pass


@frozen
class ParsedMount:
    kind: str
    target: str | None
    source: str | None
    from_: str | None
    readonly: bool
    cache_id: str | None
    sharing: str
    mode: int | None
    uid: int | None
    gid: int | None
    size: int | None
    secret_id: str | None
    env: str | None
    required: bool


_KINDS = ("bind", "cache", "tmpfs", "secret", "ssh")
_BOOL = {"true": True, "false": False, "1": True, "0": False}


def _fields(value: str) -> list[str]:
    try:
        return next(csv.reader([value]))
    except (csv.Error, StopIteration):
        raise MountSyntaxError(f"invalid mount value {value!r}") from None


def _size(text: str) -> int:
    units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}
    number = text.rstrip("kKmMgGbB")
    unit = text[len(number):].lower()
    if not number.isdigit() or unit not in units:
        raise MountSyntaxError(f"invalid size {text!r}")
    return int(number) * units[unit]


def parse_mount(value: str) -> ParsedMount:
    """Parse one --mount value (csv of key=value, as BuildKit)."""
    options: dict[str, str] = {}
    flags: set[str] = set()
    for field in _fields(value):
        key, has_value, val = field.partition("=")
        key = key.strip().lower()
        if not has_value:
            flags.add(key)
            continue
        options[key] = val
    kind = options.pop("type", "bind").lower()
    if kind not in _KINDS:
        raise MountSyntaxError(f"unsupported mount type {kind!r} (use one of {', '.join(_KINDS)})")
    readonly_default = kind in ("bind",)
    readonly = readonly_default
    for key in ("ro", "readonly"):
        if key in flags:
            readonly = True
        if key in options:
            readonly = _boolean(key, options.pop(key))
    for key in ("rw", "readwrite"):
        if key in flags:
            readonly = False
        if key in options:
            readonly = not _boolean(key, options.pop(key))
    target = options.pop("target", None) or options.pop("dst", None) or options.pop("destination", None)
    required = "required" in flags or _boolean("required", options.pop("required", "false"))
    mode = options.pop("mode", None)
    uid = options.pop("uid", None)
    gid = options.pop("gid", None)
    size = options.pop("size", None)
    sharing = options.pop("sharing", "shared").lower()
    if sharing not in ("shared", "private", "locked"):
        raise MountSyntaxError(f"unsupported sharing value {sharing!r} (shared, private or locked)")
    parsed = ParsedMount(
        kind=kind,
        target=target,
        source=options.pop("source", None) or options.pop("src", None),
        from_=options.pop("from", None),
        readonly=readonly,
        cache_id=options.pop("id", None),
        sharing=sharing,
        mode=_octal(mode) if mode is not None else None,
        uid=_int("uid", uid),
        gid=_int("gid", gid),
        size=_size(size) if size else None,
        secret_id=None,
        env=options.pop("env", None),
        required=required,
    )
    if options:
        raise MountSyntaxError(f"unexpected key {sorted(options)[0]!r} in mount {value!r}")
    if kind in ("secret", "ssh"):
        parsed = _with_secret_defaults(parsed)
    elif not parsed.target:
        raise MountSyntaxError(f"mount type {kind} needs a target: --mount=type={kind},target=/path")
    if parsed.target and not posixpath.isabs(parsed.target):
        parsed = _replace(parsed, target=parsed.target)  # made absolute against the workdir by the caller
    return parsed


def _with_secret_defaults(mount: ParsedMount) -> ParsedMount:
    if mount.kind == "secret":
        secret_id = mount.cache_id or (posixpath.basename(mount.target) if mount.target else None)
        if not secret_id:
            raise MountSyntaxError("secret mount needs an id or a target")
        target = mount.target if (mount.target or mount.env) else f"/run/secrets/{secret_id}"
        return _replace(mount, secret_id=secret_id, cache_id=None, target=target,
                        mode=mount.mode if mount.mode is not None else 0o400)
    ssh_id = mount.cache_id or "default"
    target = mount.target or "/run/buildkit/ssh_agent.0"
    return _replace(mount, secret_id=ssh_id, cache_id=None, target=target,
                    mode=mount.mode if mount.mode is not None else 0o600)


def _replace(mount: ParsedMount, **changes: Any) -> ParsedMount:  # Any: dataclasses.replace checks the fields
    from dataclasses import replace

    return replace(mount, **changes)


def _boolean(key: str, value: str) -> bool:
    try:
        return _BOOL[value.lower()]
    except KeyError:
        raise MountSyntaxError(f"invalid value {value!r} for {key}: expected true or false") from None


def _int(key: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isdigit():
        raise MountSyntaxError(f"invalid {key} {value!r}: expected a number")
    return int(value)


def _octal(value: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise MountSyntaxError(f"invalid mode {value!r}: expected an octal number") from None
