"""BuildKit's parser conformance files, read from ../shared/conformance (not copied)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pybuild.cli.main import main
from pybuild.grammar import parse_ast
from pybuild.grammar._heredoc import chomp_content, markers_in_line, parse_marker
from pybuild.errors import DockerfileSyntaxError

from .._peers import conformance_cases, require_conformance

def _names(directory: str) -> list[str]:
    return conformance_cases("buildkit-parser", lambda parser: sorted(p.name for p in (parser / directory).iterdir()))


def _heredoc_cases(*keys: str, width: int = 1) -> list[Any]:
    """A list in expected-heredocs.json, found by its keys."""

    def read(parser: Path) -> list[Any]:
        table = json.loads((parser / "heredoc" / "expected-heredocs.json").read_text())
        for key in keys:
            table = table[key]
        return table

    return conformance_cases("buildkit-parser", read, width)


CASES = _names("testfiles")
NEGATIVE = _names("testfiles-negative")


@pytest.fixture
def parser() -> Path:
    return require_conformance("buildkit-parser")


@pytest.fixture
def heredoc(parser: Path) -> Any:
    return json.loads((parser / "heredoc" / "expected-heredocs.json").read_text())


def test_the_conformance_files_are_there(parser: Path) -> None:
    assert len(CASES) == 33 and len(NEGATIVE) == 4


@pytest.mark.parametrize("case", CASES)
def test_dump_matches_buildkit(case: str, parser: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    directory = parser / "testfiles" / case
    assert main(["parse", "--dump", "-f", str(directory / "Dockerfile")]) == 0
    out = capsysbinary.readouterr().out
    assert out == (directory / "result").read_bytes()


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_cases_are_rejected(case: str, parser: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = parser / "testfiles-negative" / case / "Dockerfile"
    assert main(["parse", "--dump", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:")
    assert "Traceback" not in err


def test_line_numbers(parser: Path) -> None:
    ast = parse_ast((parser / "testfile-line" / "Dockerfile").read_bytes())
    spans = [(node.span.start, node.span.end) for node in ast.nodes]
    assert spans == [(5, 5), (11, 12), (17, 31)]
    assert spans[0][0] == 5 and spans[-1][1] == 31


def _heredoc_dicts(node):  # type: ignore[no-untyped-def]
    if not node.heredocs:
        return None
    return [
        {"Name": h.name, "FileDescriptor": h.file_descriptor, "Expand": h.expand, "Chomp": h.chomp, "Content": h.content}
        for h in node.heredocs
    ]


def test_heredocs_extracted_per_instruction(parser: Path, heredoc: Any) -> None:
    ast = parse_ast((parser / "heredoc" / "Dockerfile").read_bytes())
    expected = heredoc["children_heredocs"]
    assert len(ast.nodes) == len(expected) + 1
    for node, want in zip(ast.nodes[1:], expected, strict=True):
        assert _heredoc_dicts(node) == want, node.original


@pytest.mark.parametrize("word", _heredoc_cases("parse_heredoc_word", "valid_name_EOF"))
def test_heredoc_word_valid(word: str) -> None:
    marker = parse_marker(word)
    assert marker is not None and marker.name == "EOF"


@pytest.mark.parametrize("word", _heredoc_cases("parse_heredoc_word", "invalid_error"))
def test_heredoc_word_invalid(word: str) -> None:
    with pytest.raises(ValueError):
        parse_marker(word)


@pytest.mark.parametrize("word", _heredoc_cases("parse_heredoc_word", "not_heredoc"))
def test_heredoc_word_not_a_heredoc(word: str) -> None:
    assert parse_marker(word) is None


@pytest.mark.parametrize(("line", "names"), _heredoc_cases("heredocs_from_line", "cases", width=2))
def test_heredocs_from_line(line: str, names: list[str]) -> None:
    assert [m.name for m in markers_in_line(line)] == names


@pytest.mark.parametrize("line", _heredoc_cases("json_form_no_heredoc", "lines"))
def test_json_form_never_has_heredocs(line: str) -> None:
    ast = parse_ast(f"FROM scratch\n{line}\nEOF\n")
    assert ast.nodes[1].heredocs == ()
    assert ast.nodes[1].json


def test_chomp(heredoc: Any) -> None:
    assert chomp_content(heredoc["chomp"]["input"]) == heredoc["chomp"]["output"]


def test_unknown_instruction_dumps_as_empty_argument() -> None:
    ast = parse_ast("FROM x\nFOO bar baz\n")
    assert ast.nodes[1].keyword == "foo" and ast.nodes[1].args == ("",)


def test_unterminated_heredoc_names_its_line() -> None:
    with pytest.raises(DockerfileSyntaxError) as caught:
        parse_ast("FROM x\nRUN <<EOF\necho hi\n", "Dockerfile")
    assert caught.value.location is not None and caught.value.location.start_line == 2
    assert "unterminated heredoc" in str(caught.value)
