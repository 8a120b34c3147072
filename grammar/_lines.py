"""Each logical line's shape, read with the grammar's own terminals but without lark.

Importing lark and loading its parser cost about as much as the rest of a small
build's parsing and planning together.  A line that is not an ONBUILD is
``KEYWORD FLAGS? ARGUMENTS?`` (or the same under HEALTHCHECK): one token each,
tried in the order lark's contextual lexer tries them (priority, then the
grammar's order), so matching those terminals in turn gives lark's tokens.
The patterns are read from ``dockerfile.lark`` itself, so they cannot drift
from the grammar.  A batch with an ONBUILD line (whose nested instruction is
the grammar's one recursive rule) or anything unexpected is left to lark
(``None``), so every error is still lark's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple


class Token(str):
    """A terminal's text with what the finisher asks of lark's ``Token``."""

    type: str
    line: int  # 1-based, in the joined text
    end_pos: int  # offset just after it in the joined text

    @classmethod
    def at(cls, kind: str, text: str, line: int, end_pos: int) -> Token:
        token = cls(text)
        token.type, token.line, token.end_pos = kind, line, end_pos
        return token


class Shape(NamedTuple):
    """What the grammar saw on one line: tokens, not yet interpreted."""

    rule: str  # "instruction" | "healthcheck" | "onbuild"
    keyword: Token  # the keyword token (carries .line, .end_pos)
    flags: tuple[Token, ...]
    arguments: Token | None
    nested: Shape | None


def _terminal(grammar: str, name: str) -> re.Pattern[str]:
    """``NAME.priority: /pattern/flags`` of the grammar, compiled as lark compiles it."""
    found = re.search(rf"^{name}(?:\.\d+)?: /(.*)/([imsx]*)$", grammar, re.M)
    if found is None:
        raise RuntimeError(f"dockerfile.lark has no terminal {name}")
    flags = 0
    for letter in found.group(2):
        flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[letter]
    return re.compile(found.group(1), flags)


_GRAMMAR = (Path(__file__).with_name("dockerfile.lark")).read_text(encoding="utf-8")
_ONBUILD = _terminal(_GRAMMAR, "ONBUILD")
_HEALTHCHECK = _terminal(_GRAMMAR, "HEALTHCHECK")
_KEYWORD = _terminal(_GRAMMAR, "KEYWORD")
_FLAGS = _terminal(_GRAMMAR, "FLAGS")
_ARGUMENTS = _terminal(_GRAMMAR, "ARGUMENTS")
del _GRAMMAR


def direct_shapes(texts: list[str]) -> list[Shape] | None:
    """The shapes of these trimmed logical lines (joined with "\\n"), or None when lark must read them."""
    shapes: list[Shape] = []
    joined = "\n".join(texts)
    start = 0
    for number, text in enumerate(texts, start=1):
        if not text or "\n" in text:
            return None
        shape = _line(joined, start, start + len(text), number)
        if shape is None:
            return None
        shapes.append(shape)
        start += len(text) + 1
    return shapes


def _line(joined: str, start: int, end: int, number: int) -> Shape | None:
    if _ONBUILD.match(joined, start):
        return None
    healthcheck = _HEALTHCHECK.match(joined, start)
    keyword = healthcheck or _KEYWORD.match(joined, start)
    if keyword is None:
        return None
    position = keyword.end()
    flags: tuple[Token, ...] = ()
    found = _FLAGS.match(joined, position) if position < end else None
    if found is not None and found.end() > position:
        flags = (Token.at("FLAGS", found.group(), number, found.end()),)
        position = found.end()
    arguments = None
    if position < end:
        found = _ARGUMENTS.match(joined, position)
        if found is None or found.end() != end:
            return None
        arguments = Token.at("ARGUMENTS", found.group(), number, end)
    kind = "HEALTHCHECK" if healthcheck else "KEYWORD"
    return Shape(
        "healthcheck" if healthcheck else "instruction",
        Token.at(kind, keyword.group(), number, keyword.end()),
        flags,
        arguments,
        None,
    )
