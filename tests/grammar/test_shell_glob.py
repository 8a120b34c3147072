"""Shell patterns (``#``, ``%``, ``/``): the segment matcher against BuildKit's regex.

BuildKit translates a pattern to a Go regular expression and Go matches it
with leftmost-first (backtracking-order) semantics; Python's ``re`` has the
same semantics, so ``re`` on the same translation is the oracle here.

Why the segment matcher agrees (pattern ``S0 * S1 ... * Sk``, each ``Si`` a
fixed-length run of literals and ``?``; inside one line, no newlines):

1. Earliest placement is optimal: if some match puts ``Si`` at ``q_i``, the
   chain that puts each segment at its first occurrence after the previous one
   has ``p_i <= q_i`` for every i (induction: ``p_{i-1} <= q_{i-1}``, so
   ``q_i`` is a candidate for ``p_i``).
2. Lazy stars: backtracking tries star lengths smallest first, so it takes
   the lexicographically smallest length vector whose rest still matches;
   by (1) the first occurrence of ``S1`` always leaves the rest matchable if
   anything does, and so on: that is the earliest chain.
3. Greedy stars end at the latest occurrence of ``Sk`` after the previous
   segment.  Any valid chain's ``Sk`` starts after the earliest chain's
   ``S(k-1)`` ends (by (1)), so the latest occurrence after the earliest
   chain is the latest occurrence after any chain, and the ends agree.
4. Unanchored: a later start of ``S0`` moves every earliest placement right,
   so if the rest does not fit after the first occurrence of ``S0`` it fits
   after none: the first occurrence decides.
Stars and ``?`` never match a newline, so without a newline in the pattern a
match lies within one line and each line is such a window.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pybuild.grammar._shell_glob import GlobError, GoTemplate, parse_glob, reverse_pattern


def oracle(pattern: str, *, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """BuildKit's convertShellPatternToRegex, written independently of the module."""
    out = ["^"] if anchored else []
    chars = list(pattern.removeprefix("\ufeff"))
    while chars:
        char = chars.pop(0)
        if char == "*":
            out.append(".*" if greedy else ".*?")
        elif char == "?":
            out.append(".")
        elif char == "\\":
            if chars and chars[0] in "}/":
                continue
            if not chars or chars[0] not in "*?\\":
                raise ValueError("invalid escape")
            out.append("\\" + chars.pop(0))
        else:
            out.append(re.escape(char))
    return re.compile("".join(out))


def oracle_replace_all(regex: re.Pattern[str], text: str, expand: GoTemplate) -> str:
    """Go's Regexp.ReplaceAllString loop."""
    out, last_end, pos = [], 0, 0
    while pos <= len(text):
        match = regex.search(text, pos)
        if match is None:
            break
        start, stop = match.span()
        out.append(text[last_end:start])
        if stop > last_end or start == 0:
            out.append(expand.expand(match.group()))
        last_end = stop
        pos = pos + 1 if pos + 1 > stop else stop
    out.append(text[last_end:])
    return "".join(out)


PATTERN_TOKENS = st.sampled_from(["a", "b", "ab", "\n", "*", "**", "?", "\\*", "\\?", "\\\\", "*a*"])
patterns = st.lists(PATTERN_TOKENS, max_size=7).map("".join)
texts = st.text(alphabet="ab\n*?\\", max_size=24)


@settings(max_examples=1500, deadline=None)
@given(pattern=patterns, text=texts, greedy=st.booleans())
@example(pattern="*\n\n*a", text="b\n\n\na", greedy=True)
@example(pattern="a*b*", text="aXb\nab", greedy=False)
def test_prefix_match_agrees_with_the_regex(pattern: str, text: str, greedy: bool) -> None:
    found = oracle(pattern, greedy=greedy, anchored=True).match(text)
    assert parse_glob(pattern).prefix_end(text, greedy=greedy) == (None if found is None else found.end())


@settings(max_examples=1500, deadline=None)
@given(pattern=patterns, text=texts, pos=st.integers(0, 25))
@example(pattern="*b", text="ab\nb", pos=0)
@example(pattern="a*", text="b\n\na", pos=1)
def test_search_agrees_with_the_regex(pattern: str, text: str, pos: int) -> None:
    pos = min(pos, len(text))
    found = oracle(pattern, greedy=True, anchored=False).search(text, pos)
    assert parse_glob(pattern).search(text, pos) == (None if found is None else found.span())


@settings(max_examples=1000, deadline=None)
@given(pattern=patterns, text=texts, template=st.sampled_from(["", "-", "<$0>", "$$", "${0}${1}"]))
@example(pattern="*", text="ab\ncd", template="x")
@example(pattern="", text="ab", template="-")
def test_replace_all_agrees_with_go(pattern: str, text: str, template: str) -> None:
    parsed = GoTemplate.parse(template)
    expected = oracle_replace_all(oracle(pattern, greedy=True, anchored=False), text, parsed)
    assert parse_glob(pattern).replace_all(text, parsed) == expected


@settings(max_examples=500, deadline=None)
@given(pattern=patterns, text=texts)
def test_replace_first_agrees_with_the_regex(pattern: str, text: str) -> None:
    found = oracle(pattern, greedy=True, anchored=False).search(text)
    expected = text if found is None else text[: found.start()] + "R" + text[found.end() :]
    assert parse_glob(pattern).replace_first(text, "R") == expected


def test_many_stars_stay_fast_on_a_long_value() -> None:
    # With backtracking this is O(n^3); the segment matcher answers at once.
    value = "a" * 200_000
    glob = parse_glob("*a*a*x")
    assert glob.search(value) is None
    assert glob.prefix_end(value, greedy=True) is None
    assert parse_glob("*a*a").prefix_end(value, greedy=True) == len(value)
    assert parse_glob("*a*a").prefix_end(value, greedy=False) == 2


@pytest.mark.parametrize(
    ("pattern", "reversed_pattern"),
    [
        ("a\\*c", "c\\*a"),
        ("\\\\\\ab", "b\\a\\\\"),
        ("ab\\", "\\ba"),
        ("👽\\🚀🖖", "🖖\\🚀👽"),
        ("\\\\b", "b\\\\"),
    ],
)
def test_reverse_pattern_keeps_escape_pairs(pattern: str, reversed_pattern: str) -> None:
    assert reverse_pattern(pattern) == reversed_pattern


@pytest.mark.parametrize("pattern", ["\\", "\\x", "\\\\\\", "a\\#"])
def test_invalid_escapes_are_refused(pattern: str) -> None:
    with pytest.raises(GlobError):
        parse_glob(pattern)
    with pytest.raises(ValueError):
        oracle(pattern, greedy=True, anchored=True)


def test_escaped_brace_and_slash_are_plain_characters() -> None:
    assert parse_glob("\\}\\/").literal == "}/"
    assert parse_glob("()[]{\\}^$.\\*\\?|\\\\").literal == "()[]{}^$.*?|\\"


def test_a_leading_byte_order_mark_is_skipped() -> None:
    # Go's text/scanner, which BuildKit reads the pattern with, drops it.
    assert parse_glob("\ufeffab").literal == "ab"
    assert parse_glob("a\ufeff").literal == "a\ufeff"


@pytest.mark.parametrize(
    ("template", "match", "expanded"),
    [
        ("plain", "m", "plain"),
        ("$$", "m", "$"),
        ("<$0>", "m", "<m>"),
        ("<${0}>", "m", "<m>"),
        ("<$00>", "m", "<>"),  # leading zeros make it a name; no such group
        ("<$1>", "m", "<>"),  # no groups in BuildKit's patterns
        ("<$name>", "m", "<>"),
        ("<$0x>", "m", "<>"),  # the name is as long as possible: "0x"
        ("<$>", "m", "<$>"),  # malformed: kept
        ("<${0>", "m", "<${0>"),
        ("<$-0>", "m", "<$-0>"),
        ("a$", "m", "a$"),
    ],
)
def test_go_template_expansion(template: str, match: str, expanded: str) -> None:
    assert GoTemplate.parse(template).expand(match) == expanded
