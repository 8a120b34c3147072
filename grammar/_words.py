"""Go-compatible text helpers for the Dockerfile front end.

BuildKit's parser is written in Go; where its behaviour depends on Go's
definitions (``unicode.IsSpace``, ``strings.TrimSpace``, ``encoding/json``),
these helpers reproduce them so that pybuild splits words exactly as BuildKit.
"""

from __future__ import annotations

import json
import re

# unicode.IsSpace: Latin-1 spaces plus the Unicode White_Space property.
# (str.isspace also counts U+001C..U+001F, which Go does not.)
GO_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
    "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_GO_SPACE_SET = frozenset(GO_SPACE)

# BuildKit's reWhitespace: the separator for FROM, EXPOSE, ADD/COPY shell form.
WHITESPACE_RUN = re.compile(r"[\t\v\f\r ]+")


def is_go_space(ch: str) -> bool:
    return ch in _GO_SPACE_SET


def go_trim_space(text: str) -> str:
    return text.strip(GO_SPACE)


def go_trim_left_space(text: str) -> str:
    return text.lstrip(GO_SPACE)


def split_whitespace(text: str) -> list[str]:
    """regexp.Split(reWhitespace, text, -1) as BuildKit uses it (no empty trailing field)."""
    if text == "":
        return []
    return WHITESPACE_RUN.split(text)


# Runs of characters with no special meaning, copied as one slice each (a
# loop over characters cost about a second per 4 MiB instruction).
_ORDINARY = {
    escape: re.compile("[^" + re.escape(GO_SPACE + "'\"" + escape) + "]+") for escape in ("\\", "`")
}
_IN_DOUBLE_QUOTES = {escape: re.compile("[^" + re.escape('"' + escape) + "]+") for escape in ("\\", "`")}
_IN_SINGLE_QUOTES = re.compile("[^']+")
_GO_SPACES = re.compile("[" + re.escape(GO_SPACE) + "]*")
_PLAIN_FLAG = re.compile("--[^" + re.escape(GO_SPACE + "'\"\\") + "]*")


def parse_words(rest: str, escape: str) -> list[str]:
    """Split ENV/LABEL/ARG arguments into words, keeping quotes and escapes.

    Words break at Go whitespace outside quotes.  The escape token keeps
    itself and the next character (so ``a\\ b`` stays one word); inside
    single quotes it has no effect; a trailing escape token is dropped.
    """
    ordinary, in_double = _ORDINARY[escape], _IN_DOUBLE_QUOTES[escape]
    words: list[str] = []
    current: list[str] = []
    blank_ok = False
    in_word = False
    quote = ""
    i, n = 0, len(rest)
    while i < n:
        if quote:
            run = (_IN_SINGLE_QUOTES if quote == "'" else in_double).match(rest, i)
            if run:
                current.append(run.group())
                i = run.end()
                continue
            ch = rest[i]
            if ch == quote:
                quote = ""
            elif ch == escape and quote != "'":
                if i + 1 == n:
                    quote = ""
                    i += 1
                    continue
                current.append(ch)
                i += 1
                ch = rest[i]
            current.append(ch)
            i += 1
            continue
        run = ordinary.match(rest, i)
        if run:
            current.append(run.group())
            in_word = True
            i = run.end()
            continue
        ch = rest[i]
        if ch in _GO_SPACE_SET:
            if in_word and (blank_ok or current):
                words.append("".join(current))
            current.clear()
            blank_ok = False
            in_word = False
            i += 1
            continue
        in_word = True
        if ch == "'" or ch == '"':
            quote = ch
            blank_ok = True
        elif ch == escape:
            if i + 1 == n:
                i += 1
                continue
            current.append(ch)
            i += 1
            ch = rest[i]
        current.append(ch)
        i += 1
    if in_word and (blank_ok or current):
        words.append("".join(current))
    return words


class FlagSyntaxError(ValueError):
    """A leading ``--flag`` word that cannot be read."""


def extract_flags(line: str) -> tuple[list[str], str]:
    """Split leading ``--flag`` words off an instruction's arguments.

    Returns the flags (quotes removed, backslash escapes applied) and the
    rest of the line.  A bare ``--`` ends the flags and is dropped.  As in
    BuildKit, the backslash is the escape here whatever the escape directive.
    """
    flags: list[str] = []
    i, n = 0, len(line)
    while True:
        i = _GO_SPACES.match(line, i).end()  # type: ignore[union-attr]  # the pattern matches the empty string: never None
        if i >= n:
            return flags, ""
        if not line.startswith("--", i):
            return flags, line[i:]
        plain = _PLAIN_FLAG.match(line, i)
        end = plain.end()  # type: ignore[union-attr]  # the line has -- there: it matches
        if end == n or line[end] in _GO_SPACE_SET:  # no quotes or escapes: the word as written
            text, blank_ok, i = line[i:end], False, end
        else:
            text, blank_ok, i = _flag_word(line, i)
        if text == "--":
            return flags, line[i:]
        if blank_ok or text:
            flags.append(text)


def _flag_word(line: str, i: int) -> tuple[str, bool, int]:
    """The flag word starting at ``i`` with quotes removed and escapes applied,
    whether it had quotes (so an empty word counts), and where it ends."""
    word: list[str] = []
    blank_ok = False
    quote = ""
    n = len(line)
    while i < n:
        ch = line[i]
        if quote:
            if ch == quote:
                quote = ""
                i += 1
                continue
            if ch == "\\":
                if i + 1 == n:
                    quote = ""
                    i += 1
                    continue
                i += 1
                ch = line[i]
            word.append(ch)
            i += 1
            continue
        if ch in _GO_SPACE_SET:
            break
        if ch == "'" or ch == '"':
            quote = ch
            blank_ok = True
            i += 1
            continue
        if ch == "\\":
            if i + 1 == n:
                i += 1
                continue
            i += 1
            ch = line[i]
        word.append(ch)
        i += 1
    return "".join(word), blank_ok, i


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class NotStringArray(ValueError):
    """A JSON array with an element that is not a string (an error, not a fallback)."""


def decode_json_array(rest: str) -> list[str] | None:
    """The exec form of an instruction, or None when ``rest`` is not JSON.

    Mirrors BuildKit's parseJSON: after leading whitespace the text must
    start with ``[`` and decode (strictly, as Go's encoding/json does) to an
    array; an array holding anything but strings raises NotStringArray.
    """
    stripped = go_trim_left_space(rest)
    if not stripped.startswith("["):
        return None
    try:
        value = json.loads(stripped, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise NotStringArray("when using JSON array syntax, arrays must be comprised of strings only")
    return value
