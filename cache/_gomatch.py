"""Go's path rules, as Docker applies them to `.dockerignore` and COPY sources.

Three pieces of Go behaviour are reproduced here because users write their
patterns against them:

- ``go_clean``: ``filepath.Clean`` (lexical: no file system access).
- ``check_syntax`` / ``compile_element``: ``filepath.Match`` on one path
  element, used for COPY wildcards (``*`` and ``?`` never match ``/``;
  ``[...]`` classes with ``^`` negation and ``\\`` escapes).
- ``compile_ignore_pattern``: moby/patternmatcher's translation of a
  `.dockerignore` pattern (adds ``**``) into one of four match kinds.

Two deliberate differences, both where patternmatcher disagrees with the
``filepath.Match`` syntax it validates against: an escaped character
(``\\d``) is always literal here, where Go's regexp would read a character
class; and ``*``/``?`` inside ``[...]`` are class members here, where
patternmatcher turns them into regexp repetitions.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable

from .._frozen import frozen

# Go's unicode.IsSpace, which strings.TrimSpace uses (Python's str.strip()
# would also strip U+001C..U+001F).
GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


class BadPattern(ValueError):
    """A pattern ``filepath.Match`` would reject with ErrBadPattern."""


# --- linear-time matching ------------------------------------------------
#
# Go's regexp (which Docker matches these patterns with) runs in linear time;
# Python's re backtracks, so a pattern with several wildcards that can match
# the same text ("**/**/**/...", "*a*a*a*...") took exponential or high
# polynomial time: a hostile .dockerignore or COPY source hung the build.
# Such patterns are matched by simulating their automaton instead: a set of
# positions in the token list, advanced one character at a time (Automaton).
#
# Tokens: ("lit", c) one character c; ("one", pred) one character pred
# accepts; ("star", pred) any number of them; ("any", None) any text;
# ("dirs", None) "(.*/)?": nothing, or any text ending in "/"; ("start",
# None) only at the start (a "^" patternmatcher leaves to Go's regexp).

Token = tuple[str, object]


def _not_slash(char: str) -> bool:
    return char != "/"


def _closure(tokens: tuple[Token, ...], states: set[int], at_start: bool) -> set[int]:
    """``states`` plus every position reachable without consuming a character."""
    stack = list(states)
    while stack:
        state = stack.pop()
        if 0 <= state < len(tokens):
            kind = tokens[state][0]
            if kind in ("star", "any", "dirs") or (kind == "start" and at_start):
                if state + 1 not in states:
                    states.add(state + 1)
                    stack.append(state + 1)
    return states


class Automaton:
    """A pattern as tokens, matched in O(len(text) x len(tokens)) at worst.

    The step from one set of positions on one character is remembered, so
    the paths of a context walk mostly cost a dictionary lookup per
    character (the sets are few: at most a few per token).
    """

    __slots__ = ("tokens", "_start", "_steps")

    def __init__(self, tokens: tuple[Token, ...]) -> None:
        self.tokens = tokens
        self._start = frozenset(_closure(tokens, {0}, True))
        self._steps: dict[tuple[frozenset[int], str], frozenset[int]] = {}

    def match(self, text: str) -> bool:
        """Whether the whole of ``text`` matches."""
        current = self._start
        steps = self._steps
        for char in text:
            following = steps.get((current, char))
            if following is None:
                following = frozenset(_closure(self.tokens, self._step(current, char), False))
                if len(steps) >= _MAX_REMEMBERED_STEPS:
                    steps.clear()
                steps[(current, char)] = following
            if not following:
                return False
            current = following
        return len(self.tokens) in current

    def _step(self, current: frozenset[int], char: str) -> set[int]:
        tokens = self.tokens
        end = len(tokens)
        following: set[int] = set()
        # a state -k-1 is "inside the (.*/)? of token k"
        for state in current:
            if state < 0:
                following.add(state)
                if char == "/":
                    following.add(-state)
                continue
            if state == end:
                continue
            kind, arg = tokens[state]
            if kind == "lit":
                if char == arg:
                    following.add(state + 1)
            elif kind == "one":
                if arg(char):  # type: ignore[operator]  # a one/star token's argument is its predicate
                    following.add(state + 1)
            elif kind == "star":
                if arg(char):  # type: ignore[operator]  # a one/star token's argument is its predicate
                    following.add(state)
            elif kind == "any":
                following.add(state)
            elif kind == "dirs":
                following.add(-state - 1)
                if char == "/":
                    following.add(state + 1)
        return following


_MAX_REMEMBERED_STEPS = 4096


def _backtracking_is_slow(tokens: list[Token]) -> bool:
    """Could Python's re take more than about linear time on this pattern?

    It can when two unbounded wildcards compete for the same text: two that
    cross "/" (``**``), or two ``*`` within one path element.
    """
    crossing = sum(1 for kind, _ in tokens if kind in ("any", "dirs"))
    if crossing >= 2:
        return True
    stars = 0
    for kind, arg in tokens:
        if kind == "lit" and arg == "/" or kind in ("any", "dirs"):
            stars = 0
        elif kind == "star":
            stars += 1
            if stars >= 2:
                return True
    return False


def go_clean(path: str) -> str:
    """``filepath.Clean`` on a slash-separated path."""
    cleaned = posixpath.normpath(path) if path else "."
    # POSIX keeps a leading "//"; Go does not.
    if cleaned.startswith("//"):
        cleaned = "/" + cleaned.lstrip("/")
    return cleaned


def has_wildcards(element: str) -> bool:
    """True if a COPY source element holds an unescaped ``*``, ``?`` or ``[``."""
    i = 0
    while i < len(element):
        ch = element[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False


def unescape(element: str) -> str:
    """Drop the backslashes of an element that has no wildcards."""
    return re.sub(r"\\(.)", r"\1", element, flags=re.DOTALL)


def _class_char(pattern: str, i: int) -> tuple[str, int]:
    """One character of a ``[...]`` class (Go's getEsc); returns it and the next index."""
    if i >= len(pattern) or pattern[i] in "-]":
        raise BadPattern(pattern)
    if pattern[i] == "\\":
        i += 1
        if i >= len(pattern):
            raise BadPattern(pattern)
    ch = pattern[i]
    i += 1
    if i >= len(pattern):  # the class is never closed
        raise BadPattern(pattern)
    return ch, i


def _parse_class(pattern: str, i: int) -> tuple[bool, list[tuple[str, str]], int]:
    """Parse a class starting just after ``[``; returns (negated, ranges, next index)."""
    negated = i < len(pattern) and pattern[i] == "^"
    if negated:
        i += 1
    ranges: list[tuple[str, str]] = []
    while True:
        if i < len(pattern) and pattern[i] == "]" and ranges:
            return negated, ranges, i + 1
        lo, i = _class_char(pattern, i)
        hi = lo
        if pattern[i] == "-":
            hi, i = _class_char(pattern, i + 1)
        ranges.append((lo, hi))


def _class_regex(negated: bool, ranges: list[tuple[str, str]], *, strict_ranges: bool) -> str:
    parts = []
    for lo, hi in ranges:
        if lo > hi:
            if strict_ranges:  # Go's regexp rejects [z-a]; filepath.Match just never matches it
                raise BadPattern(f"{lo}-{hi}")
            continue
        parts.append(re.escape(lo) if lo == hi else f"{re.escape(lo)}-{re.escape(hi)}")
    if not parts:
        return "[^/]" if negated else "(?!)"
    return "[" + ("^" if negated else "") + "".join(parts) + "]"


def check_syntax(pattern: str) -> None:
    """Raise BadPattern where ``filepath.Match(pattern, ".")`` would return an error."""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 >= len(pattern):
                raise BadPattern(pattern)
            i += 2
        elif ch == "[":
            _, _, i = _parse_class(pattern, i + 1)
        else:
            i += 1


def compile_element(element: str) -> Callable[[str], bool]:
    """``filepath.Match(element, name)`` for a single path element, as a predicate."""
    check_syntax(element)
    if not has_wildcards(element):
        literal = unescape(element)
        return literal.__eq__
    out = []
    tokens: list[Token] = []
    i = 0
    while i < len(element):
        ch = element[i]
        if ch == "*":
            out.append("[^/]*")
            tokens.append(("star", _not_slash))
            i += 1
        elif ch == "?":
            out.append("[^/]")
            tokens.append(("one", _not_slash))
            i += 1
        elif ch == "\\":
            out.append(re.escape(element[i + 1]))
            tokens.append(("lit", element[i + 1]))
            i += 2
        elif ch == "[":
            negated, ranges, i = _parse_class(element, i + 1)
            out.append(_class_regex(negated, ranges, strict_ranges=False))
            tokens.append(("one", re.compile(out[-1], re.DOTALL).fullmatch))
        else:
            out.append(re.escape(ch))
            tokens.append(("lit", ch))
            i += 1
    if _backtracking_is_slow(tokens):
        return Automaton(tuple(tokens)).match
    regex = re.compile("".join(out), re.DOTALL)
    return lambda name: regex.fullmatch(name) is not None


# --- moby/patternmatcher -------------------------------------------------

# Characters Go's regexp treats specially that mean nothing to filepath.Match,
# so patternmatcher escapes them.
_REGEX_ESCAPED = frozenset(".+()|{}$")


@frozen
class IgnoreMatcher:
    """A compiled patternmatcher pattern: one of four ways to compare a path."""

    kind: str  # "exact" | "prefix" | "suffix" | "regexp" | "automaton"
    text: str  # the cleaned pattern (exact), or the prefix / suffix to compare
    regex: re.Pattern[str] | None = None
    automaton: Automaton | None = None

    def __call__(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text)
        if self.kind == "suffix":
            if path.endswith(self.text):
                return True
            # "**/foo" also matches "foo" at the top
            return self.text[:1] == "/" and path == self.text[1:]
        if self.automaton is not None:
            return self.automaton.match(path)
        assert self.regex is not None
        return self.regex.fullmatch(path) is not None


def compile_ignore_pattern(pattern: str) -> IgnoreMatcher:
    """Translate one cleaned `.dockerignore` pattern (without its ``!``).

    The pattern is read left to right.  ``**`` matches any number of whole
    path elements (``**/`` also zero of them); a pattern that starts with
    ``**`` and has no other wildcard is a plain suffix comparison, and one
    that ends in ``**`` with no wildcard before it a prefix comparison.
    Everything else becomes an anchored regular expression.
    """
    check_syntax(pattern)
    kind = "exact"
    out: list[str] = []
    tokens: list[Token] = []  # the same pattern, for an Automaton
    in_class = False
    class_start = 0  # where the open class begins in ``out``
    i = 0
    n = len(pattern)
    step = 0
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*" and not in_class:
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                if i >= n:
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        out.append(".*")
                        tokens.append(("any", None))
                        kind = "regexp"
                else:
                    out.append("(.*/)?")
                    tokens.append(("dirs", None))
                    kind = "regexp"
                if step == 0:
                    kind = "suffix"
            else:
                out.append("[^/]*")
                tokens.append(("star", _not_slash))
                kind = "regexp"
        elif ch == "?" and not in_class:
            out.append("[^/]")
            tokens.append(("one", _not_slash))
            kind = "regexp"
        elif ch == "\\":
            # check_syntax guarantees a character follows
            out.append(re.escape(pattern[i]))
            if in_class:
                pass  # part of the class, compiled when it closes
            else:
                tokens.append(("lit", pattern[i]))
            i += 1
            kind = "regexp"
        elif ch == "[" and not in_class:
            class_start = len(out)
            out.append("[")
            in_class = True
            kind = "regexp"
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
        elif ch == "]" and in_class:
            out.append("]")
            in_class = False
            try:
                tokens.append(("one", re.compile("".join(out[class_start:])).fullmatch))
            except re.error as error:
                raise BadPattern(pattern) from error
        elif in_class:
            # inside a class only these would confuse Python's re (nested sets)
            out.append("\\" + ch if ch in "[&~|" else ch)
        elif ch == "[" or ch == "]":
            out.append(ch)
            tokens.append(("lit", ch))
            kind = "regexp"
        elif ch in _REGEX_ESCAPED:
            out.append("\\" + ch)
            tokens.append(("lit", ch))
        else:
            # other characters go through as they are ("^" stays an anchor,
            # as it does in Go's regexp)
            out.append(ch)
            tokens.append(("start", None) if ch == "^" else ("lit", ch))
        step += 1

    if kind == "prefix":
        return IgnoreMatcher("prefix", pattern[:-2])
    if kind == "suffix":
        return IgnoreMatcher("suffix", pattern[2:])
    if kind == "exact":
        return IgnoreMatcher("exact", pattern)
    try:
        regex = re.compile("".join(out))
    except re.error as error:  # e.g. a reversed range [z-a], which Go's regexp rejects too
        raise BadPattern(pattern) from error
    if _backtracking_is_slow(tokens):
        return IgnoreMatcher("automaton", pattern, automaton=Automaton(tuple(tokens)))
    return IgnoreMatcher("regexp", pattern, regex)
