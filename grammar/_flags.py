"""Instruction flags (``--from=build``, ``--link``) read as BuildKit's BFlags does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .._frozen import frozen

STRING, BOOL, LIST = "string", "bool", "list"


class FlagError(ValueError):
    pass


@frozen
class FlagSpec:
    kind: str  # STRING | BOOL | LIST
    default: str | bool | tuple[str, ...] | None = None


def parse_flags(words: Sequence[str], allowed: Mapping[str, FlagSpec]) -> dict[str, object]:
    """``--name=value`` words -> values by name; unknown or malformed flags raise FlagError."""
    if not words:
        return {name: (() if spec.kind == LIST else spec.default) for name, spec in allowed.items()}
    values: dict[str, object] = {}
    for word in words:
        if not word.startswith("--"):
            raise FlagError(f"arguments must begin with '--', not {word!r}")
        name, has_value, value = word[2:].partition("=")
        if name == "":
            raise FlagError(f"malformed flag {word!r}: a flag needs a name")
        spec = allowed.get(name.lower())
        if spec is None:
            known = ", ".join(f"--{n}" for n in sorted(allowed)) or "none"
            raise FlagError(f"unknown flag: --{name} (this instruction takes: {known})")
        name = name.lower()
        if spec.kind == BOOL:
            if not has_value:
                parsed: object = True
            elif value.lower() in ("true", "false"):
                parsed = value.lower() == "true"
            else:
                raise FlagError(f"expecting boolean value for flag --{name}, not: {value!r}")
        elif not has_value:
            raise FlagError(f"missing a value on flag: --{name}")
        else:
            parsed = value
        if spec.kind == LIST:
            values[name] = (*values.get(name, ()), parsed)  # type: ignore[misc]  # a LIST flag's value is a tuple
        elif name in values:
            raise FlagError(f"duplicate flag specified: --{name}")
        else:
            values[name] = parsed
    for name, spec in allowed.items():
        if name not in values:
            values[name] = () if spec.kind == LIST else spec.default
    return values
