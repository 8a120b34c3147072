"""BuildKit's shell-word conformance tables, read from ../shared/conformance (not copied).

The files and the way BuildKit's ``lex_test.go`` reads them are described in
``buildkit-shell/README.md``; each table row is its own test here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pybuild.errors import ExpansionError
from pybuild.grammar._shell import ShellLex, WordResult
from pybuild.grammar._words import GO_SPACE

from .._peers import conformance_cases, require_conformance

ENV_VAR_TEST_ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}


def _go_lines(path: Path) -> list[tuple[int, str]]:
    """Lines as Go's bufio.Scanner yields them: split on \\n, a trailing \\r dropped."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [(number, line.removesuffix("\r")) for number, line in enumerate(lines, start=1)]


def _env_var_cases(shell: Path) -> list[Any]:
    cases = []
    for number, line in _go_lines(shell / "envVarTest"):
        if line.startswith("#"):
            continue
        line = line.strip(GO_SPACE)
        if not line:
            continue
        fields = line.split("|")
        assert len(fields) == 3, f"envVarTest:{number}: {line!r}"
        platform, source, expected = (field.strip(GO_SPACE) for field in fields)
        assert platform in ("A", "U", "W"), f"envVarTest:{number}: platform {platform!r}"
        if platform == "W":
            continue  # Windows only: names there are case-insensitive
        cases.append(pytest.param(source, expected, id=f"line{number}:{source}"))
    return cases


def _words_cases(shell: Path) -> list[Any]:
    cases = []
    env: dict[str, str] = {}
    for number, line in _go_lines(shell / "wordsTest"):
        if line.startswith("#"):
            continue
        if line.startswith("ENV "):
            name, _, value = line[3:].lstrip(" ").partition("=")
            env[name] = value
            continue
        fields = line.split("|")
        assert len(fields) == 2, f"wordsTest:{number}: {line!r}"
        source = fields[0].strip(GO_SPACE)
        expected = fields[1].lstrip(" ").split(",")
        cases.append(pytest.param(source, dict(env), expected, id=f"line{number}:{source}"))
    return cases


def _matches(shell: Path) -> Any:
    return json.loads((shell / "process-with-matches.json").read_text(encoding="utf-8"))


def _json_cases(*keys: str) -> list[Any]:
    """The cases of process-with-matches.json under `keys`, one parameter each."""

    def read(shell: Path) -> list[Any]:
        cases = _matches(shell)
        for key in keys:
            cases = cases[key]
        return [pytest.param(case, id=f"{index}:{case['input']}") for index, case in enumerate(cases)]

    return conformance_cases("buildkit-shell", read)


ENV_VAR_CASES = conformance_cases("buildkit-shell", _env_var_cases, width=2)
WORDS_CASES = conformance_cases("buildkit-shell", _words_cases, width=3)


def test_the_conformance_files_are_there() -> None:
    matches = _matches(require_conformance("buildkit-shell"))
    # 226 lines for all platforms and 2 for non-Windows ones (README.md).
    assert len(ENV_VAR_CASES) == 228
    assert len(WORDS_CASES) > 20
    assert len(matches["cases"]) == 47
    assert len(matches["platform_cases"]) == 3
    assert len(matches["mandatory_env_cases"]["cases"]) == 6


@pytest.mark.parametrize(("source", "expected"), ENV_VAR_CASES)
def test_env_var_table(source: str, expected: str) -> None:
    lex = ShellLex("\\")
    if expected == "error":
        with pytest.raises(ExpansionError):
            lex.process_word(source, ENV_VAR_TEST_ENV)
    else:
        assert lex.process_word(source, ENV_VAR_TEST_ENV) == expected


@pytest.mark.parametrize(("source", "env", "expected"), WORDS_CASES)
def test_words_table(source: str, env: dict[str, str], expected: list[str]) -> None:
    lex = ShellLex("\\")
    if expected == ["error"]:
        with pytest.raises(ExpansionError):
            lex.process_words(source, env)
    else:
        assert lex.process_words(source, env) == expected


@pytest.mark.parametrize("case", _json_cases("cases"))
def test_process_with_matches_table(case: dict[str, Any]) -> None:
    lex = ShellLex("\\")
    if case["expected_error"]:
        with pytest.raises(ExpansionError):
            lex.process_word_with_matches(case["input"], case["envs"])
        return
    result = lex.process_word_with_matches(case["input"], case["envs"])
    assert isinstance(result, WordResult)
    assert result.result == case["expected"]
    assert result.matched == frozenset(case["matches"])
    assert result.unmatched == frozenset(case["unmatched"])


_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


@pytest.mark.parametrize("case", _json_cases("platform_cases"))
def test_platform_table(case: dict[str, Any]) -> None:
    result = ShellLex("\\").process_word_with_matches(case["input"], case["envs"])
    assert result.result == case["expected"]
    # Every name the input mentions is looked up (the nested one of `:+` too,
    # since BuildKit scans the word before it looks at the variable).
    referenced = set(_REFERENCE.findall(case["input"]))
    assert result.matched == referenced & case["envs"].keys()
    assert result.unmatched == referenced - case["envs"].keys()


@pytest.mark.parametrize("case", _json_cases("mandatory_env_cases", "cases"))
def test_mandatory_env_table(case: dict[str, Any]) -> None:
    lex = ShellLex("\\")
    if "expected_error_contains" in case:
        with pytest.raises(ExpansionError) as caught:
            lex.process_word(case["input"], case["envs"])
        assert case["expected_error_contains"] in str(caught.value)
    else:
        assert lex.process_word(case["input"], case["envs"]) == case["expected"]
