"""Property: parse -> format -> parse gives the same instructions and the same dump."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybuild.grammar import Onbuild, dump, format_ast, parse, parse_ast

SAFE = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="\\`\"'#<")
WORD = st.text(SAFE, min_size=1, max_size=8).filter(lambda w: not w.startswith("-"))
TEXT = st.lists(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="\\`<"), min_size=1, max_size=10).map(str.strip).filter(bool), min_size=1, max_size=4).map(" ".join).filter(lambda t: not t.startswith(("-", "[")))
KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True)
VALUE = st.one_of(WORD, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\`'), max_size=10).map(lambda t: f'"{t}"'))
FLAG_VALUE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=10)


def case(keyword: str) -> st.SearchStrategy[str]:
    return st.sampled_from([keyword, keyword.lower(), keyword.capitalize()])


def shell_or_json(keyword: str) -> st.SearchStrategy[str]:
    json_form = st.lists(st.text(max_size=8), max_size=4).map(lambda a: json.dumps(a, ensure_ascii=False))
    return st.tuples(case(keyword), st.one_of(TEXT, json_form)).map(" ".join)


def with_flags(keyword: str, names: list[str], rest: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    flag = st.tuples(st.sampled_from(names), FLAG_VALUE).map(lambda p: f'--{p[0]}="{p[1].replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"')
    unique = st.lists(flag, max_size=2, unique_by=lambda f: f.partition("=")[0])
    return st.tuples(case(keyword), unique, rest).map(lambda p: " ".join([p[0], *p[1], p[2]]))


INSTRUCTIONS = st.one_of(
    shell_or_json("RUN"),
    shell_or_json("CMD"),
    shell_or_json("ENTRYPOINT"),
    with_flags("RUN", ["mount", "network"], TEXT),
    with_flags("COPY", ["from", "chown", "chmod"], st.lists(WORD, min_size=2, max_size=4).map(" ".join)),
    st.tuples(case("ENV"), st.lists(st.tuples(KEY, VALUE).map("=".join), min_size=1, max_size=3).map(" ".join)).map(" ".join),
    st.tuples(case("ENV"), KEY, TEXT).map(" ".join),
    st.tuples(case("LABEL"), st.lists(st.tuples(KEY, VALUE).map("=".join), min_size=1, max_size=3).map(" ".join)).map(" ".join),
    st.tuples(case("ARG"), KEY, st.one_of(st.just(""), VALUE.map(lambda v: "=" + v))).map(lambda p: f"{p[0]} {p[1]}{p[2]}"),
    st.tuples(case("WORKDIR"), WORD).map(" ".join),
    st.tuples(case("USER"), WORD).map(" ".join),
    st.tuples(case("EXPOSE"), st.lists(st.integers(1, 65535).map(str), min_size=1, max_size=3).map(" ".join)).map(" ".join),
    st.tuples(case("VOLUME"), st.lists(WORD, min_size=1, max_size=3).map(" ".join)).map(" ".join),
    st.tuples(case("STOPSIGNAL"), st.sampled_from(["SIGTERM", "9", "SIGKILL"])).map(" ".join),
    st.tuples(case("ONBUILD"), shell_or_json("RUN")).map(" ".join),
    st.just("HEALTHCHECK NONE"),
    st.tuples(st.just("HEALTHCHECK --interval=5s --retries=3 CMD"), TEXT).map(" ".join),
    st.tuples(st.just("RUN <<EOF"), st.lists(TEXT, max_size=3)).map(lambda p: "\n".join([p[0], *p[1], "EOF"])),
    st.tuples(st.just("COPY <<-'END' /dest"), st.lists(TEXT, max_size=3)).map(lambda p: "\n".join([p[0], *("\t" + l for l in p[1]), "END"])),
)


def continued(line: str) -> st.SearchStrategy[str]:
    """Sometimes split a single-line instruction with a continuation and a comment."""
    if "\n" in line or " " not in line:
        return st.just(line)
    head, _, tail = line.partition(" ")
    return st.sampled_from([line, f"{head} \\\n  {tail}", f"{head} \\\n# a comment\n  {tail}"])


DOCKERFILES = st.tuples(
    st.lists(st.tuples(KEY, WORD).map(lambda p: f"ARG {p[0]}={p[1]}"), max_size=2),
    st.lists(
        st.tuples(
            st.tuples(WORD, st.one_of(st.none(), st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True))),
            st.lists(INSTRUCTIONS.flatmap(continued), max_size=6),
        ),
        min_size=1,
        max_size=3,
    ),
)


def render(spec: tuple[list[str], list]) -> str:  # type: ignore[type-arg]
    global_args, stages = spec
    lines = list(global_args)
    for index, ((image, name), body) in enumerate(stages):
        alias = f" AS {name}{index}" if name else ""
        lines.append(f"FROM {image}{alias}")
        lines.extend(body)
    return "\n".join(lines) + "\n"


def _shape(ast):  # type: ignore[no-untyped-def]
    return [(n.keyword, n.flags, n.args, n.json, n.heredocs, n.sub and (n.sub.keyword, n.sub.args)) for n in ast.nodes]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCKERFILES)
def test_parse_format_parse_is_stable(spec) -> None:  # type: ignore[no-untyped-def]
    text = render(spec)
    first = parse_ast(text)
    again = parse_ast(format_ast(first))
    assert _shape(again) == _shape(first)
    assert dump(again) == dump(first)
    # and the typed layer agrees too: same stages, same instructions
    typed_first, typed_again = parse(text), parse(format_ast(first))
    assert [(s.name, s.base, len(s.instructions)) for s in typed_first.stages] == [
        (s.name, s.base, len(s.instructions)) for s in typed_again.stages
    ]
    assert _typed(typed_first) == _typed(typed_again)


def _typed(dockerfile):  # type: ignore[no-untyped-def]
    """Typed instructions, minus the ONBUILD expression (its spelling is kept as written)."""
    return [
        i.trigger if isinstance(i, Onbuild) else i for s in dockerfile.stages for i in s.instructions
    ]


@settings(max_examples=200, deadline=None)
@given(st.lists(INSTRUCTIONS, min_size=1, max_size=5))
def test_backtick_escape_files_round_trip(body: list[str]) -> None:
    text = "# escape=`\nFROM busybox\n" + "\n".join(body) + "\n"
    first = parse_ast(text)
    assert first.escape == "`"
    again = parse_ast(format_ast(first))
    assert again.escape == "`"
    assert dump(again) == dump(first)
