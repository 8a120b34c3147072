"""BuildKit's s-expression dump of a parsed Dockerfile (``Node.Dump`` in Go)."""

from __future__ import annotations

import unicodedata

from ._nodes import Node
from ._parser import Ast

_SIMPLE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}
_PRINTABLE_CATEGORIES = frozenset("LMNPS")


def go_quote(text: str) -> str:
    """Go's strconv.Quote for a valid UTF-8 string."""
    out = ['"']
    for ch in text:
        if ch in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[ch])
        elif " " <= ch < "\x7f":
            out.append(ch)
        elif ch == " " or (ch > "\x7f" and unicodedata.category(ch)[0] in _PRINTABLE_CATEGORIES):
            out.append(ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def dump_node(node: Node) -> str:
    parts = [node.keyword]
    if node.flags:
        parts.append("[" + " ".join(go_quote(flag) for flag in node.flags) + "]")
    if node.sub is not None:
        parts.append("(" + dump_node(node.sub) + ")")
    parts.extend(go_quote(arg) for arg in node.args)
    return " ".join(parts)


def dump(ast: Ast) -> str:
    """The dump BuildKit's parser tests compare against (without the final newline)."""
    return "\n".join(f"({dump_node(node)})" for node in ast.nodes)
