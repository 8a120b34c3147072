"""The ``# check=`` directive: which rules run and whether warnings fail the build.

Follows BuildKit's ``linter.ParseLintOptions``: up to three ``;``-separated
options, ``skip=Rule1,Rule2`` or ``skip=all``, ``experimental=Rule`` or
``experimental=all``, and ``error=<bool>`` (Go's strconv.ParseBool).  An
experimental rule runs only when named in ``experimental=`` and then
regardless of ``skip`` (it was asked for explicitly); every other rule runs
unless skipped.  The same text may come from the ``BUILDKIT_DOCKERFILE_CHECK``
build argument, which replaces the directive as it does in BuildKit.

A ``# check=skip=...`` comment right above an instruction (BuildKit 0.26+)
adds to the skipped rules for the warnings of that instruction only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._rules import Rule

_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class CheckOptionError(ValueError):
    """The check options cannot be read (BuildKit refuses the build)."""


@dataclass(frozen=True)
class CheckConfig:
    skip: frozenset[str] = frozenset()
    skip_all: bool = False
    experimental: frozenset[str] = frozenset()
    experimental_all: bool = False
    error: bool = False

    def enabled(self, rule: Rule) -> bool:
        if rule.experimental:
            return self.experimental_all or rule.name in self.experimental
        return not self.skip_all and rule.name not in self.skip

    def merged(self, other: CheckConfig) -> CheckConfig:
        """This configuration with ``other``'s rules added (a per-instruction comment)."""
        return CheckConfig(
            skip=self.skip | other.skip,
            skip_all=self.skip_all or other.skip_all,
            experimental=self.experimental | other.experimental,
            experimental_all=self.experimental_all or other.experimental_all,
            error=self.error or other.error,
        )


def _rule_list(value: str) -> tuple[bool, frozenset[str]]:
    value = value.strip()
    if value == "all":
        return True, frozenset()
    return False, frozenset(name.strip() for name in value.split(","))


def parse_check_options(text: str) -> CheckConfig:
    text = text.strip()
    if not text:
        return CheckConfig()
    skip_all = experimental_all = error = False
    skip: frozenset[str] = frozenset()
    experimental: frozenset[str] = frozenset()
    # Go's SplitN(text, ";", 3): a third ";" stays inside the last option.
    for part in text.split(";", 2):
        key, eq, value = part.partition("=")
        if not eq:
            raise CheckOptionError(f"invalid check option {part!r}")
        key = key.strip()
        if key == "skip":
            skip_all, skip = _rule_list(value)
        elif key == "experimental":
            experimental_all, experimental = _rule_list(value)
        elif key == "error":
            value = value.strip()
            if value in _TRUE:
                error = True
            elif value in _FALSE:
                error = False
            else:
                raise CheckOptionError(f"failed to parse check option {part!r}: {value!r} is not a boolean")
        else:
            raise CheckOptionError(f"invalid check option {key!r}")
    return CheckConfig(skip, skip_all, experimental, experimental_all, error)
