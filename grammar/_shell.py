"""Shell-word expansion as BuildKit does it (``frontend/dockerfile/shell/lex.go``).

``ShellLex(escape).process_word(word, env)`` removes quotes and escapes and
expands ``$VAR``, ``${VAR}`` and the ``${VAR<modifier>...}`` forms BuildKit
supports; ``process_words`` also splits the result into words the way
``EXPOSE`` needs.  Which inputs fail, and with which message, follows BuildKit.

The scanner is one pass over the word by index; runs of ordinary characters
are copied as slices (found with one regex search per run), and parts are
collected in lists and joined once.  BuildKit's scanner is recursive
(``${a:-${b:-...}}``); here every recursive step is a generator driven by a
loop with an explicit stack, so nesting depth is limited by memory only,
never by Python's recursion limit.

Deliberate differences from BuildKit (each one a BuildKit bug or an unclear
message; see the tests):

- words: current BuildKit shares one word buffer between nesting levels, so
  a ``${VAR:-x}`` drops the text before it from the word being built
  (``a${X:-b}c`` -> ``["bc"]``, only EXPOSE sees it); here it is ``["abc"]``,
  as in BuildKit before that buffer was shared.
- with ``skip_unset_env``, ``${VAR//p/r}`` of an unset VAR is kept as
  written; BuildKit writes it back as ``${VAR/p/r}``.
- ``${VAR`` at the end of the word says "missing '}'" (BuildKit: "unsupported
  modifier (\\ufffd)"); an invalid suffix pattern is quoted as written, not
  reversed; a trailing backslash in a pattern says so.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping
from dataclasses import KW_ONLY, field
from typing import Union

from pybuild._frozen import frozen
from pybuild.errors import ExpansionError

from ._dump import go_quote
from ._scanner import MAX_INSTRUCTION_SIZE
from ._shell_glob import GlobError, GoTemplate, ResultTooLarge, parse_glob, reverse_pattern
from ._words import GO_SPACE

__all__ = ["ShellLex", "WordResult"]

_BOM = "\ufeff"  # Go's text/scanner skips one at the start of its input
_SPECIAL_PARAMETERS = frozenset("@*#?-$!0")
_ASCII_NAME = re.compile(r"[A-Za-z0-9_]*")
_DIGITS = re.compile(r"\d+")  # \d is Unicode Nd, as Go's unicode.IsDigit
_SPACE_RUN = re.compile("[" + re.escape(GO_SPACE) + "]+")
_QUOTED_WORD_LIMIT = 200  # longer words are abbreviated in error messages
# An expanded word may be as long as an instruction may be.  Without a limit
# a few short lines multiply: ENV B=$A$A$A... then ENV C=$B$B$B... reach
# gigabytes from a Dockerfile of kilobytes.
MAX_EXPANSION_SIZE = MAX_INSTRUCTION_SIZE

_MISSING_BRACE = "syntax error: missing '}'"
_SUPPORTED_FORMS = (
    "supported forms: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:+alternative}, "
    "${VAR+alternative}, ${VAR:?message}, ${VAR?message}, ${VAR#pattern}, ${VAR##pattern}, "
    "${VAR%pattern}, ${VAR%%pattern}, ${VAR/pattern/replacement}, ${VAR//pattern/replacement}"
)
_PATTERN_HINT = r"in a pattern only \*, \?, \\, \} and \/ are escapes"


@frozen
class WordResult:
    """One expanded word: the text, its split into words, and the names looked up."""

    result: str
    words: tuple[str, ...]
    matched: frozenset[str]  # names looked up that were set
    unmatched: frozenset[str]  # names looked up that were not set


class _Failure(Exception):
    """An expansion error before the word is known to the message."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def _unsupported(modifier: str) -> _Failure:
    if modifier in ("=", ":="):
        return _Failure(
            f"unsupported modifier ({modifier}) in substitution",
            "a Dockerfile cannot assign with ${VAR=word} or ${VAR:=word}; "
            "use ${VAR:-word}, or give the ARG a default",
        )
    return _Failure(f"unsupported modifier ({modifier}) in substitution", _SUPPORTED_FORMS)


@frozen
class ShellLex:
    """BuildKit's ``shell.Lex``: expands one word with a given environment.

    ``escape`` is the Dockerfile's escape character (``\\`` or a backtick).
    ``raw_quotes`` keeps quote characters in the result, ``raw_escapes`` keeps
    escape characters, ``skip_process_quotes`` treats quotes as ordinary
    characters, and ``skip_unset_env`` leaves references to unset variables
    as written instead of expanding them to "".  A ``ShellLex`` is immutable
    and may be shared between threads.
    """

    escape: str = "\\"
    _: KW_ONLY
    raw_quotes: bool = False
    raw_escapes: bool = False
    skip_process_quotes: bool = False
    skip_unset_env: bool = False
    # Characters that stop a run of ordinary text, per stop character.
    _stoppers: dict[str | None, re.Pattern[str]] = field(init=False, repr=False, compare=False)
    _quote_stoppers: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.escape, str) or len(self.escape) != 1:
            raise ValueError(f"the escape token must be one character, not {self.escape!r}")
        specials = "$" + self.escape + ("" if self.skip_process_quotes else "'\"")
        stoppers = {stop: _char_class(specials + (stop or "")) for stop in (None, "}", "/")}
        object.__setattr__(self, "_stoppers", stoppers)
        object.__setattr__(self, "_quote_stoppers", _char_class('"$' + self.escape))

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """Expand ``word``: quotes and escapes removed, variables substituted."""
        return self._expand(word, env, want_words=False)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """Expand ``word`` and split it at unquoted whitespace (BuildKit's EXPOSE)."""
        return list(self._expand(word, env, want_words=True)[1])

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> WordResult:
        """Expand ``word`` and report which variable names were looked up."""
        result, words, matched, unmatched = self._expand(word, env, want_words=True)
        return WordResult(result, words, frozenset(matched), frozenset(unmatched))

    def _expand(
        self, word: str, env: Mapping[str, str], *, want_words: bool
    ) -> tuple[str, tuple[str, ...], set[str], set[str]]:
        if self._stoppers[None].search(word) is None and not word.startswith(_BOM):
            # Nothing to expand (the common case for most instruction words).
            return word, (_split_words([word], [True]) if want_words else ()), set(), set()
        state = _Expansion(self, word, env)
        kinds: list[bool] | None = [] if want_words else None
        parts: list[str] = []
        try:
            result = _drive(state.stop_on(None, self.raw_escapes, parts, kinds))
        except _Failure as caught:
            failure = caught
        else:
            words = _split_words(parts, kinds) if kinds is not None else ()
            return result, words, state.matched, state.unmatched
        # Raised outside the handler, so that the internal failure (and the
        # frames in its traceback) is not kept as the error's context.
        raise ExpansionError(f"failed to process {_quote_word(word)}: {failure.message}", hint=failure.hint)


def _char_class(chars: str) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(char) for char in dict.fromkeys(chars)) + "]")


def _quote_word(word: str) -> str:
    if len(word) <= _QUOTED_WORD_LIMIT:
        return go_quote(word)
    return go_quote(word[:_QUOTED_WORD_LIMIT]) + f"... ({len(word)} characters)"


def _split_words(parts: list[str], kinds: list[bool]) -> tuple[str, ...]:
    """BuildKit's word splitting of an expanded word.

    ``kinds[i]`` tells whether ``parts[i]`` is split at whitespace (ordinary
    characters and ``$`` expansions) or kept whole (quoted text, escaped
    characters).  A whitespace run ends the current word if it has text.
    """
    words: list[str] = []
    current: list[str] = []
    for text, split in zip(parts, kinds):
        if not text:
            continue
        if not split or _SPACE_RUN.search(text) is None:
            current.append(text)
            continue
        first, *rest = _SPACE_RUN.split(text)
        if first:
            current.append(first)
        for piece in rest:
            if current:
                words.append("".join(current))
                current = []
            if piece:
                current.append(piece)
    if current:
        words.append("".join(current))
    return tuple(words)


# A step of the scanner either finishes at once (a str) or must scan nested
# text first: then it is a generator that yields the nested steps it needs and
# returns its text.
_Step = Generator["_Step", str, str]
_Value = Union[str, _Step]


def _drive(root: _Step) -> str:
    """Run ``root`` and the steps it yields with an explicit stack (no recursion)."""
    stack: list[_Step] = []
    current = root
    sent: str | None = None
    failure: _Failure | None = None
    try:
        while True:
            try:
                if failure is None:
                    nested = current.send(sent)  # type: ignore[arg-type]  # None starts a generator, as send() requires
                else:
                    thrown, failure = failure, None
                    nested = current.throw(thrown)
            except StopIteration as done:
                if not stack:
                    result: str = done.value
                    return result
                current = stack.pop()
                sent = done.value
                continue
            except _Failure as raised:
                if not stack:
                    raise
                current = stack.pop()
                failure = raised
                continue
            stack.append(current)
            current = nested
            sent = None
    finally:
        # Close from the innermost step out, so that no generator is left to
        # be finalised through a long chain of its parents.
        current.close()
        while stack:
            stack.pop().close()


class _Expansion:
    """The state of expanding one word: position, environment, names looked up."""

    __slots__ = ("lex", "text", "size", "pos", "env", "matched", "unmatched", "budget")

    def __init__(self, lex: ShellLex, text: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.text = text
        self.size = len(text)
        self.pos = 1 if text.startswith(_BOM) else 0
        self.env = env
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()
        # What variable values may still add to the word: the result is never
        # longer than the word plus the values looked up (and the growth of a
        # ${VAR//p/r}, charged where it is made).
        self.budget = MAX_EXPANSION_SIZE - len(text)

    def at_end(self) -> bool:
        return self.pos >= self.size

    def lookup(self, name: str) -> str | None:
        try:
            value = self.env[name]
        except KeyError:
            self.unmatched.add(name)
            return None
        self.matched.add(name)
        self.charge(len(value))
        return value

    def charge(self, size: int) -> None:
        self.budget -= size
        if self.budget < 0:
            raise self.too_large()

    def too_large(self) -> _Failure:
        return _Failure(
            f"the expanded word is longer than the {MAX_EXPANSION_SIZE // (1024 * 1024)} MiB limit",
            "a variable's value is repeated too many times",
        )

    # -- words and quotes --

    def stop_on(
        self,
        stop: str | None,
        raw_escapes: bool,
        parts: list[str] | None = None,
        kinds: list[bool] | None = None,
    ) -> _Step:
        """Scan up to ``stop`` (consumed), or to the end of the word if ``stop`` is None.

        BuildKit's ``processStopOn``.  ``kinds``, when given, records for each
        part whether word splitting applies to it.
        """
        text = self.text
        size = self.size
        lex = self.lex
        escape = lex.escape
        stoppers = lex._stoppers[stop]
        if parts is None:
            parts = []
        while True:
            pos = self.pos
            found = stoppers.search(text, pos)
            special = size if found is None else found.start()
            if special > pos:
                parts.append(text[pos:special])
                if kinds is not None:
                    kinds.append(True)
            if found is None:
                self.pos = size
                break
            char = text[special]
            self.pos = special
            if char == stop:
                self.pos = special + 1
                return "".join(parts)
            if char == "$":
                value = self.dollar()
                if value.__class__ is not str:
                    value = yield value  # type: ignore[misc]  # a step yields its nested steps and is sent their text (see _Step)
                split = True
            elif char == "'" and not lex.skip_process_quotes:
                value = self.single_quote()
                split = False
            elif char == '"' and not lex.skip_process_quotes:
                value = yield self.double_quote(raw_escapes)
                split = False
            else:  # the escape character
                if raw_escapes:
                    parts.append(escape)
                    if kinds is not None:
                        kinds.append(False)
                if special + 1 >= size:
                    self.pos = size  # an escape at the very end is dropped
                    break
                value = text[special + 1]
                self.pos = special + 2
                split = False
            parts.append(value)
            if kinds is not None:
                kinds.append(split)
        if stop is not None:
            raise _Failure(f"unexpected end of statement while looking for matching {stop}")
        return "".join(parts)

    def single_quote(self) -> str:
        """Everything up to the next single quote is literal (no escapes)."""
        start = self.pos
        end = self.text.find("'", start + 1)
        if end < 0:
            self.pos = self.size
            raise _Failure(
                "unexpected end of statement while looking for matching single-quote",
                "close the quote",
            )
        self.pos = end + 1
        return self.text[start : end + 1] if self.lex.raw_quotes else self.text[start + 1 : end]

    def double_quote(self, raw_escapes: bool) -> _Step:
        """Up to the next unescaped ``"``: ``$`` expands; the escape character
        escapes only ``"``, ``$`` and itself and is kept before anything else."""
        text = self.text
        size = self.size
        lex = self.lex
        escape = lex.escape
        stoppers = lex._quote_stoppers
        parts: list[str] = ['"'] if lex.raw_quotes else []
        pos = self.pos + 1
        while True:
            found = stoppers.search(text, pos)
            if found is None:
                self.pos = size
                raise _Failure(
                    "unexpected end of statement while looking for matching double-quote",
                    "close the quote",
                )
            special = found.start()
            if special > pos:
                parts.append(text[pos:special])
            char = text[special]
            if char == '"':
                self.pos = special + 1
                if lex.raw_quotes:
                    parts.append('"')
                return "".join(parts)
            if char == "$":
                self.pos = special
                value = self.dollar()
                if value.__class__ is not str:
                    value = yield value  # type: ignore[misc]  # a step yields its nested steps and is sent their text (see _Step)
                parts.append(value)
                pos = self.pos
                continue
            # The escape character.
            if raw_escapes:
                parts.append(escape)
            pos = special + 1
            if pos < size and text[pos] in ('"', "$", escape):
                parts.append(text[pos])
                pos += 1
            elif pos < size:
                parts.append(escape)

    # -- $ expansions --

    def dollar(self) -> _Value:
        """Expand the ``$...`` at ``pos``: a string, or a step for the ``${...}`` forms
        that contain nested text."""
        text = self.text
        size = self.size
        pos = self.pos + 1
        self.pos = pos
        if pos >= size or text[pos] != "{":
            name = self.name()
            if not name:
                return "$"
            value = self.lookup(name)
            if value is None:
                return "$" + name if self.lex.skip_unset_env else ""
            return value
        pos += 1
        self.pos = pos
        if pos >= size:
            raise _Failure(_MISSING_BRACE)
        if text[pos] in "{}:":
            raise _Failure(
                "syntax error: bad substitution",
                f"a variable name must follow '${{'; write a literal $ as {self.lex.escape}$",
            )
        name = self.name()
        pos = self.pos
        if pos >= size:
            raise _Failure(_MISSING_BRACE)
        modifier = text[pos]
        self.pos = pos + 1
        if modifier == "}":
            value = self.lookup(name)
            if value is None:
                return "${" + name + "}" if self.lex.skip_unset_env else ""
            return value
        if modifier == "/":
            return self.replace(name)
        if modifier == ":" or modifier in "+-?#%":
            return self.modify(name, modifier)
        raise _unsupported(modifier)

    def name(self) -> str:
        """A variable name at ``pos`` (BuildKit's ``processName``): a run of digits,
        one special parameter character, or a letter or ``_`` then letters,
        digits and ``_`` (Unicode letters and decimal digits count)."""
        text = self.text
        start = self.pos
        if start >= self.size:
            return ""
        first = text[start]
        if first.isdecimal():
            end = _DIGITS.match(text, start).end()  # type: ignore[union-attr]  # the character there is a digit: it matches
        elif first in _SPECIAL_PARAMETERS:
            end = start + 1
        else:
            end = _ASCII_NAME.match(text, start).end()  # type: ignore[union-attr]  # the pattern matches the empty string: never None
            size = self.size
            while end < size:
                char = text[end]
                if char.isascii() or not (char.isalpha() or char.isdecimal()):
                    break
                end = _ASCII_NAME.match(text, end + 1).end()  # type: ignore[union-attr]  # the pattern matches the empty string: never None
        self.pos = end
        return text[start:end]

    def modify(self, name: str, modifier: str) -> _Step:
        """``${NAME:-w}``, ``${NAME-w}``, ``:+``/``+``, ``:?``/``?``, ``#``/``##``, ``%``/``%%``."""
        written = modifier
        null_is_unset = False
        if modifier == ":":
            null_is_unset = True
            if self.at_end():
                raise _Failure(_MISSING_BRACE)
            modifier = self.text[self.pos]
            self.pos += 1
            written += modifier
        is_pattern = modifier == "#" or modifier == "%"
        if null_is_unset and is_pattern:
            raise _unsupported(written)
        try:
            word = yield self.stop_on("}", is_pattern)
        except _Failure as failure:
            if self.at_end():
                failure.message, failure.hint = _MISSING_BRACE, None
            raise
        value = self.lookup(name)
        if value is None and self.lex.skip_unset_env:
            return "${" + name + written + word + "}"
        if modifier == "-":
            return word if value is None or (null_is_unset and not value) else value
        if modifier == "+":
            return "" if value is None or (null_is_unset and not value) else word
        if modifier == "?":
            if value is None:
                raise _Failure(f"{name}: {word or 'is not allowed to be unset'}", _set_hint(name))
            if null_is_unset and not value:
                raise _Failure(f"{name}: {word or 'is not allowed to be empty'}", _set_hint(name))
            return value
        if is_pattern:
            return _trim(modifier, word, value or "")
        raise _unsupported(written)

    def replace(self, name: str) -> _Step:
        """``${NAME/pattern/replacement}`` and ``${NAME//pattern/replacement}``."""
        replace_all = not self.at_end() and self.text[self.pos] == "/"
        if replace_all:
            self.pos += 1
        try:
            pattern = yield self.stop_on("/", True)
        except _Failure as failure:
            if self.at_end():
                failure.message = "syntax error: missing '/' in ${}"
                failure.hint = "the form is ${VAR/pattern/replacement}"
            raise
        try:
            replacement = yield self.stop_on("}", True)
        except _Failure as failure:
            if self.at_end():
                failure.message, failure.hint = _MISSING_BRACE, None
            raise
        value = self.lookup(name)
        if value is None:
            if self.lex.skip_unset_env:
                slashes = "//" if replace_all else "/"
                return "${" + name + slashes + pattern + "/" + replacement + "}"
            value = ""
        try:
            glob = parse_glob(pattern)
        except GlobError as error:
            raise _Failure(
                f"invalid pattern ({pattern}) in substitution: {error}", _PATTERN_HINT
            ) from None
        if not replace_all:
            self.charge(len(replacement))
            return glob.replace_first(value, replacement)
        try:
            result = glob.replace_all(value, GoTemplate.parse(replacement), limit=len(value) + max(self.budget, 0))
        except ResultTooLarge:
            raise self.too_large() from None
        self.charge(len(result) - len(value))
        return result


def _set_hint(name: str) -> str:
    return f"set {name} with an ARG or ENV instruction, or pass --build-arg {name}=..."


def _trim(modifier: str, word: str, value: str) -> str:
    """``#``/``##`` remove the shortest/longest matching prefix, ``%``/``%%`` the suffix."""
    greedy = word.startswith(modifier)
    if greedy:
        word = word[1:]
    suffix = modifier == "%"
    try:
        glob = parse_glob(reverse_pattern(word) if suffix else word)
    except GlobError as error:
        raise _Failure(f"invalid pattern ({word}) in substitution: {error}", _PATTERN_HINT) from None
    subject = value[::-1] if suffix else value
    end = glob.prefix_end(subject, greedy=greedy)
    if end is not None:
        subject = subject[end:]
    return subject[::-1] if suffix else subject
