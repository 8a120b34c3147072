"""Dockerfile text -> ``Ast`` (generic nodes), using the Lark grammar.

``lark`` is imported here and nowhere else in pybuild; its exceptions are
translated into ``DockerfileSyntaxError`` at this edge.  The grammar's rule
callbacks run inline during the LALR parse (no parse tree is built) and only
record each line's shape; the shapes are then finished into nodes by
BuildKit's per-instruction argument rules (``_nodes.py``).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple

from pybuild._frozen import frozen
from pybuild.errors import DockerfileSyntaxError, Location, shortened

from ._nodes import (
    ArgumentError,
    Heredoc,
    Node,
    Span,
    healthcheck_arguments,
    heredoc_capable,
    split_arguments,
)
from ._lines import Shape, direct_shapes
from ._scanner import MAX_DOCKERFILE_SIZE, LogicalLine, ScanError, scan
from ._words import extract_flags, go_trim_space


@frozen
class Ast:
    """A parsed Dockerfile, before instructions are typed and grouped into stages."""

    file: str
    nodes: tuple[Node, ...]
    directives: tuple[tuple[str, str], ...]
    escape: str
    warnings: tuple[str, ...] = ()

    def directive(self, name: str) -> str | None:
        return dict(self.directives).get(name)


def _shape(rule: str) -> Callable[[Any, list[Any]], Shape]:
    def callback(self: Any, children: list[Any]) -> Shape:
        flags = []
        arguments = nested = None
        for child in children[1:]:
            if type(child) is Shape:
                nested = child
            elif child.type == "FLAGS":
                flags.append(child)
            else:
                arguments = child
        return Shape(rule, children[0], tuple(flags), arguments, nested)

    return callback


@functools.cache
def _lark() -> Any:
    """The LALR parser, loaded from a per-user cache when the grammar is unchanged.

    Analysing the grammar takes tens of milliseconds, more than parsing a
    typical Dockerfile.  The cache lives in the user's private cache directory
    (never in the installed package); lark stores the hash of the grammar and
    its options in it and rebuilds when they differ or the file is unreadable.
    """
    import lark
    from lark import Lark, Transformer

    class Shapes(Transformer[Any, list[Shape]]):
        instruction = _shape("instruction")
        healthcheck = _shape("healthcheck")
        onbuild = _shape("onbuild")

        def start(self, children: list[Any]) -> list[Shape]:
            return children

    cache = _cache_dir()
    return Lark.open_from_package(
        "pybuild.grammar",
        "dockerfile.lark",
        parser="lalr",
        lexer="contextual",
        transformer=Shapes(visit_tokens=False),
        maybe_placeholders=False,
        # lark checks the grammar's hash before trusting the cache file
        cache=str(cache / f"dockerfile-lark-{lark.__version__}.cache") if cache else False,
    )


def _cache_dir() -> Path | None:
    """The user's cache directory for pybuild, created private; None if unusable."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(base) / "pybuild"
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return None
    return path


# ONBUILD ONBUILD ... levels kept in generic nodes (BuildKit's instructions
# refuse even one; its parser keeps any number).
_MAX_ONBUILD_NESTING = 8


class _LineError(Exception):
    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.line = line


class _Partial(NamedTuple):
    keyword: str
    flags: tuple[str, ...]
    args: tuple[str, ...]
    json: bool
    sub: _Partial | None


class _Finisher:
    """Turns shapes into keyword, flags and arguments by BuildKit's rules."""

    def __init__(self, text: str, escape: str) -> None:
        self.text = text
        self.escape = escape

    def finish(self, shape: Shape, depth: int = 0) -> _Partial:
        line = shape.keyword.line
        if depth > _MAX_ONBUILD_NESTING:
            # BuildKit's instructions refuse any chain; the generic nodes keep
            # a few levels (as BuildKit's parser does) but not unbounded ones,
            # which would exhaust the stack of every recursive reader.
            raise _LineError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed", line)
        flags, after_terminator = self._flags(shape.flags)
        if after_terminator is not None:
            return self._from_text(shape.rule, str(shape.keyword).lower(), flags, after_terminator, line, depth)
        if shape.rule == "onbuild":
            sub = self.finish(shape.nested, depth + 1) if shape.nested is not None else None
            return _Partial("onbuild", flags, (), False, sub)
        arguments = go_trim_space(str(shape.arguments)) if shape.arguments is not None else ""
        return self._from_text(shape.rule, str(shape.keyword).lower(), flags, arguments, line, depth)

    def _from_text(self, rule: str, keyword: str, flags: tuple[str, ...], rest: str, line: int, depth: int) -> _Partial:
        try:
            if rule == "onbuild":
                sub = self._parse_nested(rest, line, depth + 1) if rest else None
                return _Partial("onbuild", flags, (), False, sub)
            if rule == "healthcheck":
                args, is_json = healthcheck_arguments(rest)
            else:
                args, is_json = split_arguments(keyword, rest, self.escape)
        except ArgumentError as error:
            raise _LineError(str(error), line) from None
        return _Partial(keyword, flags, args, is_json, None)

    def _flags(self, tokens: tuple[Any, ...]) -> tuple[tuple[str, ...], str | None]:
        """Unquoted flag words, and the arguments when a bare ``--`` ended them
        (after it the rest of the line is arguments, whatever it looks like)."""
        flags: list[str] = []
        for token in tokens:  # at most one: the leading flags are one token
            words, rest = extract_flags(go_trim_space(str(token)))
            flags.extend(words)
            if rest:
                return tuple(flags), go_trim_space(rest + self._line_after(token))
        return tuple(flags), None

    def _line_after(self, token: Any) -> str:
        end = self.text.find("\n", token.end_pos)
        return self.text[token.end_pos : end if end >= 0 else len(self.text)]

    def _parse_nested(self, text: str, line: int, depth: int) -> _Partial:
        try:
            [partial] = _parse_lines([text], self.escape, depth)
        except _LineError as error:
            raise _LineError(str(error), line) from None
        return partial


def _parse_lines(texts: list[str], escape: str, depth: int = 0) -> list[_Partial]:
    joined = "\n".join(texts)
    shapes = direct_shapes(texts)  # lark's tokens without loading lark (_lines.py)
    if shapes is None:
        shapes = _lark_shapes(joined)
    finisher = _Finisher(joined, escape)
    return [finisher.finish(shape, depth) for shape in shapes]


def _lark_shapes(joined: str) -> list[Shape]:
    from lark.exceptions import LarkError, UnexpectedInput

    try:
        shapes: list[Shape] = _lark().parse(joined)
    except UnexpectedInput as error:
        raise _LineError(f"unexpected input: {error.get_context(joined).strip()}", error.line) from None
    except LarkError as error:  # pragma: no cover - the grammar accepts every line
        raise _LineError(str(error), 1) from None
    return shapes


def parse_ast(text: str | bytes, file: str = "Dockerfile") -> Ast:
    """Parse Dockerfile text into generic nodes, as BuildKit's parser does."""
    source = _decode(text, file)
    try:
        scanned = scan(source, heredoc_capable)
    except ScanError as error:
        raise DockerfileSyntaxError(str(error), location=Location(file, error.line, error.end_line)) from None
    logical = scanned.lines
    if not logical:
        raise DockerfileSyntaxError(
            "file with no instructions",
            location=Location(file, max(1, source.count("\n"))),
            hint="a Dockerfile needs at least a FROM instruction",
        )
    nodes: list[Node] = []
    for first in range(0, len(logical), _BATCH):
        nodes.extend(_nodes(logical[first : first + _BATCH], scanned.escape, file))
    return Ast(
        file=file,
        nodes=tuple(nodes),
        directives=tuple(scanned.directives.items()),
        escape=scanned.escape,
        warnings=tuple(scanned.warnings),
    )


# Logical lines given to the grammar at once: enough to amortise a parse call,
# few enough that the tokens and shapes of a huge file are never all alive.
_BATCH = 1024


def _nodes(lines: list[LogicalLine], escape: str, file: str) -> list[Node]:
    try:
        partials = _parse_lines([go_trim_space(line.text) for line in lines], escape)
    except _LineError as error:
        line = lines[min(error.line, len(lines)) - 1]
        raise DockerfileSyntaxError(
            str(error), location=Location(file, line.start_line, line.end_line), excerpt=shortened(line.text)
        ) from None
    return [_node(partial, line) for partial, line in zip(partials, lines, strict=True)]


def _node(partial: _Partial, line: LogicalLine) -> Node:
    span = Span(line.start_line, line.end_line)
    original = go_trim_space(line.text)
    heredocs = tuple(
        Heredoc(
            name=body.marker.name,
            content=body.content,
            expand=body.marker.expand,
            chomp=body.marker.chomp,
            file_descriptor=body.marker.file_descriptor,
        )
        for body in line.heredocs
    )
    return Node(
        keyword=partial.keyword,
        flags=partial.flags,
        args=partial.args,
        json=partial.json,
        span=span,
        original=original,
        heredocs=heredocs,
        sub=_sub_node(partial.sub, span, original) if partial.sub is not None else None,
        comments=line.comments,
    )


def _sub_node(partial: _Partial, span: Span, original: str) -> Node:
    sub = _sub_node(partial.sub, span, original) if partial.sub is not None else None
    return Node(partial.keyword, partial.flags, partial.args, partial.json, span, original, sub=sub)


def _decode(text: str | bytes, file: str) -> str:
    # Characters for a str: at least as many bytes, so a str under the limit
    # in characters is what a caller holds anyway.
    if len(text) > MAX_DOCKERFILE_SIZE:
        raise too_large(file)
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as error:
            line = error.object.count(b"\n", 0, error.start) + 1
            raise DockerfileSyntaxError(
                f"invalid UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start})",
                location=Location(file, line),
                hint="save the Dockerfile as UTF-8",
            ) from None
    nul = text.find("\x00")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DockerfileSyntaxError("NUL byte in the Dockerfile", location=Location(file, line), hint="is this a binary file?")
    return text


def too_large(file: str) -> DockerfileSyntaxError:
    """The error for a Dockerfile over MAX_DOCKERFILE_SIZE, as BuildKit's frontend refuses one."""
    return DockerfileSyntaxError(
        f"{file} is larger than the {MAX_DOCKERFILE_SIZE // (1024 * 1024)} MiB limit",
        hint="move large data into files in the build context and COPY them",
    )
