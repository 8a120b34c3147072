"""Properties of ShellLex that hold for every input (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pybuild.errors import ExpansionError
from pybuild.grammar._shell import ShellLex
from pybuild.grammar._words import GO_SPACE

BACKSLASH = ShellLex("\\")
BACKTICK = ShellLex("`")
GO_SPACE_RUN = re.compile("[" + re.escape(GO_SPACE) + "]+")
NAMES = ("a", "b", "AB_1")

envs = st.dictionaries(st.sampled_from(NAMES), st.text(alphabet="xy $'\"\\`{}:- \t", max_size=6), max_size=3)

# Pieces that make the expansion machinery work: references, modifiers,
# quotes, escapes (no #, % or /: patterns always escape with a backslash).
SHELL_PIECES = st.sampled_from(
    ["a", "x", " ", "\t", "$", "{", "}", ":", "-", "+", "?", "'", '"', "\\", "`"]
    + ["$a", "${a}", "${b:-", "${a-", "${AB_1:+", "${b?", "${a:?", "$1", "$$", '"${a}"']
)
shell_words = st.lists(SHELL_PIECES, max_size=14).map("".join)

SPECIALS = "$'\"\\"
plain_words = st.text(st.characters(blacklist_characters=SPECIALS, blacklist_categories=("Cs",)))


def expand_or_error(lex: ShellLex, word: str, env: dict[str, str]) -> str | None:
    try:
        return lex.process_word(word, env)
    except ExpansionError:
        return None


@given(word=plain_words, env=envs)
def test_a_word_without_specials_expands_to_itself(word: str, env: dict[str, str]) -> None:
    assume(not word.startswith("\ufeff"))  # Go's scanner drops a leading BOM
    assert BACKSLASH.process_word(word, env) == word
    result = BACKSLASH.process_word_with_matches(word, env)
    assert result.result == word and not result.matched and not result.unmatched


@given(inner=st.text(st.characters(blacklist_characters="'", blacklist_categories=("Cs",))), env=envs)
def test_single_quotes_keep_everything(inner: str, env: dict[str, str]) -> None:
    assert BACKSLASH.process_word(f"'{inner}'", env) == inner
    assert BACKTICK.process_word(f"'{inner}'", env) == inner
    assert BACKSLASH.process_words(f"'{inner}'", env) == ([inner] if inner else [])


SWAP = str.maketrans({"\\": "`", "`": "\\"})


@settings(max_examples=400)
@given(word=shell_words, env=envs)
def test_backtick_mode_mirrors_backslash_mode(word: str, env: dict[str, str]) -> None:
    swapped_env = {name: value.translate(SWAP) for name, value in env.items()}
    expected = expand_or_error(BACKSLASH, word, env)
    mirrored = expand_or_error(BACKTICK, word.translate(SWAP), swapped_env)
    assert mirrored == (None if expected is None else expected.translate(SWAP))


@settings(max_examples=400)
@given(word=shell_words | st.text(), env=envs)
def test_any_input_gives_a_result_or_an_expansion_error(word: str, env: dict[str, str]) -> None:
    for lex in (BACKSLASH, BACKTICK, ShellLex(raw_quotes=True, raw_escapes=True, skip_unset_env=True)):
        try:
            result = lex.process_word_with_matches(word, env)
        except ExpansionError as error:
            assert error.message.startswith("failed to process ")
            assert "\n" not in str(error)
            continue
        assert result.result == lex.process_word(word, env)
        assert list(result.words) == lex.process_words(word, env)
        assert result.matched <= env.keys()
        assert not result.unmatched & env.keys()


@settings(max_examples=400)
@given(word=shell_words, env=envs)
def test_without_quotes_or_escapes_words_are_the_result_split(word: str, env: dict[str, str]) -> None:
    assume(not any(char in word for char in "'\"\\`"))
    try:
        result = BACKSLASH.process_word_with_matches(word, env)
    except ExpansionError:
        return
    assert list(result.words) == [part for part in GO_SPACE_RUN.split(result.result) if part]


@given(name=st.sampled_from(NAMES), value=st.text(max_size=8), default=st.text(alphabet="xyz", max_size=4))
def test_default_and_alternative_forms(name: str, value: str, default: str) -> None:
    env = {name: value}
    assert BACKSLASH.process_word(f"${{{name}-{default}}}", env) == value
    assert BACKSLASH.process_word(f"${{{name}:-{default}}}", env) == (value or default)
    assert BACKSLASH.process_word(f"${{{name}+{default}}}", env) == default
    assert BACKSLASH.process_word(f"${{{name}:+{default}}}", env) == (default if value else "")
    assert BACKSLASH.process_word(f"${{{name}-{default}}}", {}) == default
    assert BACKSLASH.process_word(f"${{{name}+{default}}}", {}) == ""
