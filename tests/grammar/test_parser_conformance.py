"""BuildKit's parser conformance files, read from ../shared/conformance (not copied)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.cli.main import main
from pybuild.grammar import parse_ast
from pybuild.grammar._heredoc import chomp_content, markers_in_line, parse_marker
from pybuild.errors import DockerfileSyntaxError

PARSER = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "buildkit-parser"
CASES = sorted(p.name for p in (PARSER / "testfiles").iterdir())
NEGATIVE = sorted(p.name for p in (PARSER / "testfiles-negative").iterdir())
HEREDOC = json.loads((PARSER / "heredoc" / "expected-heredocs.json").read_text())


def test_the_conformance_files_are_there() -> None:
    assert len(CASES) == 33 and len(NEGATIVE) == 4


@pytest.mark.parametrize("case", CASES)
def test_dump_matches_buildkit(case: str, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    directory = PARSER / "testfiles" / case
    assert main(["parse", "--dump", "-f", str(directory / "Dockerfile")]) == 0
    out = capsysbinary.readouterr().out
    assert out == (directory / "result").read_bytes()


@pytest.mark.parametrize("case", NEGATIVE)
def test_negative_cases_are_rejected(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = PARSER / "testfiles-negative" / case / "Dockerfile"
    assert main(["parse", "--dump", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}:")
    assert "Traceback" not in err


def test_line_numbers() -> None:
    ast = parse_ast((PARSER / "testfile-line" / "Dockerfile").read_bytes())
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


def test_heredocs_extracted_per_instruction() -> None:
    ast = parse_ast((PARSER / "heredoc" / "Dockerfile").read_bytes())
    expected = HEREDOC["children_heredocs"]
    assert len(ast.nodes) == len(expected) + 1
    for node, want in zip(ast.nodes[1:], expected, strict=True):
        assert _heredoc_dicts(node) == want, node.original


@pytest.mark.parametrize("word", HEREDOC["parse_heredoc_word"]["valid_name_EOF"])
def test_heredoc_word_valid(word: str) -> None:
    marker = parse_marker(word)
    assert marker is not None and marker.name == "EOF"


@pytest.mark.parametrize("word", HEREDOC["parse_heredoc_word"]["invalid_error"])
def test_heredoc_word_invalid(word: str) -> None:
    with pytest.raises(ValueError):
        parse_marker(word)


@pytest.mark.parametrize("word", HEREDOC["parse_heredoc_word"]["not_heredoc"])
def test_heredoc_word_not_a_heredoc(word: str) -> None:
    assert parse_marker(word) is None


@pytest.mark.parametrize(("line", "names"), HEREDOC["heredocs_from_line"]["cases"])
def test_heredocs_from_line(line: str, names: list[str]) -> None:
    assert [m.name for m in markers_in_line(line)] == names


@pytest.mark.parametrize("line", HEREDOC["json_form_no_heredoc"]["lines"])
def test_json_form_never_has_heredocs(line: str) -> None:
    ast = parse_ast(f"FROM scratch\n{line}\nEOF\n")
    assert ast.nodes[1].heredocs == ()
    assert ast.nodes[1].json


def test_chomp() -> None:
    assert chomp_content(HEREDOC["chomp"]["input"]) == HEREDOC["chomp"]["output"]


def test_unknown_instruction_dumps_as_empty_argument() -> None:
    ast = parse_ast("FROM x\nFOO bar baz\n")
    assert ast.nodes[1].keyword == "foo" and ast.nodes[1].args == ("",)


def test_unterminated_heredoc_names_its_line() -> None:
    with pytest.raises(DockerfileSyntaxError) as caught:
        parse_ast("FROM x\nRUN <<EOF\necho hi\n", "Dockerfile")
    assert caught.value.location is not None and caught.value.location.start_line == 2
    assert "unterminated heredoc" in str(caught.value)
