"""Heredoc markers: which words of an instruction line open a heredoc.

As BuildKit: the line is split into shell words keeping quotes, escapes and
``$`` references as written, with ``<<`` (and ``<<-``) glued to the word after
it; each word matching ``^(\\d*)<<(-?)\\s*([^<]*)$`` names a heredoc.  The name
is the word unquoted; its body is expanded only when no part of the name was
quoted.  Backslash is the escape here whatever the escape directive says.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from .._frozen import frozen
from ._words import _GO_SPACE_SET

HEREDOC_WORD = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$", re.S)
LEADING_TABS = re.compile(r"^\t+", re.M)


class HeredocSyntaxError(ValueError):
    pass


@frozen
class HeredocMarker:
    name: str
    expand: bool
    chomp: bool
    file_descriptor: int


def _split_words(text: str, special: str, take: Callable[[str, int, list[str]], int]) -> list[str]:
    """``text`` split at Go whitespace outside quotes.

    An ordinary character joins the current word as it is; at a character in
    ``special`` (quotes, escapes), ``take(text, i, current)`` adds that part of
    the word to ``current`` and returns where the next part starts.
    """
    words: list[str] = []
    current: list[str] = []
    in_word = False
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _GO_SPACE_SET:
            if in_word:
                words.append("".join(current))
                current.clear()
                in_word = False
            i += 1
            continue
        in_word = True
        if ch in special:
            i = take(text, i, current)
        else:
            current.append(ch)
            i += 1
    if in_word:
        words.append("".join(current))
    return words


def marker_words(line: str) -> list[str]:
    """Shell words of ``line`` with quotes and escapes kept as written."""
    return _split_words(line, "\\'\"<", _part_as_written)


def _part_as_written(line: str, i: int, current: list[str]) -> int:
    ch = line[i]
    if ch == "\\":
        current.append(line[i : i + 2])
        return i + 2
    if ch == "'" or ch == '"':
        end = _closing_quote(line, i)
        current.append(line[i:end])
        return end
    if line.startswith("<<", i):
        # `<<  EOF` and `<<- EOF` are one word, as in a shell.
        n = len(line)
        j = i + 2
        if j < n and line[j] == "-":
            j += 1
        while j < n and line[j] in _GO_SPACE_SET:
            j += 1
        current.append(line[i:j])
        return j
    current.append(ch)  # a lone "<"
    return i + 1


def _closing_quote(line: str, start: int) -> int:
    quote = line[start]
    i = start + 1
    while i < len(line):
        if line[i] == quote:
            return i + 1
        if line[i] == "\\" and quote == '"':
            i += 2
            continue
        i += 1
    return len(line)


def _unquote(word: str, keep_quotes: bool) -> list[str]:
    """Shell quote removal on one word; several results if it splits."""

    def part(word: str, i: int, current: list[str]) -> int:
        n = len(word)
        ch = word[i]
        if ch == "\\":
            if i + 1 < n:
                current.append(word[i + 1])
            return i + 2
        if ch == "'":
            end = word.find("'", i + 1)
            if end < 0:
                raise HeredocSyntaxError("unexpected end of statement while looking for matching single-quote")
            current.append(word[i : end + 1] if keep_quotes else word[i + 1 : end])
            return end + 1
        j = i + 1
        inner: list[str] = []
        while j < n and word[j] != '"':
            if word[j] == "\\" and j + 1 < n and word[j + 1] in '"\\$`':
                j += 1
            inner.append(word[j])
            j += 1
        if j >= n:
            raise HeredocSyntaxError("unexpected end of statement while looking for matching double-quote")
        text = "".join(inner)
        current.append(f'"{text}"' if keep_quotes else text)
        return j + 1

    return _split_words(word, "\\'\"", part)


def parse_marker(word: str) -> HeredocMarker | None:
    """The heredoc a word opens, None if it opens none; raises on bad quoting."""
    match = HEREDOC_WORD.match(word)
    if match is None:
        return None
    fd, chomp, rest = match.groups()
    if not rest:
        return None
    plain = _unquote(rest, keep_quotes=False)
    if len(plain) != 1:
        return None
    raw = _unquote(rest, keep_quotes=True)
    name = plain[0]

    def quotes(s: str) -> int:
        return s.count("'") + s.count('"')

    return HeredocMarker(
        name=name,
        expand=quotes(name) == quotes(raw[0]),
        chomp=chomp == "-",
        file_descriptor=int(fd) if fd else 0,
    )


def markers_in_line(line: str) -> list[HeredocMarker]:
    found = []
    for word in marker_words(line):
        marker = parse_marker(word)
        if marker is not None:
            found.append(marker)
    return found


def chomp_content(content: str) -> str:
    """Remove leading tabs from every line (what ``<<-`` asks for)."""
    return LEADING_TABS.sub("", content)
