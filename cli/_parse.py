"""``pybuild parse``: show how pybuild reads a Dockerfile."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ._io import read_dockerfile

if TYPE_CHECKING:
    from pybuild.grammar import Dockerfile, Span


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", default="Dockerfile", help="the Dockerfile (- for stdin; default ./Dockerfile)")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--dump", action="store_true", help="BuildKit's s-expression dump of the parse tree")
    form.add_argument("--json", action="store_true", help="machine-readable stages and instructions with line spans")


def run(args: argparse.Namespace) -> int:
    from pybuild import grammar

    data, name = read_dockerfile(args.file)
    if args.dump:
        print(grammar.dump(grammar.parse_ast(data, name)))
        return 0
    dockerfile = grammar.parse(data, name)
    if args.json:
        json.dump(_as_json(dockerfile), sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        sys.stdout.write(_listing(dockerfile))
    return 0


def _node_json(node: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "keyword": node.keyword.upper(),
        "span": [node.span.start, node.span.end],
        "original": node.original,
        "flags": list(node.flags),
        "args": list(node.args),
        "json": node.json,
    }
    if node.sub is not None:
        out["trigger"] = _node_json(node.sub)
    if node.heredocs:
        out["heredocs"] = [
            {"name": h.name, "content": h.content, "expand": h.expand, "chomp": h.chomp, "fd": h.file_descriptor}
            for h in node.heredocs
        ]
    return out


def _as_json(dockerfile: Any) -> dict[str, Any]:
    ast = dockerfile.ast
    return {
        "file": dockerfile.file,
        "escape": ast.escape,
        "directives": dict(ast.directives),
        "global_args": [_node_json(arg.node) for arg in dockerfile.global_args],
        "stages": [
            {
                "index": stage.index,
                "name": stage.name,
                "base": stage.base,
                "platform": stage.platform,
                "span": [stage.span.start, stage.span.end],
                "from": _node_json(stage.from_.node),
                "instructions": [_node_json(i.node) for i in stage.instructions],
            }
            for stage in dockerfile.stages
        ],
        "warnings": list(ast.warnings),
    }


def _lines(span: Span) -> str:
    return f"line {span.start}" if span.start == span.end else f"lines {span.start}-{span.end}"


def _listing(dockerfile: Dockerfile) -> str:
    out = []
    stages = len(dockerfile.stages)
    out.append(f"{dockerfile.file}: {stages} stage{'s' if stages != 1 else ''}, "
               f"{len(dockerfile.global_args)} global ARG{'s' if len(dockerfile.global_args) != 1 else ''}")
    for arg in dockerfile.global_args:
        out.append(f"  {arg.span.start:>5}  {arg.original}")
    for stage in dockerfile.stages:
        label = f'"{stage.name}"' if stage.name else "(unnamed)"
        platform = f" --platform={stage.platform}" if stage.platform else ""
        out.append(f"stage {stage.index} {label}: FROM{platform} {stage.base} ({_lines(stage.span)})")
        for instruction in stage.instructions:
            text = instruction.original if len(instruction.original) <= 100 else instruction.original[:97] + "..."
            out.append(f"  {instruction.span.start:>5}  {text}")
    for warning in dockerfile.ast.warnings:
        out.append(f"warning: {warning}")
    return "\n".join(out) + "\n"
