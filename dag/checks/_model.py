"""What the checks read of a Dockerfile: typed stages plus the text around them.

Checks need things the typed instructions drop: the keyword as written (for
casing rules), the comments right above an instruction (descriptions and
per-instruction ``# check=`` comments), blank lines inside a continued
instruction.  They also need typed stages when two stages share a name, which
``grammar.parse`` refuses; here the later duplicates are renamed before typing
so that DuplicateStageName can be reported as a check, as BuildKit does.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import overload

from pybuild.grammar import Ast, Dockerfile, Node, build_dockerfile, parse_ast

_COMMENT = re.compile(r"^[ \t\r\f\v]*#")
_DIRECTIVE = re.compile(r"^#\s*(syntax|escape|check)\s*=", re.IGNORECASE)
CHECK_COMMENT = re.compile(r"^check\s*=\s*(.*)$")


@dataclass(frozen=True)
class Source:
    """A parsed Dockerfile with the physical lines it came from."""

    file: str
    ast: Ast
    dockerfile: Dockerfile
    lines: Sequence[str]  # physical lines, without line endings; lines[0] is line 1
    duplicate_names: tuple[tuple[Node, str], ...]  # (FROM node, name) of every repeated stage name
    directive_lines: int  # how many lines at the top are parser directives

    def line(self, number: int) -> str:
        return self.lines[number - 1] if 0 < number <= len(self.lines) else ""

    def comments_above(self, node: Node) -> tuple[str, ...]:
        """The comment block right above ``node``, top to bottom, ``#`` removed.

        As BuildKit's parser: an empty ``#`` line ends the block.  A blank line
        ends it too, as BuildKit's documentation of InvalidDefinitionDescription
        tells users to separate an unrelated comment with one.  Parser
        directives at the top of the file belong to no block.
        """
        block: list[str] = []
        number = node.span.start - 1
        while number > self.directive_lines:
            text = self.line(number)
            if not _COMMENT.match(text):
                break
            comment = text.strip()[1:].strip()
            if not comment:
                break
            block.append(comment)
            number -= 1
        return tuple(reversed(block))

    def has_empty_continuation(self, node: Node) -> bool:
        """Whether a blank line sits inside the continued lines of ``node``."""
        continued = _continuation(self.ast.escape)
        number = node.span.start
        while number <= node.span.end and continued.search(self.line(number)):
            number += 1
            while number <= node.span.end:
                text = self.line(number)
                if text.strip() == "":
                    return True
                if not _COMMENT.match(text):
                    break
                number += 1
        return False


def keyword_as_written(node: Node) -> str:
    """The instruction keyword with the case the author used."""
    return node.original.split(None, 1)[0] if node.original.strip() else node.keyword


def stage_name_as_written(node: Node) -> str | None:
    if node.keyword == "from" and len(node.args) == 3 and node.args[1].lower() == "as":
        return node.args[2]
    return None


def _continuation(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


class PhysicalLines(Sequence[str]):
    """The physical lines of a text (without line endings), each cut out when
    asked for.  A tuple of them cost a string object per line: a 16 MiB file
    of short comment lines took hundreds of MB to check."""

    def __init__(self, text: str) -> None:
        self._text = text
        starts = array("q", [0])
        find = text.find
        end = find("\n")
        while end >= 0:
            starts.append(end + 1)
            end = find("\n", end + 1)
        self._starts = starts

    def __len__(self) -> int:
        return len(self._starts)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...

    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self._starts)
        start = self._starts[index]  # IndexError past the end, as a tuple
        end = self._starts[index + 1] - 1 if index + 1 < len(self._starts) else len(self._text)
        return self._text[start:end].rstrip("\r")


def _decoded_lines(text: str | bytes) -> Sequence[str]:
    if isinstance(text, bytes):
        text = text.decode("utf-8")  # parse_ast has already refused anything else
    return PhysicalLines(text.removeprefix("\ufeff"))


def load(text: str | bytes, file: str) -> Source:
    """Parse ``text``; raises ``DockerfileSyntaxError`` as ``grammar.parse`` does,
    except for repeated stage names, which are left to the checks."""
    ast = parse_ast(text, file)
    seen: set[str] = set()
    duplicates: list[tuple[Node, str]] = []
    nodes: list[Node] = []
    for node in ast.nodes:
        written = stage_name_as_written(node)
        if written is not None:
            name = written.lower()
            if name in seen:
                duplicates.append((node, name))
                # Typed under a throw-away name; the real name is put back below.
                node = replace(node, args=(node.args[0], node.args[1], f"{written}-duplicate-{node.span.start}"))
            seen.add(name)
        nodes.append(node)
    typed = build_dockerfile(replace(ast, nodes=tuple(nodes)))
    # Put the real FROM nodes and names back, so that locations, original
    # text and names stay as written; Dockerfile.stage(name) still finds the
    # first stage of a repeated name, the one references resolve to.
    originals = {node.span.start: node for node in ast.nodes}
    restored = []
    for stage in typed.stages:
        node = originals[stage.from_.span.start]
        written = stage_name_as_written(node)
        real = written.lower() if written is not None else None
        restored.append(replace(stage, name=real, from_=replace(stage.from_, node=node, name=real)))
    dockerfile = replace(typed, ast=ast, stages=tuple(restored))
    lines = _decoded_lines(text)
    return Source(file, ast, dockerfile, lines, tuple(duplicates), _count_directives(lines))


def _count_directives(lines: Sequence[str]) -> int:
    count = 0
    for line in lines:
        if not _DIRECTIVE.match(line.lstrip()):
            break
        count += 1
    return count
