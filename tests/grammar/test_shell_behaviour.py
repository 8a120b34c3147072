"""ShellLex beyond the conformance tables: messages, options, escape token,
Unicode, word splitting, BuildKit's quirks, deep nesting and large words."""

from __future__ import annotations

import dataclasses
import sys
import threading
import tracemalloc
from collections.abc import Iterator, Mapping
from types import MappingProxyType

import pytest

from pybuild.errors import DockerfileError, ExpansionError
from pybuild.grammar._shell import ShellLex

LEX = ShellLex()
MiB = 1 << 20


def expansion_error(word: str, env: Mapping[str, str] | None = None, lex: ShellLex = LEX) -> ExpansionError:
    with pytest.raises(ExpansionError) as caught:
        lex.process_word(word, env or {})
    return caught.value


# -- error messages ---------------------------------------------------------


def test_required_variable_messages_are_buildkits() -> None:
    unset = expansion_error("${VAR:?}")
    assert str(unset) == 'failed to process "${VAR:?}": VAR: is not allowed to be unset'
    assert unset.location is None  # the caller adds the Dockerfile location
    assert unset.__context__ is None and unset.__cause__ is None  # nothing internal leaks
    assert isinstance(unset, DockerfileError)
    assert unset.hint is not None and "VAR" in unset.hint
    empty = expansion_error("${VAR:?}", {"VAR": ""})
    assert str(empty) == 'failed to process "${VAR:?}": VAR: is not allowed to be empty'
    assert LEX.process_word("${VAR?}", {"VAR": ""}) == ""


def test_required_variable_message_is_expanded() -> None:
    error = expansion_error("${VAR:?need $WHAT, got '${VAR}'}", {"WHAT": "a version"})
    assert error.message.endswith(": VAR: need a version, got ${VAR}")


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("${}", "syntax error: bad substitution"),
        ("${:-x}", "syntax error: bad substitution"),
        ("${{a}", "syntax error: bad substitution"),
        ("${", "syntax error: missing '}'"),
        ("${abc", "syntax error: missing '}'"),
        ("${abc:", "syntax error: missing '}'"),
        ("${a:-b", "syntax error: missing '}'"),
        ("${a:-'}'", "syntax error: missing '}'"),
        ("${a/b", "syntax error: missing '/' in ${}"),
        ("${a//b}", "syntax error: missing '/' in ${}"),
        ("${a/b/c", "syntax error: missing '}'"),
        ("${a.b}", "unsupported modifier (.) in substitution"),
        ("${a=b}", "unsupported modifier (=) in substitution"),
        ("${a:=b}", "unsupported modifier (:=) in substitution"),
        ("${a:x}", "unsupported modifier (:x) in substitution"),
        ("${a:#b}", "unsupported modifier (:#) in substitution"),
        ("${a:%%b}", "unsupported modifier (:%) in substitution"),
        ("${#a}", "unsupported modifier (a) in substitution"),
        ("'abc", "unexpected end of statement while looking for matching single-quote"),
        ('"abc', "unexpected end of statement while looking for matching double-quote"),
        ('"abc\\"', "unexpected end of statement while looking for matching double-quote"),
        ("${a#\\#}", "invalid pattern (\\#) in substitution: invalid escape '\\#'"),
        ("${a%%x\\y}", "invalid pattern (x\\y) in substitution: invalid escape '\\y'"),
        ("${a/\\q/x}", "invalid pattern (\\q) in substitution: invalid escape '\\q'"),
    ],
)
def test_error_messages(word: str, message: str) -> None:
    error = expansion_error(word)
    assert error.message == f"failed to process {_go_quoted(word)}: {message}"


def _go_quoted(word: str) -> str:
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_assignment_forms_get_a_hint() -> None:
    hint = expansion_error("${A:=b}").hint
    assert hint is not None and "${VAR:-word}" in hint


def test_an_invalid_pattern_from_a_variable_is_reported() -> None:
    error = expansion_error("${A#$P}", {"A": "x", "P": "ab\\"})
    assert "invalid pattern (ab\\) in substitution" in error.message


def test_nested_errors_at_the_end_of_the_word_become_missing_brace() -> None:
    # BuildKit replaces any error from the text inside ${...} by "missing '}'"
    # when the scanner stopped at the end of the word.
    inside = expansion_error("${a:-${b?}}")
    assert inside.message.endswith(": b: is not allowed to be unset")
    at_end = expansion_error("${a:-${b?}")
    assert at_end.message.endswith(": syntax error: missing '}'")


def test_messages_stay_on_one_line_and_short() -> None:
    error = expansion_error("line one\n${X:?}")
    assert "\n" not in str(error) and "\\n" in str(error)
    long_error = expansion_error("x" * MiB + "${")
    assert len(str(long_error)) < 400
    assert f"({MiB + 2} characters)" in str(long_error)


# -- escape token -------------------------------------------------------------

BACKTICK = ShellLex("`")


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("he`$X", "he$X"),
        ("C:\\dir\\$X", "C:\\dir\\x"),
        ('"a`"b"', 'a"b'),
        ('"a`b"', "a`b"),
        ("a``b", "a`b"),
        ("end`", "end"),
        # Patterns always escape with a backslash, whatever the escape token.
        ("${S#\\*}", "a"),
        ("${T#`*}", "xy"),
    ],
)
def test_backtick_escape(word: str, expected: str) -> None:
    assert BACKTICK.process_word(word, {"X": "x", "S": "*a", "T": "`xy"}) == expected


def test_escape_must_be_one_character() -> None:
    with pytest.raises(ValueError):
        ShellLex("")
    with pytest.raises(ValueError):
        ShellLex("\\\\")


# -- options ----------------------------------------------------------------


def test_raw_quotes_keep_the_quotes() -> None:
    lex = ShellLex(raw_quotes=True)
    assert lex.process_word("'a b'\"$X\"", {"X": "x"}) == "'a b'\"x\""


def test_raw_escapes_keep_the_escape_character() -> None:
    lex = ShellLex(raw_escapes=True)
    assert lex.process_word("a\\ b\\$X", {"X": "x"}) == "a\\ b\\$X"
    assert lex.process_word('"\\$X"', {"X": "x"}) == "\\$X"
    # BuildKit writes the escape once because escapes are raw and once more
    # because it escapes nothing here.
    assert lex.process_word('"\\q"', {}) == "\\\\q"


def test_heredoc_marker_mode_keeps_words_as_written() -> None:
    # How BuildKit's parser looks for heredoc markers on a line.
    lex = ShellLex(raw_quotes=True, raw_escapes=True, skip_unset_env=True)
    words = lex.process_words("cat <<'EOF' > \"$OUT\" a\\ b", {})
    assert words == ["cat", "<<'EOF'", ">", '"$OUT"', "a\\ b"]


def test_skip_process_quotes_makes_quotes_ordinary() -> None:
    lex = ShellLex(skip_process_quotes=True)
    assert lex.process_word("'$X'", {"X": "x"}) == "'x'"
    assert lex.process_words('"a b"', {}) == ['"a', 'b"']


@pytest.mark.parametrize(
    "word",
    ["$X", "${X}", "${X:-a}", "${X-a}", "${X:+a}", "${X?a}", "${X#a}", "${X%%a}"]
    + ["${X/a/b}", "${X//a/b}", "${X:x}"],
)
def test_skip_unset_env_keeps_unset_references(word: str) -> None:
    lex = ShellLex(skip_unset_env=True)
    assert lex.process_word(word, {}) == word
    assert lex.process_word_with_matches(word, {}).unmatched == {"X"}


def test_skip_unset_env_expands_what_is_set() -> None:
    lex = ShellLex(skip_unset_env=True)
    assert lex.process_word("${X:-$V}-$V-${V%e}", {"V": "value"}) == "${X:-value}-value-valu"


def test_lex_is_an_immutable_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LEX.raw_quotes = True  # type: ignore[misc]
    raw = dataclasses.replace(LEX, raw_quotes=True)
    assert raw.process_word("'a'", {}) == "'a'" and LEX.process_word("'a'", {}) == "a"
    assert ShellLex() == LEX and hash(ShellLex()) == hash(LEX)


def test_any_mapping_works_as_the_environment() -> None:
    class Env(Mapping[str, str]):
        def __getitem__(self, key: str) -> str:
            if key.startswith("V"):
                return key.lower()
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def __len__(self) -> int:
            return 0

    assert LEX.process_word("$VA-$VB-$X", Env()) == "va-vb-"
    assert LEX.process_word("$A", MappingProxyType({"A": "a"})) == "a"


def test_one_lex_serves_many_threads() -> None:
    results: dict[int, str] = {}

    def work(number: int) -> None:
        text = ""
        for _ in range(200):
            text = LEX.process_word("${N:-none}-${M:+m}", {"N": str(number)})
        results[number] = text

    threads = [threading.Thread(target=work, args=(number,)) for number in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {number: f"{number}-" for number in range(8)}


# -- names, Unicode, the scanner ----------------------------------------------


def test_unicode_names_and_digits() -> None:
    # Letters and decimal digits of any script make names; a name starting
    # with a digit ('٣' is ARABIC-INDIC DIGIT THREE) is positional.
    result = LEX.process_word_with_matches("$이름x-${名}-$٣x", {"名": "n"})
    assert result.result == "-n-x"
    assert result.matched == {"名"} and result.unmatched == {"이름x", "٣"}
    # '²' is a number but not a decimal digit, so it ends the name.
    assert expansion_error("${ab²}").message.endswith("unsupported modifier (²) in substitution")


def test_special_parameters_are_looked_up_and_unset() -> None:
    result = LEX.process_word_with_matches("$$|$1|${#}|$@", {})
    assert result.result == "|||"
    assert result.unmatched == {"$", "1", "#", "@"}


def test_a_leading_byte_order_mark_is_dropped_as_go_does() -> None:
    # BuildKit reads the word with Go's text/scanner, which skips a BOM at the start.
    assert LEX.process_word("\ufeff$X", {"X": "x"}) == "x"
    assert LEX.process_word("\ufeffplain", {}) == "plain"
    assert LEX.process_word("a\ufeff", {}) == "a\ufeff"


# -- word splitting ------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "words"),
    [
        ("a${X:-b}c", ["abc"]),  # BuildKit itself would give ["bc"] (a shared buffer)
        ('${X:-"a b"}', ["a", "b"]),  # an expansion is split even if quoted inside
        ('"${X:-a b}"', ["a b"]),
        ('""', []),
        ('"" x', ["x"]),
        ('a "" b', ["a", "b"]),
        ("a\u00a0b", ["a", "b"]),  # Go's unicode.IsSpace
        ("a\x1cb", ["a\x1cb"]),  # Python's isspace, not Go's
        ("a\\ b c", ["a b", "c"]),
        ("  lead  trail  ", ["lead", "trail"]),
    ],
)
def test_words(word: str, words: list[str]) -> None:
    assert LEX.process_words(word, {}) == words
    assert LEX.process_word_with_matches(word, {}).words == tuple(words)


def test_words_of_a_value_with_spaces() -> None:
    env = {"PORTS": " 80/tcp  443 "}
    assert LEX.process_words("$PORTS 8080", env) == ["80/tcp", "443", "8080"]
    assert LEX.process_words('"$PORTS"', env) == [" 80/tcp  443 "]


# -- patterns and substitution --------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("${F%.*}", "archive.tar"),
        ("${F%%.*}", "archive"),
        ("${F#*.}", "tar.gz"),
        ("${F##*.}", "gz"),
        ("${F#nomatch}", "archive.tar.gz"),
        ("${F%?z}", "archive.tar."),
        ("${K%어}", "한국"),
        ("${K#?}", "국어"),
        ("${U#*}", ""),
        ("${F/./-}", "archive-tar.gz"),
        ("${F//./-}", "archive-tar-gz"),
        ("${F//a?/_}", "_chive.t_.gz"),
        ("${F/%/x}", "archive.tar.gz"),  # no anchors: % is a plain character
        ("${P//:/ }", "/usr/bin /bin"),
    ],
)
def test_trim_and_replace(word: str, expected: str) -> None:
    env = {"F": "archive.tar.gz", "K": "한국어", "P": "/usr/bin:/bin"}
    assert LEX.process_word(word, env) == expected


def test_replace_all_expands_dollar_zero_like_go() -> None:
    # BuildKit uses Go's ReplaceAllString, which expands $0 (the match) and $$
    # in the replacement; the first-match form splices the text as it is.
    env = {"FOO": "foo", "R": "[$0$$]"}
    assert LEX.process_word("${FOO//o/\\$0}", env) == "f\\o\\o"
    assert LEX.process_word("${FOO/o/\\$0}", env) == "f\\$0o"
    assert LEX.process_word("${FOO//o/$R}", env) == "f[o$][o$]"


def test_replace_all_with_patterns_that_match_empty() -> None:
    assert LEX.process_word("${V//*/x}", {"V": "ab"}) == "x"
    assert LEX.process_word("${V//*/x}", {"V": "ab\ncd"}) == "x\nx"
    assert LEX.process_word("${V//$E/-}", {"V": "ab", "E": ""}) == "-a-b-"
    assert LEX.process_word("${V/$E/-}", {"V": "ab", "E": ""}) == "-ab"


# -- depth and size -------------------------------------------------------------


def _nested_defaults(depth: int, leaf: str = "leaf") -> str:
    return "".join(f"${{v{level}:-" for level in range(depth)) + leaf + "}" * depth


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_deep_nesting_expands_without_recursion(depth: int) -> None:
    result = LEX.process_word_with_matches(_nested_defaults(depth), {})
    assert result.result == "leaf"
    assert len(result.unmatched) == depth


def test_deep_nesting_works_near_the_recursion_limit() -> None:
    word = _nested_defaults(1000)
    depth_left = sys.getrecursionlimit() - 60

    def descend(levels: int) -> str:
        if levels <= 0:
            return LEX.process_word(word, {"v999": "set"})
        return descend(levels - 1)

    frames = 0
    frame = sys._getframe()
    while frame is not None:
        frames += 1
        frame = frame.f_back
    assert descend(depth_left - frames) == "set"


def test_deep_nesting_errors_are_expansion_errors() -> None:
    unterminated = _nested_defaults(1000)[:-1]
    assert expansion_error(unterminated).message.endswith("syntax error: missing '}'")
    required = "".join(f"${{v{level}:-" for level in range(1000)) + "${need:?}" + "}" * 1000
    assert expansion_error(required).message.endswith("need: is not allowed to be unset")


def test_deeply_nested_quotes() -> None:
    word = '"${a:-' * 1000 + "x" + '}"' * 1000
    assert LEX.process_word(word, {}) == "x"


def test_a_large_plain_word_comes_back_whole() -> None:
    word = "abcdefg " * (MiB // 8)
    assert LEX.process_word(word, {}) == word
    assert LEX.process_words(word, {}) == ["abcdefg"] * (MiB // 8)


def test_a_large_word_with_references() -> None:
    repeats = MiB // len("x$V ${W:-d} ")
    result = LEX.process_word_with_matches("x$V ${W:-d} " * repeats, {"V": "value"})
    assert result.result == "xvalue d " * repeats
    assert len(result.words) == 2 * repeats
    assert result.matched == {"V"} and result.unmatched == {"W"}


def test_a_large_word_of_escapes_and_quotes() -> None:
    assert LEX.process_word("\\a" * (MiB // 2), {}) == "a" * (MiB // 2)
    assert LEX.process_word('"' + "\\$" * (MiB // 2) + '"', {}) == "$" * (MiB // 2)


def test_a_large_value_through_patterns() -> None:
    value = "ab" * (MiB // 2)
    env = {"V": value}
    assert LEX.process_word("${V##*a}", env) == "b"
    assert LEX.process_word("${V//*x/y}", env) == value  # no x: no match, found quickly
    assert LEX.process_word("${V//b/}", env) == "a" * (MiB // 2)


def test_memory_stays_proportional_to_the_word() -> None:
    word = "ab $V cd ${W:-e} " * (MiB // 17)
    tracemalloc.start()
    try:
        LEX.process_words(word, {"V": "v"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 48 * MiB
