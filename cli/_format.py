"""Output the way the docker CLI prints it: sizes, times, ``--format`` and tables.

- ``human_size``: go-units' ``HumanSizeWithPrecision(n, 3)`` -- decimal units
  (``B kB MB GB ...``) and three significant digits, so 1982338 is ``1.98MB``.
- ``human_duration``: go-units' ``HumanDuration`` (``About a minute``,
  ``2 hours``, ``3 weeks``); ``created_since`` appends `` ago``.
- ``Template``: the subset of Go's ``text/template`` that ``--format`` strings
  use: ``{{.Field.Sub}}``, ``{{.}}``, pipelines (``{{.X | json}}``), the docker
  functions ``json join split lower upper title truncate pad println len
  index printf``, ``{{if}}/{{else}}/{{end}}``, ``{{range}}/{{end}}`` and the
  ``{{-``/``-}}`` trim markers.  A leading ``table`` makes a table with a
  header row, as docker does.
- ``tabwrite``: Go's ``text/tabwriter`` as docker configures it (minimum
  width 10, padding 3, spaces): tab-terminated cells line up in columns,
  the text after a line's last tab is not padded.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pybuild.errors import UsageError

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")


def human_size(size: float) -> str:
    """``1982338`` -> ``1.98MB`` (go-units' HumanSizeWithPrecision with precision 3)."""
    value = float(size)
    unit = 0
    while value >= 1000.0 and unit < len(_DECIMAL_UNITS) - 1:
        value /= 1000.0
        unit += 1
    # Go's %.3g and Python's agree, exponent form included (999999 -> "1e+03kB").
    return f"{value:.3g}{_DECIMAL_UNITS[unit]}"


def human_duration(seconds: float) -> str:
    """go-units' HumanDuration."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def created_since(moment: float | None, now: float) -> str:
    if not moment:
        return "N/A"
    return human_duration(max(0.0, now - moment)) + " ago"


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time as image configs write it (None if absent or bad)."""
    if not text:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text.strip())
    if match is None:
        return None
    base, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    try:
        moment = datetime.datetime.fromisoformat(base + zone)
    except ValueError:
        return None
    return moment.timestamp() + (float(fraction) if fraction else 0.0)


def go_time_string(moment: float) -> str:
    """Go's ``time.Time.String()`` in local time: ``2024-05-01 12:00:00 +0000 UTC``."""
    local = datetime.datetime.fromtimestamp(moment).astimezone()
    return local.strftime("%Y-%m-%d %H:%M:%S %z ") + (local.tzname() or "")


def rfc3339_local(moment: float) -> str:
    """Go's ``time.RFC3339`` in local time: ``2024-05-01T12:00:00Z`` or ``...+02:00``."""
    local = datetime.datetime.fromtimestamp(int(moment)).astimezone()
    text = local.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def ellipsis(text: str, width: int) -> str:
    """docker's ``stringutils.Ellipsis``: at most ``width`` characters, the last one ``…``."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    return text[: width - 1] + "…"


# --- tables ------------------------------------------------------------------


def tabwrite(text: str, *, minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-separated cells as Go's tabwriter (flags 0, pad char ' ') does."""
    lines = text.split("\n")
    trailing_newline = text.endswith("\n")
    if trailing_newline:
        lines.pop()
    cells = [line.split("\t") for line in lines]
    out: list[str] = []
    widths: list[int] = []

    def write_lines(start: int, end: int) -> None:
        for row in cells[start:end]:
            parts = []
            for j, cell in enumerate(row):
                if j < len(row) - 1 and j < len(widths):
                    parts.append(cell.ljust(widths[j]))
                else:
                    parts.append(cell)
            out.append("".join(parts))

    def format_block(line0: int, line1: int) -> None:
        column = len(widths)
        this = line0
        while this < line1:
            if column >= len(cells[this]) - 1:
                this += 1
                continue
            write_lines(line0, this)
            line0 = this
            width = minwidth
            while this < line1 and column < len(cells[this]) - 1:
                width = max(width, len(cells[this][column]) + padding)
                this += 1
            widths.append(width)
            format_block(line0, this)
            widths.pop()
            line0 = this
        write_lines(line0, line1)

    format_block(0, len(cells))
    return "\n".join(out) + ("\n" if trailing_newline else "")


# --- Go templates ------------------------------------------------------------


class StrictRow(dict[str, Any]):
    """A row context: asking for a field it lacks is an error, as on docker's Go structs."""


_MISSING = object()


class _Nil:
    """A nil slice or map of a Go struct: prints as ``[]`` or ``map[]``, is ``null`` in JSON."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


NIL_SLICE = _Nil("[]")
NIL_MAP = _Nil("map[]")


TemplateError = UsageError  # a bad --format is a usage error


def _go_string(value: Any) -> str:
    """Go's ``fmt`` ``%v`` for the JSON-like values pybuild passes to templates."""
    if value is None:
        return "<nil>"
    if value is _MISSING:
        return "<no value>"
    if isinstance(value, _Nil):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_string(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_go_string(v) for v in value) + "]"
    return str(value)


def _truthy(value: Any) -> bool:
    if value is None or value is _MISSING or isinstance(value, _Nil):
        return False
    if isinstance(value, (str, list, tuple, dict, int, float)):
        return bool(value)
    return True


def _json(value: Any) -> str:
    def plain(item: Any) -> Any:
        if item is _MISSING or isinstance(item, _Nil):
            return None
        if isinstance(item, Mapping):
            return {k: plain(v) for k, v in item.items()}
        if isinstance(item, (list, tuple)):
            return [plain(v) for v in item]
        return item

    return json.dumps(plain(value), ensure_ascii=False, separators=(",", ":"))


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, Mapping):
            value = value.get(key, _MISSING)
        elif isinstance(value, (list, tuple)) and isinstance(key, int):
            value = value[key] if -len(value) <= key < len(value) else _MISSING
        else:
            raise TemplateError(f"template: index of {_go_string(value)!r} with {key!r}")
    return value


def _printf(fmt: str, *values: Any) -> str:
    # Enough of Go's verbs for format strings: %s %v %d %q and width flags.
    args = iter(values)

    def verb(match: re.Match[str]) -> str:
        flags, kind = match.group(1), match.group(2)
        if kind == "%":
            return "%"
        value = next(args, _MISSING)
        text = json.dumps(_go_string(value)) if kind == "q" else _go_string(value)
        return ("%" + flags + "s") % text

    return re.sub(r"%([-0-9]*)([svdq%])", verb, fmt)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "json": _json,
    "join": lambda items, sep: sep.join(_go_string(i) for i in (items or [])),
    "split": lambda text, sep: text.split(sep),
    "lower": lambda text: _go_string(text).lower(),
    "upper": lambda text: _go_string(text).upper(),
    "title": lambda text: _go_string(text).title(),
    "truncate": lambda text, n: _go_string(text)[: int(n)],
    "pad": lambda text, left, right: " " * int(left) + _go_string(text) + " " * int(right),
    "println": lambda *values: " ".join(_go_string(v) for v in values) + "\n",
    "print": lambda *values: "".join(_go_string(v) for v in values),
    "len": lambda value: 0 if isinstance(value, _Nil) or value is _MISSING else len(value or []),
    "index": _index,
    "printf": _printf,
}


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Action:
    pipeline: tuple[tuple[str, ...], ...]  # commands separated by |; each a tuple of tokens
    source: str


@dataclass(frozen=True)
class _If:
    pipeline: _Action
    then: tuple[Any, ...]
    otherwise: tuple[Any, ...]


@dataclass(frozen=True)
class _Range:
    pipeline: _Action
    body: tuple[Any, ...]
    otherwise: tuple[Any, ...]


_TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(`[^`]*`)|(\|)|(\$?[.\w][\w.]*|\.)|(\S))')


def _tokens(source: str) -> tuple[tuple[str, ...], ...]:
    commands: list[list[str]] = [[]]
    position = 0
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            break
        position = match.end()
        quoted, raw, pipe, word, other = match.groups()
        if pipe:
            commands.append([])
        elif quoted is not None:
            commands[-1].append(quoted)
        elif raw is not None:
            commands[-1].append('"' + raw[1:-1].replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif word is not None:
            commands[-1].append(word)
        elif other is not None:
            raise TemplateError(f"template: unexpected {other!r} in {{{{{source}}}}}")
    if any(not command for command in commands):
        raise TemplateError(f"template: empty command in {{{{{source}}}}}")
    return tuple(tuple(c) for c in commands)


def _split(template: str) -> list[tuple[str, str]]:
    """The template as ("text", ...) and ("action", ...) pieces, trim markers applied."""
    pieces: list[tuple[str, str]] = []
    position = 0
    while True:
        start = template.find("{{", position)
        if start < 0:
            pieces.append(("text", template[position:]))
            return pieces
        end = template.find("}}", start + 2)
        if end < 0:
            raise TemplateError("template: unclosed action", hint="every {{ needs a matching }}")
        text = template[position:start]
        inner = template[start + 2 : end]
        if inner.startswith("- ") or inner == "-":
            text = text.rstrip()
            inner = inner[1:]
        trim_after = inner.endswith(" -")
        if trim_after:
            inner = inner[:-1]
        pieces.append(("text", text))
        pieces.append(("action", inner.strip()))
        position = end + 2
        if trim_after:
            while position < len(template) and template[position] in " \t\r\n":
                position += 1


def _parse(pieces: list[tuple[str, str]], position: int, stop: tuple[str, ...]) -> tuple[tuple[Any, ...], int, str]:
    nodes: list[Any] = []
    while position < len(pieces):
        kind, value = pieces[position]
        position += 1
        if kind == "text":
            if value:
                nodes.append(_Text(value))
            continue
        keyword = value.split(None, 1)[0] if value else ""
        if keyword in stop:
            return tuple(nodes), position, keyword
        if keyword in ("if", "range"):
            condition = _Action(_tokens(value[len(keyword) :]), value)
            body, position, ended = _parse(pieces, position, ("else", "end"))
            otherwise: tuple[Any, ...] = ()
            if ended == "else":
                otherwise, position, ended = _parse(pieces, position, ("end",))
            if ended != "end":
                raise TemplateError(f"template: unexpected EOF in {{{{{value}}}}}", hint="close it with {{end}}")
            nodes.append(_If(condition, body, otherwise) if keyword == "if" else _Range(condition, body, otherwise))
        elif keyword in ("end", "else"):
            raise TemplateError(f"template: unexpected {{{{{keyword}}}}}")
        elif value.startswith("/*"):
            continue  # a comment
        else:
            nodes.append(_Action(_tokens(value), value))
    return tuple(nodes), position, ""


class Template:
    """A parsed ``--format`` string; ``render(value)`` runs it on one value."""

    def __init__(self, source: str) -> None:
        self.source = source
        nodes, _, ended = _parse(_split(source), 0, ())
        if ended:
            raise TemplateError(f"template: unexpected {{{{{ended}}}}}")
        self._nodes = nodes

    def render(self, value: Any) -> str:
        out: list[str] = []
        self._run(self._nodes, value, out)
        return "".join(out)

    def header(self, labels: Mapping[str, str]) -> str:
        """The table header: each field action shows its column label instead of a value."""
        out: list[str] = []
        for node in self._nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                fields = [t for command in node.pipeline for t in command if t.startswith(".") and t != "."]
                name = fields[-1].split(".")[-1] if fields else ""
                out.append(labels.get(name, name.upper()))
        return "".join(out)

    def _run(self, nodes: Sequence[Any], dot: Any, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                out.append(node.text)
            elif isinstance(node, _Action):
                out.append(_go_string(self._pipeline(node, dot)))
            elif isinstance(node, _If):
                branch = node.then if _truthy(self._pipeline(node.pipeline, dot)) else node.otherwise
                self._run(branch, dot, out)
            elif isinstance(node, _Range):
                items = self._pipeline(node.pipeline, dot)
                if isinstance(items, Mapping):
                    items = [items[k] for k in sorted(items)]
                if not items or items is _MISSING or isinstance(items, _Nil):
                    self._run(node.otherwise, dot, out)
                    continue
                for item in items:
                    self._run(node.body, item, out)

    def _pipeline(self, action: _Action, dot: Any) -> Any:
        value: Any = _MISSING
        for number, command in enumerate(action.pipeline):
            extra = [value] if number > 0 else []
            value = self._command(command, dot, extra, action.source)
        return value

    def _command(self, command: tuple[str, ...], dot: Any, piped: list[Any], source: str) -> Any:
        head, args = command[0], command[1:]
        if head in FUNCTIONS:
            values = [self._operand(a, dot, source) for a in args] + piped
            try:
                return FUNCTIONS[head](*values)
            except TypeError:
                raise TemplateError(f"template: wrong arguments for {head} in {{{{{source}}}}}") from None
        if args or piped:
            raise TemplateError(f"template: {head!r} is not a function in {{{{{source}}}}}")
        return self._operand(head, dot, source)

    def _operand(self, token: str, dot: Any, source: str) -> Any:
        if token == ".":
            return dot
        if token.startswith('"'):
            return json.loads(token)
        if re.fullmatch(r"-?\d+", token):
            return int(token)
        if token in ("true", "false"):
            return token == "true"
        if token == "nil":
            return None
        if token.startswith("."):
            value = dot
            for name in token[1:].split("."):
                value = self._field(value, name, source)
            return value
        raise TemplateError(f'template: function "{token}" not defined', hint="known: " + ", ".join(sorted(FUNCTIONS)))

    @staticmethod
    def _field(value: Any, name: str, source: str) -> Any:
        if isinstance(value, StrictRow):
            if name not in value:
                raise TemplateError(
                    f"template: can't evaluate field {name} in {{{{{source}}}}}",
                    hint="fields: " + ", ".join("." + k for k in value),
                )
            return value[name]
        if isinstance(value, Mapping):
            return value.get(name, _MISSING)
        if value is None or value is _MISSING:
            return _MISSING
        raise TemplateError(f"template: can't evaluate field {name} of {_go_string(value)!r} in {{{{{source}}}}}")


def unescape(fmt: str) -> str:
    """docker turns the two characters ``\\t`` and ``\\n`` of a format into a tab and a newline."""
    return fmt.replace("\\t", "\t").replace("\\n", "\n")


def render_rows(fmt: str, rows: Iterable[Mapping[str, Any]], labels: Mapping[str, str]) -> str:
    """Rows through a ``--format``: a ``table ...`` format gets a header and aligned columns."""
    text = unescape(fmt)
    is_table = text.startswith("table")
    if is_table:
        text = text[len("table") :].strip() or "\t".join("{{." + k + "}}" for k in labels)
    template = Template(text)
    body = "".join(template.render(StrictRow(row)) + "\n" for row in rows)
    if not is_table:
        return body
    return tabwrite(template.header(labels) + "\n" + body)


def render_values(fmt: str, values: Iterable[Any]) -> str:
    """``inspect --format``: the template once per value, each followed by a newline."""
    template = Template(unescape(fmt))
    return "".join(template.render(value) + "\n" for value in values)
