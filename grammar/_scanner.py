"""Physical lines -> logical lines: the context-sensitive half of parsing.

Follows BuildKit's ``parser.Parse``: a BOM is dropped; parser directives are
read until the first line that is not one; comment lines vanish; a line ending
in the escape character continues on the next (skipping comment and blank
lines in between); heredoc bodies that follow an instruction are collected
here, because their end is a word chosen by the instruction itself.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .._frozen import frozen
from ._heredoc import HeredocMarker, HeredocSyntaxError, markers_in_line
from ._words import GO_SPACE, go_trim_left_space

# The value is taken with (.+) and trimmed afterwards: a lazy (.+?)\s*$
# retried \s* from every position of a run of spaces (quadratic time).
DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+)$")
KNOWN_DIRECTIVES = ("syntax", "escape", "check")

# Limits on what one parse may hold.  BuildKit's frontend refuses a Dockerfile
# larger than one gRPC message (16 MiB, containerd's DefaultMaxRecvMsgSize);
# its scanner refuses physical lines over 64 KiB, which pybuild relaxes to a
# few MiB per instruction (continuation lines included, heredoc bodies not),
# enough for any real Dockerfile and small enough to parse in about a second.
MAX_DOCKERFILE_SIZE = 16 * 1024 * 1024  # bytes
MAX_INSTRUCTION_SIZE = 4 * 1024 * 1024  # characters of one logical line
# Each instruction becomes a few hundred bytes of Python objects; 16 MiB of
# "X\n" would be 8 million of them (gigabytes) before any is checked.  No real
# Dockerfile comes near this many (BuildKit has no such limit, but Go's nodes
# are several times smaller).
MAX_INSTRUCTIONS = 250_000
# Node.comments keeps the comment block right above an instruction, at most
# this many lines of it: nothing reads more, and a file of comments must not
# become millions of objects.
_MAX_COMMENTS = 100


class ScanError(ValueError):
    """A problem at a physical line; ``line`` is 1-based."""

    def __init__(self, message: str, line: int, end_line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.end_line = end_line


@frozen(slots=True)
class HeredocBody:
    marker: HeredocMarker
    content: str


@dataclass(slots=True)
class LogicalLine:
    text: str
    start_line: int
    end_line: int
    comments: tuple[str, ...] = ()
    heredocs: list[HeredocBody] = field(default_factory=list)


@dataclass
class ScanResult:
    lines: list[LogicalLine]
    directives: dict[str, str]
    directive_lines: dict[str, int]
    escape: str
    warnings: list[str]


class _PhysicalLines:
    """The physical lines of a text, read one at a time.

    Only "\n" ends a line (a lone "\r" does not), and endings are kept
    because heredoc bodies are taken verbatim.  No list of lines is built:
    a file of millions of short lines would cost a Python object each.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.position = 1 if text.startswith("\ufeff") else 0
        self.number = 0  # lines read so far: the 1-based number of the last one

    def next(self) -> str | None:
        text, start = self.text, self.position
        if start >= len(text):
            return None
        end = text.find("\n", start) + 1 or len(text)
        self.position = end
        self.number += 1
        return text[start:end]


def _without_newline(line: str) -> str:
    return line.rstrip("\r\n")


def scan(text: str, heredoc_capable: Callable[[str], bool]) -> ScanResult:
    """Split ``text`` into logical lines.

    ``heredoc_capable(line)`` tells whether an instruction line may open
    heredocs (RUN/COPY/ADD, also under ONBUILD, not in JSON form).  An
    instruction longer than MAX_INSTRUCTION_SIZE is a ScanError, found as soon
    as its lines add up to more.
    """
    physical = _PhysicalLines(text)
    escape = "\\"
    directives: dict[str, str] = {}
    directive_lines: dict[str, int] = {}
    looking_for_directives = True
    warnings: list[str] = []
    lines: list[LogicalLine] = []
    comments: deque[str] = deque(maxlen=_MAX_COMMENTS)

    while (raw := physical.next()) is not None:
        stripped = go_trim_left_space(_without_newline(raw))
        if looking_for_directives:
            match = DIRECTIVE.match(stripped)
            name = match.group(1).lower() if match else None
            if name in KNOWN_DIRECTIVES:
                assert match is not None  # the name came from it
                if name in directives:
                    raise ScanError(f"only one {name} parser directive can be used", physical.number)
                value = _directive_value(match.group(2))
                if name == "escape":
                    if value not in ("\\", "`"):
                        raise ScanError(f"invalid escape token '{value}' does not match ` or \\", physical.number)
                    escape = value
                directives[name] = value
                directive_lines[name] = physical.number
            else:
                looking_for_directives = False
        if stripped.startswith("#"):
            comment = stripped[1:].strip(GO_SPACE)
            if comment:
                comments.append(comment)
            else:
                comments.clear()  # an empty "#" ends a block, as in BuildKit's parser
            continue
        start = physical.number
        line, ended = _trim_continuation(stripped, escape)
        if ended and line == "":
            comments.clear()  # a blank line ends the comment block above
            continue
        parts = [line]
        size = len(line)
        empty_continuation = False
        while not ended and size <= MAX_INSTRUCTION_SIZE and (raw := physical.next()) is not None:
            raw = _without_newline(raw)
            left_trimmed = go_trim_left_space(raw)
            if left_trimmed.startswith("#"):
                continue
            if left_trimmed == "":
                empty_continuation = True
                continue
            piece, ended = _trim_continuation(raw, escape)
            parts.append(piece)
            size += len(piece)
        if size > MAX_INSTRUCTION_SIZE:
            raise _too_long(line, start, physical.number)
        line = "".join(parts)
        del parts
        if empty_continuation:
            warnings.append(f"line {start}: empty continuation line found in: {line.strip()}")
        logical = LogicalLine(line, start, physical.number, tuple(comments))
        comments.clear()
        if "<<" in line and heredoc_capable(line):
            try:
                markers = markers_in_line(line)
            except HeredocSyntaxError as error:
                raise ScanError(str(error), start, physical.number) from None
            for marker in markers:
                _read_heredoc(physical, marker, logical, start)
        logical.end_line = physical.number
        if len(lines) == MAX_INSTRUCTIONS:
            raise ScanError(f"more than {MAX_INSTRUCTIONS:,} instructions", start, physical.number)
        lines.append(logical)

    return ScanResult(lines, directives, directive_lines, escape, warnings)


def _directive_value(text: str) -> str:
    """The value of ``# name = value``: trailing white space dropped (one
    white-space character is kept when that is all there is, as the regex
    ``(.+?)\\s*$`` did)."""
    return text.rstrip() or text[-1:]


def _too_long(first_line: str, start: int, end: int) -> ScanError:
    keyword = first_line[:32].split(maxsplit=1)[0].upper() if first_line[:32].strip() else ""
    what = f"{keyword} instruction" if keyword.isalpha() and len(keyword) < 32 else "instruction"
    return ScanError(f"{what} is longer than the {MAX_INSTRUCTION_SIZE // (1024 * 1024)} MiB limit", start, end)


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """``line`` without its continuation escape, and whether it ends the instruction.

    As BuildKit's ``([^E])E[ \\t]*$|^E[ \\t]*$``: an escape character followed
    only by spaces and tabs continues the line, unless another escape
    character comes right before it.
    """
    trimmed = line.rstrip(" \t")
    if not trimmed.endswith(escape) or (len(trimmed) > 1 and trimmed[-2] == escape):
        return line, True
    return trimmed[:-1], False


def _read_heredoc(physical: _PhysicalLines, marker: HeredocMarker, logical: LogicalLine, start: int) -> None:
    body: list[str] = []
    terminator = marker.name
    while (raw := physical.next()) is not None:
        candidate = raw.rstrip("\r\n")
        if marker.chomp:
            candidate = candidate.lstrip("\t")
        if candidate == terminator:
            logical.heredocs.append(HeredocBody(marker, "".join(body)))
            return
        body.append(raw)
    raise ScanError(f"unterminated heredoc {marker.name!r} (no line {marker.name!r} ends it)", start, physical.number)
