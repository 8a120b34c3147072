"""The generic parse result: one ``Node`` per instruction, shaped like BuildKit's AST.

A node's ``args`` are what BuildKit's dispatch table makes of the argument
text (``parseMaybeJSON``, ``parseNameVal`` ...), so that the s-expression
dump matches BuildKit's byte for byte.  ENV and LABEL keep BuildKit's
triplets ``key, value, separator`` (``=`` for ``k=v``, empty for the legacy
``ENV k v`` form); the typed layer (_instructions.py) turns them into pairs.
"""

from __future__ import annotations

from collections.abc import Callable

from .._frozen import frozen
from ._words import (
    NotStringArray,
    decode_json_array,
    extract_flags,
    go_trim_left_space,
    go_trim_space,
    is_go_space,
    parse_words,
    split_whitespace,
    WHITESPACE_RUN,
)


@frozen(slots=True)
class Span:
    """First and last physical line (1-based, inclusive) of an instruction."""

    start: int
    end: int


@frozen(slots=True)
class Heredoc:
    name: str
    content: str
    expand: bool = True
    chomp: bool = False
    file_descriptor: int = 0


@frozen(slots=True)
class Node:
    keyword: str  # lower case: "run", "copy", ... or an unknown word
    flags: tuple[str, ...]
    args: tuple[str, ...]
    json: bool
    span: Span
    original: str
    heredocs: tuple[Heredoc, ...] = ()
    sub: Node | None = None  # the instruction ONBUILD wraps
    comments: tuple[str, ...] = ()


class ArgumentError(ValueError):
    """The arguments of an instruction cannot be split (a parse error)."""


def _json_array(rest: str) -> tuple[str, ...] | None:
    """The strings of ``rest`` written as a JSON array; None when it is not written as one."""
    try:
        array = decode_json_array(rest)
    except NotStringArray as error:
        raise ArgumentError(str(error)) from None
    return None if array is None else tuple(array)


def _maybe_json(rest: str) -> tuple[tuple[str, ...], bool]:
    if rest == "":
        return (), False
    array = _json_array(rest)
    if array is not None:
        return array, True
    return (rest,), False


def _maybe_json_to_list(rest: str) -> tuple[tuple[str, ...], bool]:
    array = _json_array(rest)
    if array is not None:
        return array, True
    return tuple(split_whitespace(rest)), False


def _name_val(keyword: str) -> Callable[[str, str], tuple[tuple[str, ...], bool]]:
    def parse(rest: str, escape: str) -> tuple[tuple[str, ...], bool]:
        words = parse_words(rest, escape)
        if not words:
            return (), False
        if "=" not in words[0]:
            parts = WHITESPACE_RUN.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise ArgumentError(f"{keyword} must have two arguments")
            return (parts[0], parts[1], ""), False
        args: list[str] = []
        for word in words:
            if "=" not in word:
                raise ArgumentError(f"Syntax error - can't find = in {word!r}. Must be of the form: name=value")
            key, value = word.split("=", 1)
            args += [key, value, "="]
        return tuple(args), False

    return parse


def _string(rest: str, escape: str) -> tuple[tuple[str, ...], bool]:
    return ((rest,) if rest else ()), False


def _ignore(rest: str, escape: str) -> tuple[tuple[str, ...], bool]:
    return ("",), False


# keyword -> how its argument text becomes args (BuildKit's dispatch table).
ARGUMENT_PARSERS: dict[str, Callable[[str, str], tuple[tuple[str, ...], bool]]] = {
    "add": lambda rest, esc: _maybe_json_to_list(rest),
    "copy": lambda rest, esc: _maybe_json_to_list(rest),
    "volume": lambda rest, esc: _maybe_json_to_list(rest),
    "arg": lambda rest, esc: (tuple(parse_words(rest, esc)), False),
    "cmd": lambda rest, esc: _maybe_json(rest),
    "entrypoint": lambda rest, esc: _maybe_json(rest),
    "run": lambda rest, esc: _maybe_json(rest),
    "shell": lambda rest, esc: _maybe_json(rest),
    "env": _name_val("ENV"),
    "label": _name_val("LABEL"),
    "expose": lambda rest, esc: (tuple(split_whitespace(rest)), False),
    "from": lambda rest, esc: (tuple(split_whitespace(rest)), False),
    "maintainer": _string,
    "stopsignal": _string,
    "user": _string,
    "workdir": _string,
}

KNOWN_KEYWORDS = frozenset(ARGUMENT_PARSERS) | {"onbuild", "healthcheck"}
HEREDOC_KEYWORDS = frozenset({"run", "copy", "add"})


def split_arguments(keyword: str, rest: str, escape: str) -> tuple[tuple[str, ...], bool]:
    return ARGUMENT_PARSERS.get(keyword, _ignore)(rest, escape)


def healthcheck_arguments(rest: str) -> tuple[tuple[str, ...], bool]:
    """The check type (CMD, NONE, ...) then the command, JSON or shell form."""
    end = 0
    while end < len(rest) and not is_go_space(rest[end]):
        end += 1
    if end == 0:
        return (), False
    args, is_json = _maybe_json(go_trim_left_space(rest[end:]))
    return (rest[:end], *args), is_json


def split_keyword(line: str) -> tuple[str, str]:
    """The lower-cased keyword and the text after it (BuildKit's splitCommand)."""
    parts = WHITESPACE_RUN.split(go_trim_space(line), maxsplit=1)
    return parts[0].lower(), (parts[1] if len(parts) == 2 else "")


def heredoc_capable(line: str) -> bool:
    """Whether an instruction line may open heredocs (RUN/COPY/ADD, not JSON form)."""
    keyword, rest = split_keyword(line)
    _, rest = extract_flags(rest)
    if keyword == "onbuild":
        keyword, rest = split_keyword(rest)
        _, rest = extract_flags(rest)
    if keyword not in HEREDOC_KEYWORDS:
        return False
    try:
        return decode_json_array(go_trim_space(rest)) is None
    except NotStringArray:
        return False
