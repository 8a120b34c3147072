"""Shell patterns of ``${VAR#pat}``, ``${VAR%pat}`` and ``${VAR/pat/rep}``.

BuildKit turns such a pattern into a Go regular expression (``*`` becomes
``.*`` or ``.*?``, ``?`` becomes ``.``, everything else literal) and lets RE2
find the match.  The semantics are those of a backtracking engine (leftmost
match; lazy stars take as little as they can, greedy stars as much), but RE2
finds them in linear time.  Python's ``re`` has the same semantics but
backtracks, so ``${V//*x/y}`` on a long value without an ``x`` would take
quadratic time, and each further star multiplies that.

So patterns are matched here by a segment matcher instead.  A pattern is
``S0 * S1 * ... * Sk`` where each segment is a fixed-length run of literals
and ``?``.  Stars and ``?`` never match a newline, so when the pattern has no
literal newline every match lies inside one line, and inside a newline-free
window these facts hold (proved in the test module's docstring, and checked
there against ``re`` on random inputs):

- placing each segment at its earliest occurrence is never worse than any
  other placement, so lazy matching is "earliest S1, earliest S2, ...";
- greedy matching ends where the last segment's latest occurrence after the
  earliest placement of the others ends;
- if the segments after S0 cannot be placed after the first occurrence of
  S0, they cannot be placed after any later one either.

Each step is one ``str.find``/``rfind`` (or one fixed-length regex search),
so matching is linear in the value for a given pattern.  A pattern with a
literal newline (it can only come from a variable's value) falls back to
``re`` with exactly BuildKit's translation.
"""

from __future__ import annotations

import functools
import re

from .._frozen import frozen

__all__ = ["Glob", "GlobError", "GoTemplate", "parse_glob", "reverse_pattern"]

_BOM = "\ufeff"
# A pattern's escape character is always the backslash, whatever the
# Dockerfile's escape directive says (BuildKit hard-codes it).
_BACKSLASH = "\\"
_ANY = None  # the token for `?` inside a segment; literal tokens are 1-char strings


class GlobError(ValueError):
    """The pattern cannot be translated (BuildKit: "invalid escape")."""


class ResultTooLarge(ValueError):
    """A replacement would make a string longer than the caller allows."""


@frozen(slots=True)
class _Segment:
    """A fixed-length run of literal characters and ``?`` between two stars."""

    length: int
    source: str  # as a regular expression (the whole pattern's fallback)
    literal: str | None  # the text, when the segment has no `?`
    regex: re.Pattern[str] | None  # otherwise: the fixed-length regex
    regex_last: re.Pattern[str] | None  # ".*" + regex: finds the latest occurrence

    def matches_at(self, text: str, pos: int, end: int) -> bool:
        if self.literal is not None:
            return text.startswith(self.literal, pos, end)
        assert self.regex is not None
        return self.regex.match(text, pos, end) is not None

    def first(self, text: str, start: int, end: int) -> int:
        """Start of the earliest occurrence inside ``text[start:end]``, or -1."""
        if self.literal is not None:
            return text.find(self.literal, start, end)
        assert self.regex is not None
        found = self.regex.search(text, start, end)
        return -1 if found is None else found.start()

    def last(self, text: str, start: int, end: int) -> int:
        """Start of the latest occurrence inside ``text[start:end]``, or -1."""
        if self.literal is not None:
            return text.rfind(self.literal, start, end)
        assert self.regex_last is not None
        found = self.regex_last.match(text, start, end)
        return -1 if found is None else found.end() - self.length


def _make_segment(tokens: list[str | None]) -> _Segment:
    if _ANY not in tokens:
        text = "".join(tokens)  # type: ignore[arg-type]  # no _ANY among them: all str
        return _Segment(len(tokens), re.escape(text), text, None, None)
    source = "".join("." if token is _ANY else re.escape(token) for token in tokens)
    return _Segment(len(tokens), source, None, re.compile(source), re.compile(".*" + source))


@frozen(slots=True)
class Glob:
    """A parsed shell pattern; ``segments`` are S0..Sk around k stars."""

    segments: tuple[_Segment, ...]
    has_newline: bool

    @property
    def literal(self) -> str | None:
        """The whole pattern as plain text, when it has no ``*`` and no ``?``."""
        return self.segments[0].literal if len(self.segments) == 1 else None

    def regex_source(self, *, greedy: bool, anchored: bool) -> str:
        """BuildKit's regular expression for this pattern."""
        star = ".*" if greedy else ".*?"
        body = star.join(segment.source for segment in self.segments)
        return "^" + body if anchored else body

    # -- anchored at the start: ${VAR#pat} (and ${VAR%pat} on reversed text) --

    def prefix_end(self, text: str, *, greedy: bool) -> int | None:
        """End of the shortest (or, greedy, longest) match at position 0."""
        literal = self.literal
        if literal is not None:
            return len(literal) if text.startswith(literal) else None
        if self.has_newline:
            found = _compiled(self.regex_source(greedy=greedy, anchored=True)).match(text)
            return None if found is None else found.end()
        line_end = text.find("\n")
        end = len(text) if line_end < 0 else line_end
        first = self.segments[0]
        if not first.matches_at(text, 0, end):
            return None
        return self._place_rest(text, first.length, end, greedy=greedy)

    # -- unanchored, greedy: ${VAR/pat/rep} and ${VAR//pat/rep} --

    def search(self, text: str, pos: int = 0) -> tuple[int, int] | None:
        """The leftmost (then longest) match starting at or after ``pos``."""
        if len(self.segments) == 1:  # no star: one fixed-length segment
            only = self.segments[0]
            found = only.first(text, pos, len(text))
            return None if found < 0 else (found, found + only.length)
        if self.has_newline:
            match = _compiled(self.regex_source(greedy=True, anchored=False)).search(text, pos)
            return None if match is None else match.span()
        size = len(text)
        while pos <= size:
            line_end = text.find("\n", pos)
            end = size if line_end < 0 else line_end
            span = self._search_line(text, pos, end)
            if span is not None:
                return span
            pos = end + 1
        return None

    def _search_line(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        first = self.segments[0]
        found = first.first(text, start, end)
        if found < 0:
            return None
        # If the other segments do not fit after the first occurrence of S0,
        # they fit after no later one: this occurrence decides the line.
        stop = self._place_rest(text, found + first.length, end, greedy=True)
        return None if stop is None else (found, stop)

    def _place_rest(self, text: str, cursor: int, end: int, *, greedy: bool) -> int | None:
        segments = self.segments
        last_index = len(segments) - 1
        for index in range(1, last_index + 1):
            segment = segments[index]
            if greedy and index == last_index:
                found = segment.last(text, cursor, end)
            else:
                found = segment.first(text, cursor, end)
            if found < 0:
                return None
            cursor = found + segment.length
        return cursor

    # -- substitution --

    def replace_first(self, text: str, replacement: str) -> str:
        """Go: ``re.FindStringIndex`` then splice (the replacement is literal)."""
        span = self.search(text)
        if span is None:
            return text
        return text[: span[0]] + replacement + text[span[1] :]

    def replace_all(self, text: str, template: GoTemplate, limit: int | None = None) -> str:
        """Go's ``Regexp.ReplaceAllString``, including its handling of empty matches.

        ResultTooLarge if the result would be longer than ``limit``: checked
        before it is built (a short replacement at every character of a long
        value multiplies its size).
        """
        literal = self.literal
        if literal is not None:
            # Every match is the literal itself, so the template expands to one
            # string; str.replace also inserts around every character for "",
            # as Go does for an empty match at each position.
            expanded = template.expand(literal)
            if limit is not None:
                count = text.count(literal) if literal else len(text) + 1
                if len(text) + count * (len(expanded) - len(literal)) > limit:
                    raise ResultTooLarge
            return text.replace(literal, expanded)
        room = [len(text) if limit is None else limit]  # what the result may still grow by, and more

        def grown(before: str, after: str) -> str:
            room[0] -= len(after) - len(before)
            if limit is not None and room[0] < len(text):
                raise ResultTooLarge
            return after

        if len(self.segments) == 1:
            # No star and at least one `?`: matches are never empty, so Go's
            # loop is plain non-overlapping substitution.
            regex = self.segments[0].regex
            assert regex is not None
            return regex.sub(lambda match: grown(match.group(), template.expand(match.group())), text)
        out: list[str] = []
        last_end = 0
        pos = 0
        size = len(text)
        while pos <= size:
            span = self.search(text, pos)
            if span is None:
                break
            start, stop = span
            out.append(text[last_end:start])
            # Go skips an empty match right after the previous match.
            if stop > last_end or start == 0:
                out.append(grown(text[start:stop], template.expand(text[start:stop])))
            last_end = stop
            pos = pos + 1 if pos + 1 > stop else stop
        out.append(text[last_end:])
        return "".join(out)


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> re.Pattern[str]:
    return re.compile(source)


_CACHED_PATTERN_LENGTH = 4096  # longer patterns are rare; do not pin them in memory


def parse_glob(pattern: str) -> Glob:
    """Parse a pattern (see ``_parse_glob``), cached for the usual short ones."""
    if len(pattern) <= _CACHED_PATTERN_LENGTH:
        return _parse_glob_cached(pattern)
    return _parse_glob(pattern)


def _parse_glob(pattern: str) -> Glob:
    """Parse a pattern as BuildKit's ``convertShellPatternToRegex`` reads it.

    ``*`` and ``?`` are wildcards; ``\\*``, ``\\?`` and ``\\\\`` are literal;
    ``\\}`` and ``\\/`` are ``}`` and ``/`` (they had to be escaped inside
    ``${...}``); any other escape is an error.  As Go's text/scanner, a
    leading byte-order mark is skipped.
    """
    segments: list[_Segment] = []
    tokens: list[str | None] = []
    has_newline = False
    index = 1 if pattern.startswith(_BOM) else 0
    size = len(pattern)
    previous_star = False
    while index < size:
        char = pattern[index]
        index += 1
        if char == "*":
            if not previous_star:  # `**` matches what `*` matches
                segments.append(_make_segment(tokens))
                tokens = []
            previous_star = True
            continue
        previous_star = False
        if char == "?":
            tokens.append(_ANY)
            continue
        if char == _BACKSLASH:
            if index < size and pattern[index] in "}/":
                continue  # the escape only protected the ${...} syntax
            if index >= size:
                raise GlobError("invalid escape '\\' at the end of the pattern")
            char = pattern[index]
            index += 1
            if char not in "*?\\":
                raise GlobError(f"invalid escape '\\{char}'")
        has_newline = has_newline or char == "\n"
        tokens.append(char)
    segments.append(_make_segment(tokens))
    return Glob(tuple(segments), has_newline)


_parse_glob_cached = functools.lru_cache(maxsize=256)(_parse_glob)


def reverse_pattern(pattern: str) -> str:
    """Reverse a pattern but keep each ``\\x`` pair in order (``a\\*c`` -> ``c\\*a``).

    BuildKit trims a suffix by reversing both the value and the pattern and
    trimming a prefix; a backslash not followed by anything stays a plain
    character.
    """
    units: list[str] = []
    index = 0
    size = len(pattern)
    while index < size:
        if pattern[index] == _BACKSLASH and index + 1 < size:
            units.append(pattern[index : index + 2])
            index += 2
        else:
            units.append(pattern[index])
            index += 1
    units.reverse()
    return "".join(units)


def _is_go_name_char(char: str) -> bool:
    """unicode.IsLetter || unicode.IsDigit || '_' (Go)."""
    return char == "_" or char.isalpha() or char.isdecimal()


@frozen(slots=True)
class GoTemplate:
    """A replacement string read as Go's ``Regexp.Expand`` reads it.

    ``ReplaceAllString`` expands ``$`` in its replacement: ``$$`` is ``$``,
    ``$0``/``${0}`` is the whole match, any other well-formed ``$name`` or
    ``${name}`` refers to a group that BuildKit's patterns never have and is
    empty, and a malformed ``$`` is kept.  ``parts`` alternates literal text
    and ``None`` for "the match".
    """

    parts: tuple[str | None, ...]

    @classmethod
    def parse(cls, template: str) -> GoTemplate:
        if "$" not in template:
            return cls((template,))
        parts: list[str | None] = []
        literal: list[str] = []
        index = 0
        size = len(template)
        while index < size:
            dollar = template.find("$", index)
            if dollar < 0:
                literal.append(template[index:])
                break
            literal.append(template[index:dollar])
            if template.startswith("$$", dollar):
                literal.append("$")
                index = dollar + 2
                continue
            cursor = dollar + 1
            brace = cursor < size and template[cursor] == "{"
            if brace:
                cursor += 1
            name_start = cursor
            while cursor < size and _is_go_name_char(template[cursor]):
                cursor += 1
            name = template[name_start:cursor]
            if brace:
                if cursor < size and template[cursor] == "}":
                    cursor += 1
                else:
                    name = ""  # `${name` without its brace is malformed
            if not name:
                literal.append("$")
                index = dollar + 1
                continue
            index = cursor
            if name == "0":
                parts.append("".join(literal))
                literal = []
                parts.append(None)
        parts.append("".join(literal))
        return cls(tuple(parts))

    def expand(self, match: str) -> str:
        if len(self.parts) == 1:
            return self.parts[0]  # type: ignore[return-value]  # a single part is literal text, never the match
        return "".join(match if part is None else part for part in self.parts)
