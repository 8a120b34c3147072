"""Physical lines -> logical lines: the context-sensitive half of parsing.

Follows BuildKit's ``parser.Parse``: a BOM is dropped; parser directives are
read until the first line that is not one; comment lines vanish; a line ending
in the escape character continues on the next (skipping comment and blank
lines in between); heredoc bodies that follow an instruction are collected
here, because their end is a word chosen by the instruction itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ._heredoc import HeredocMarker, HeredocSyntaxError, markers_in_line
from ._words import GO_SPACE, go_trim_left_space

DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
KNOWN_DIRECTIVES = ("syntax", "escape", "check")


class ScanError(ValueError):
    """A problem at a physical line; ``line`` is 1-based."""

    def __init__(self, message: str, line: int, end_line: int | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.end_line = end_line


@dataclass(frozen=True)
class HeredocBody:
    marker: HeredocMarker
    content: str


@dataclass
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


def _continuation(escape: str) -> re.Pattern[str]:
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


_CONTINUATION = {e: _continuation(e) for e in ("\\", "`")}


def _is_comment(line: str) -> bool:
    return go_trim_left_space(line).startswith("#")


def _without_newline(line: str) -> str:
    return line.rstrip("\r\n")


def scan(text: str, heredoc_capable: Callable[[str], bool]) -> ScanResult:
    """Split ``text`` into logical lines.

    ``heredoc_capable(line)`` tells whether an instruction line may open
    heredocs (RUN/COPY/ADD, also under ONBUILD, not in JSON form).
    """
    # Only "\n" ends a line (a lone "\r" does not), and endings are kept
    # because heredoc bodies are taken verbatim.
    pieces = text.split("\n")
    physical = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        physical.append(pieces[-1])
    if physical and physical[0].startswith("\ufeff"):
        physical[0] = physical[0][1:]
    escape = "\\"
    continuation = _CONTINUATION[escape]
    directives: dict[str, str] = {}
    directive_lines: dict[str, int] = {}
    looking_for_directives = True
    warnings: list[str] = []
    lines: list[LogicalLine] = []
    comments: list[str] = []
    total = len(physical)
    index = 0  # next physical line to read (0-based)

    while index < total:
        raw = _without_newline(physical[index])
        index += 1
        stripped = go_trim_left_space(raw)
        if looking_for_directives:
            match = DIRECTIVE.match(stripped)
            name = match.group(1).lower() if match else None
            if name in KNOWN_DIRECTIVES:
                if name in directives:
                    raise ScanError(f"only one {name} parser directive can be used", index)
                value = match.group(2)
                if name == "escape":
                    if value not in ("\\", "`"):
                        raise ScanError(f"invalid escape token '{value}' does not match ` or \\", index)
                    escape = value
                    continuation = _CONTINUATION[escape]
                directives[name] = value
                directive_lines[name] = index
            else:
                looking_for_directives = False
        if stripped.startswith("#"):
            comments.append(stripped[1:].strip(GO_SPACE))
            continue
        start = index
        line, ended = _trim_continuation(stripped, continuation)
        if ended and line == "":
            continue
        parts = [line]
        empty_continuation = False
        while not ended and index < total:
            raw = _without_newline(physical[index])
            index += 1
            if _is_comment(raw):
                continue
            if go_trim_left_space(raw) == "":
                empty_continuation = True
                continue
            piece, ended = _trim_continuation(raw, continuation)
            parts.append(piece)
        line = "".join(parts)
        if empty_continuation:
            warnings.append(f"line {start}: empty continuation line found in: {line.strip()}")
        logical = LogicalLine(line, start, index, tuple(comments))
        comments = []
        if "<<" in line and heredoc_capable(line):
            try:
                markers = markers_in_line(line)
            except HeredocSyntaxError as error:
                raise ScanError(str(error), start, index) from None
            for marker in markers:
                index = _read_heredoc(physical, index, marker, logical, start)
        logical.end_line = index
        lines.append(logical)

    return ScanResult(lines, directives, directive_lines, escape, warnings)


def _trim_continuation(line: str, continuation: re.Pattern[str]) -> tuple[str, bool]:
    if continuation.search(line) is None:
        return line, True
    return continuation.sub(r"\1", line), False


def _read_heredoc(physical: list[str], index: int, marker: HeredocMarker, logical: LogicalLine, start: int) -> int:
    body: list[str] = []
    terminator = marker.name
    while index < len(physical):
        raw = physical[index]
        index += 1
        candidate = raw.rstrip("\r\n")
        if marker.chomp:
            candidate = candidate.lstrip("\t")
        if candidate == terminator:
            logical.heredocs.append(HeredocBody(marker, "".join(body)))
            return index
        body.append(raw)
    raise ScanError(f"unterminated heredoc {marker.name!r} (no line {marker.name!r} ends it)", start, index)
