"""Hostile Dockerfiles: any text gives a parse result or a pybuild error, never a traceback."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.errors import PybuildError
from pybuild.grammar import parse, parse_ast

KEYWORDS = ["FROM", "RUN", "COPY", "ADD", "ENV", "LABEL", "ARG", "ONBUILD", "HEALTHCHECK", "EXPOSE", "USER",
            "WORKDIR", "VOLUME", "CMD", "ENTRYPOINT", "SHELL", "STOPSIGNAL", "MAINTAINER", "cmd", "BOGUS"]
# White space Python and Go disagree on, quotes, escapes, heredoc and JSON pieces.
PIECES = st.sampled_from(
    [" ", "\t", "\u00a0", "\u2028", "\u3000", "\x85", "\x1c", "\r", "\v", "\f", "\ufeff", "\\", "`", "'", '"',
     "--", "--chown=", "--from=", "--mount=", "--", "=", "<<", "<<-", "EOF", "$", "${", "}", "[", "]", ",", "#",
     "x", "a b", "\n", "\\\n", "ONBUILD ", "CMD ", "NONE"]
)
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
LINES = st.lists(st.tuples(st.sampled_from(KEYWORDS), st.lists(st.one_of(PIECES, ANY_TEXT), max_size=10)), max_size=5)


def dockerfile_from(lines: list[tuple[str, list[str]]]) -> str:
    return "FROM scratch\n" + "".join(f"{keyword} {''.join(pieces)}\n" for keyword, pieces in lines)


def parse_or_pybuild_error(text: str) -> None:
    """Both parse layers either succeed or raise a pybuild error."""
    try:
        parse_ast(text)
    except PybuildError:
        pass
    try:
        parse(text)
    except PybuildError:
        pass


def test_a_non_breaking_space_in_a_flag_value_is_an_argument_not_an_instruction() -> None:
    ast = parse_ast("FROM scratch\nCOPY --chown=\u00a0x a b\n")
    [copy] = ast.nodes[1:]
    assert copy.keyword == "copy" and copy.flags == ("--chown=",)
    assert copy.args == ("x", "a", "b") or copy.args[-2:] == ("a", "b")


def test_a_non_breaking_space_in_a_flag_value_never_escapes_as_a_traceback() -> None:
    parse_or_pybuild_error("FROM scratch\nCOPY --chown=\u00a0x a b\n")


def test_deeply_chained_onbuild_is_a_dockerfile_error() -> None:
    text = "FROM scratch\n" + "ONBUILD " * 20_000 + "RUN x\n"
    try:
        parse(text)
    except PybuildError as error:
        assert "ONBUILD" in str(error)
    else:  # pragma: no cover - a chain is always refused
        raise AssertionError("ONBUILD ONBUILD was accepted")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES)
def test_instructions_of_arbitrary_unicode_give_a_result_or_a_pybuild_error(lines: list[tuple[str, list[str]]]) -> None:
    parse_or_pybuild_error(dockerfile_from(lines))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_any_text_gives_a_result_or_a_pybuild_error(text: str) -> None:
    parse_or_pybuild_error(text)
    parse_or_pybuild_error("FROM scratch\n" + text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.lists(st.one_of(PIECES, ANY_TEXT), max_size=12).map("".join), marker=st.sampled_from(["EOF", '"EOF"', "-EOF", "'E O'"]))
def test_heredocs_of_arbitrary_unicode_give_a_result_or_a_pybuild_error(body: str, marker: str) -> None:
    parse_or_pybuild_error(f"FROM scratch\nRUN <<{marker} cat\n{body}\nEOF\nCOPY <<{marker} /x\n{body}\n")


# Flags and values the converter interprets (mounts, ownership, durations,
# sources), mixed with arbitrary text: converting what parses gives a plan or
# a pybuild error.
CONVERTER_PIECES = st.sampled_from(
    ["--mount=type=cache,target=", "--mount=type=bind,source=", "--mount=type=secret,id=", "--network=",
     "--security=", "--platform=", "--link", "--parents", "--exclude=", "--checksum=", "--keep-git-dir=",
     "--interval=", "--retries=", "--chmod=", "--chown=", "--from=", "${a:-", "${a/", "http://", "git@h:",
     "99999999999999999999", "-1", "0", "1s", "..", "/", ":", "*", "A=", "x", " ", "\u00a0", "'", '"', "\\"]
)
CONVERTER_LINES = st.lists(
    st.tuples(st.sampled_from(KEYWORDS), st.lists(st.one_of(CONVERTER_PIECES, ANY_TEXT), max_size=8)), max_size=5
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=CONVERTER_LINES, build_args=st.dictionaries(st.sampled_from(["a", "A"]), ANY_TEXT, max_size=2))
def test_converting_arbitrary_instructions_gives_a_plan_or_a_pybuild_error(
    lines: list[tuple[str, list[str]]], build_args: dict[str, str]
) -> None:
    from pybuild.dag import BuildOptions, ResolvedImage, convert

    config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}

    class Images:
        def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
            return ResolvedImage(ref, "sha256:" + "a" * 64, config)

    try:
        convert(parse("ARG a=1\n" + dockerfile_from(lines)), BuildOptions(build_args=build_args), Images())
    except PybuildError:
        pass
