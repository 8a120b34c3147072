"""``_lines.direct_shapes`` gives exactly lark's tokens for every line it reads, and
leaves to lark (None) the batches it does not: random lines over the characters
the terminals treat specially, and every Dockerfile line of the examples and the
parser's own tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pybuild.grammar import _parser
from pybuild.grammar._lines import direct_shapes
from pybuild.grammar._scanner import scan
from pybuild.grammar._nodes import heredoc_capable
from pybuild.grammar._words import go_trim_space

REPO = Path(__file__).resolve().parents[2]

# Go's spaces (some are not ASCII), quotes, escapes, flag dashes, newline-free
# letters that case-fold onto keyword letters (Kelvin sign, long s, dotless i).
PIECES = [
    " ", "\t", "\v", "\f", "\r", "\x85", "\xa0", "\u2000", "\u3000", "--", "-", "=", '"', "'", "\\", "x", "RUN", "run",
    "ONBUILD", "onbuild", "HEALTHCHECK", "HealthCheck", "CMD", "NONE", "--mount=type=cache", "\u212a", "\u017f", "\u0131",
    "[", "]", ",", "é", "\u1680",
]


def summary(token: Any) -> tuple[str, int, int] | None:
    return None if token is None else (str(token), token.line, token.end_pos)


def shape(s: Any) -> tuple[Any, ...]:
    return (
        s.rule, summary(s.keyword), tuple(summary(f) for f in s.flags), summary(s.arguments),
        None if s.nested is None else shape(s.nested),
    )


def agree(texts: list[str]) -> bool:
    """True when read directly (and equal to lark's reading), False when left to lark."""
    direct = direct_shapes(texts)
    if direct is None:
        return False
    assert [shape(s) for s in direct] == [shape(s) for s in _parser._lark().parse("\n".join(texts))], texts
    return True


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PIECES), min_size=1, max_size=12).map("".join), min_size=1, max_size=4))
def test_random_lines_read_as_lark_reads_them(raw: list[str]) -> None:
    texts = [go_trim_space(t) for t in raw]
    texts = [t for t in texts if t]
    if texts:
        agree(texts)


def test_lines_of_every_example_and_test_dockerfile_read_as_lark_reads_them() -> None:
    read = 0
    sources = [*REPO.glob("examples/**/Dockerfile*"), *REPO.glob("tests/**/Dockerfile*")]
    for path in sources:
        try:
            scanned = scan(path.read_text(encoding="utf-8"), heredoc_capable)
        except (UnicodeDecodeError, ValueError):
            continue
        texts = [go_trim_space(line.text) for line in scanned.lines]
        if texts:
            read += agree([t for t in texts if t])
    assert read > 10  # most files have no ONBUILD: read directly


def test_onbuild_lines_and_known_shapes() -> None:
    assert direct_shapes(["FROM busybox", "ONBUILD RUN true"]) is None  # left to lark
    assert direct_shapes(["onbuild"]) is None
    [run] = direct_shapes(["RUN --mount=type=cache,target=/x --network=none echo hi"]) or []
    assert (run.rule, str(run.keyword), [str(f) for f in run.flags], str(run.arguments)) == (
        "instruction", "RUN", [" --mount=type=cache,target=/x --network=none"], " echo hi",
    )
    [check] = direct_shapes(["HEALTHCHECK --interval=5s CMD true"]) or []
    assert (check.rule, str(check.arguments)) == ("healthcheck", " CMD true")
    for texts in (["FROM a", "RUN b"], ["onbuildx y"], ["HEALTHCHECK"], ['RUN --x="a b" c'], ["COPY\xa0x y"]):
        assert agree(texts), texts
