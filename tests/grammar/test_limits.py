"""Size limits and bounded work: a huge Dockerfile is refused early, a big one costs memory
in proportion to its size (measured with tracemalloc, which is deterministic, not with a clock)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.errors import DockerfileSyntaxError
from pybuild.grammar import MAX_DOCKERFILE_SIZE, MAX_INSTRUCTION_SIZE, parse, parse_ast

MiB = 1024 * 1024


def peak_bytes(fn: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        fn()
    except DockerfileSyntaxError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_an_instruction_over_the_limit_is_refused_naming_the_file_line_and_keyword() -> None:
    text = "FROM scratch\n\nENV A=" + "x" * (MAX_INSTRUCTION_SIZE + 10) + "\n"
    with pytest.raises(DockerfileSyntaxError) as caught:
        parse(text, "ctx/Dockerfile")
    assert str(caught.value) == "ctx/Dockerfile:3: ENV instruction is longer than the 4 MiB limit"
    assert len(caught.value.render()) < 1000  # no 4 MiB excerpt on the terminal


def test_continuation_lines_count_towards_the_instruction_limit() -> None:
    piece = "x" * 1000 + " \\\n"
    lines = MAX_INSTRUCTION_SIZE // 1000 + 2
    text = "FROM scratch\nRUN " + piece * lines + "done\n"
    with pytest.raises(DockerfileSyntaxError, match=r"^Dockerfile:2: RUN instruction is longer"):
        parse(text)


def test_an_instruction_under_the_limit_parses_whole() -> None:
    value = "x" * (MAX_INSTRUCTION_SIZE - 100)
    dockerfile = parse(f"FROM scratch\nENV A={value}\n")
    [env] = dockerfile.stages[0].instructions
    assert env.pairs[0].value == value  # type: ignore[attr-defined]


def test_heredoc_bodies_are_not_instruction_text() -> None:
    body = ("y" * 1000 + "\n") * (MAX_INSTRUCTION_SIZE // 1000 + 10)
    ast = parse_ast(f"FROM scratch\nCOPY <<EOF /big\n{body}EOF\n")
    assert ast.nodes[1].heredocs[0].content == body


def test_a_dockerfile_over_the_size_limit_is_refused() -> None:
    text = b"FROM scratch\n" + b"# comment\n" * (MAX_DOCKERFILE_SIZE // 10 + 1)
    with pytest.raises(DockerfileSyntaxError, match="larger than the 16 MiB limit"):
        parse_ast(text, "Dockerfile")


def test_reading_a_huge_dockerfile_stops_after_the_limit(tmp_path: Path) -> None:
    from pybuild.cli._io import read_dockerfile

    huge = tmp_path / "Dockerfile"
    with open(huge, "wb") as file:
        file.truncate(4 * MAX_DOCKERFILE_SIZE)  # sparse: costs no disk
    data, name = read_dockerfile(str(huge))
    assert len(data) == MAX_DOCKERFILE_SIZE + 1 and name == str(huge)


def test_a_parser_directive_with_a_long_run_of_spaces_is_read_in_one_pass() -> None:
    # The old pattern (.+?)\s*$ retried \s* from each space: hours for this line.
    ast = parse_ast("# syntax=x" + " " * 300_000 + "y\nFROM scratch\n")
    assert ast.directive("syntax") == "x" + " " * 300_000 + "y"


def test_a_parser_directive_value_loses_trailing_space() -> None:
    assert parse_ast("# escape = `  \nFROM scratch\n").escape == "`"


# Memory per character of input, for inputs of about 1 MiB of one shape.  The
# bounds leave room over what these shapes cost (they are linear, so the same
# ratio holds at the 16 MiB file limit); a per-character list, a regex group
# that keeps state for each repetition or a list of every physical line
# (what the parser did before) goes far over them.
SHAPES = {
    "comment lines": (lambda n: "# note\n" * (n // 7) + "FROM scratch\n", 2),
    "blank lines": (lambda n: "\n" * n + "FROM scratch\n", 2),
    "long flag value": (lambda n: 'FROM scratch\nCOPY --chown="' + "x" * n + '" a /b\n', 24),
    "long ENV value": (lambda n: "FROM scratch\nENV A=" + "x" * n + "\n", 24),
    "continued RUN": (lambda n: "FROM scratch\nRUN a \\\n" + "  b \\\n" * (n // 6) + "  c\n", 24),
    "heredoc body": (lambda n: "FROM scratch\nRUN <<EOF\n" + "echo hi\n" * (n // 8) + "EOF\n", 24),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_parsing_memory_is_proportional_to_the_input(shape: str) -> None:
    make, bytes_per_char = SHAPES[shape]
    small, large = make(MiB // 2), make(MiB)
    parse_ast(small)  # the grammar is loaded before measuring
    small_peak = peak_bytes(lambda: parse(small))
    large_peak = peak_bytes(lambda: parse(large))
    assert large_peak < bytes_per_char * len(large)
    assert large_peak < 2.5 * small_peak + MiB  # twice the input, about twice the memory


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM scratch\nENV A=" + "x" * (MAX_INSTRUCTION_SIZE + 1) + "\n", ":2: ENV instruction is longer than the 4 MiB limit"),
        ("FROM scratch\nCOPY --chown=\u00a0x a /b/\nRUN <<EOF\n", ":3: unterminated heredoc"),
        ("FROM scratch\n" + "ONBUILD " * 1000 + "RUN x\n", ":2: Chaining ONBUILD"),
    ],
)
def test_the_cli_reports_a_hostile_dockerfile_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    from pybuild.cli.main import main

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(text)
    assert main(["parse", "-f", str(dockerfile)]) != 0
    err = capsys.readouterr().err
    assert err.startswith(f"error: {dockerfile}{expected}")
    assert "Traceback" not in err and len(err) < 1000


def test_more_instructions_than_the_limit_are_refused_before_they_are_built() -> None:
    from pybuild.grammar import MAX_INSTRUCTIONS

    text = "FROM scratch\n" + "X\n" * MAX_INSTRUCTIONS
    with pytest.raises(DockerfileSyntaxError, match=f"^Dockerfile:{MAX_INSTRUCTIONS + 1}: more than 250,000 instructions"):
        parse_ast(text)


def test_many_tiny_instructions_cost_memory_in_proportion() -> None:
    small, large = "FROM scratch\n" + "RUN a\n" * 10_000, "FROM scratch\n" + "RUN a\n" * 20_000
    parse(small)
    small_peak = peak_bytes(lambda: parse(small))
    large_peak = peak_bytes(lambda: parse(large))
    assert large_peak < 2.5 * small_peak
    assert large_peak < 800 * 20_000  # bytes per instruction, result included (was ~1,100)


def test_checking_a_file_of_comment_lines_costs_memory_in_proportion() -> None:
    from pybuild.dag.checks._model import load

    text = "# c\n" * (MiB // 4) + "FROM scratch\n"
    load(text, "Dockerfile")
    assert peak_bytes(lambda: load(text, "Dockerfile")) < 6 * len(text)  # a string per line cost ~15


def test_expanding_a_variable_many_times_over_is_refused_not_built() -> None:
    from pybuild.dag import BuildOptions, ResolvedImage, convert
    from pybuild.errors import DockerfileError

    class Images:
        def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
            config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
            return ResolvedImage(ref, "sha256:" + "a" * 64, config)

    # 3 KB of Dockerfile; C would be 1,000 x 1,000 x 1,000 characters
    text = "FROM scratch\nENV A=" + "x" * 1000 + "\nENV B=" + "$A" * 1000 + "\nENV C=" + "$B" * 1000 + "\n"
    with pytest.raises(DockerfileError, match=r"^Dockerfile:4: failed to process .*longer than the 4 MiB limit"):
        convert(parse(text), BuildOptions(), Images())


@pytest.mark.parametrize("word", ["${A//x/yyyyyyyyyy}", "${A//?/yyyyyyyyyy}", "${A//x?/yyyyyyyyyyyyyyyyyyyy}", "${A///yyyyyyyyyy}"])
def test_a_replacement_that_multiplies_a_value_is_refused_before_it_is_built(word: str) -> None:
    from pybuild.errors import ExpansionError
    from pybuild.grammar import ShellLex

    env = {"A": "x" * MiB}
    with pytest.raises(ExpansionError, match="longer than the 4 MiB limit"):
        ShellLex("\\").process_word(word, env)
    assert ShellLex("\\").process_word(word, {"A": "x" * 1000}).count("y") >= 10_000


def test_expansion_up_to_the_limit_is_kept_whole() -> None:
    from pybuild.grammar import ShellLex

    value = "v" * (MiB - 10)
    assert ShellLex("\\").process_word("$A$A$A$A", {"A": value}) == value * 4


def test_many_short_expansions_adding_up_past_the_budget_are_refused() -> None:
    from pybuild.dag import BuildOptions, ResolvedImage, convert
    from pybuild.errors import DockerfileError

    class Images:
        def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
            config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
            return ResolvedImage(ref, "sha256:" + "a" * 64, config)

    # each line makes 2 MiB; forty of them would hold 80 MiB of values
    head = "FROM scratch\nENV A=" + "x" * 1024 + "\nENV B=" + "$A" * 1024 + "\n"
    text = head + "".join(f"ENV C{i}=$B$B\n" for i in range(40))
    with pytest.raises(DockerfileError, match="expanded words add up to more than 64 MiB"):
        convert(parse(text), BuildOptions(), Images())
