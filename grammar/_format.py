"""Write a parsed Dockerfile back as Dockerfile text.

``parse(format_ast(parse(text)))`` has the same instructions as
``parse(text)``: a canonical spelling (continuations joined, comments
dropped, keywords in upper case, flags re-quoted) of the same Dockerfile.
"""

from __future__ import annotations

import json

from ._nodes import Node
from ._parser import Ast
from ._words import GO_SPACE


def _quote_flag(flag: str) -> str:
    if flag and not any(ch in GO_SPACE or ch in "\"'\\" for ch in flag):
        return flag
    escaped = flag.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _flag_words(node: Node) -> list[str]:
    out = []
    for flag in node.flags:
        name, eq, value = flag.partition("=")
        out.append(f"{_quote_flag(name)}{eq}{_quote_flag(value) if eq else ''}")
    return out


def _arguments(node: Node) -> str:
    keyword, args = node.keyword, node.args
    if node.json:
        prefix = args[0] + " " if keyword == "healthcheck" else ""
        body = list(args[1:]) if keyword == "healthcheck" else list(args)
        return prefix + json.dumps(body, ensure_ascii=False)
    if keyword in ("env", "label"):
        parts = []
        for i in range(0, len(args), 3):
            key, value, separator = args[i : i + 3]
            parts.append(f"{key}={value}" if separator == "=" else f"{key} {value}")
        return " ".join(parts)
    return " ".join(args)


def format_node(node: Node) -> str:
    words = [node.keyword.upper(), *_flag_words(node)]
    if node.sub is not None:
        words.append(format_node(node.sub))
    elif node.args or node.json:
        arguments = _arguments(node)
        if arguments.startswith("--"):
            words.append("--")  # otherwise the first word would read as a flag
        words.append(arguments)
    return " ".join(words)


def format_ast(ast: Ast) -> str:
    out = [f"# {name}={value}\n" for name, value in ast.directives]
    for node in ast.nodes:
        out.append(format_node(node) + "\n")
        for heredoc in node.heredocs:
            out.append(heredoc.content)  # every body line keeps its own ending
            out.append(heredoc.name + "\n")
    return "".join(out)
