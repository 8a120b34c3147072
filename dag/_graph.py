"""The build graph: ops by digest, their metadata, and graph queries.

networkx is imported here and nowhere else in pybuild, and only when a
query needs it (building the graph is plain dict work).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Any

from .._frozen import frozen
from ._canonical import _plain
from ._ops import Op, OpMeta, op_digest


class GraphBuilder:
    """Collects ops; identical ops (same digest) are stored once."""

    def __init__(self) -> None:
        self._ops: dict[str, Op] = {}
        self._meta: dict[str, OpMeta] = {}

    def add(self, op: Op, meta: OpMeta) -> str:
        digest = op_digest(op)
        if digest not in self._ops:
            for dependency in op.inputs():
                if dependency not in self._ops:
                    raise ValueError(f"op input {dependency} is not in the graph")
            self._ops[digest] = op
            self._meta[digest] = meta
        return digest

    def build(self) -> Definition:
        return Definition(MappingProxyType(dict(self._ops)), MappingProxyType(dict(self._meta)))


@frozen
class Definition:
    """An immutable graph of ops.  Insertion order is a topological order."""

    ops: Mapping[str, Op]
    meta: Mapping[str, OpMeta] = field(compare=False)

    def needed_by(self, targets: Iterable[str]) -> Definition:
        """The subgraph the targets need; nothing else is ever scheduled."""
        keep: set[str] = set()
        stack = [t for t in targets if t is not None]
        while stack:
            digest = stack.pop()
            if digest in keep:
                continue
            keep.add(digest)
            stack.extend(self.ops[digest].inputs())
        ops = {d: op for d, op in self.ops.items() if d in keep}
        meta = {d: m for d, m in self.meta.items() if d in keep}
        return Definition(MappingProxyType(ops), MappingProxyType(meta))

    def dependents(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {d: [] for d in self.ops}
        for digest, op in self.ops.items():
            for dependency in op.inputs():
                out[dependency].append(digest)
        return out

    def networkx(self) -> Any:
        import networkx

        graph = networkx.DiGraph()
        for digest, op in self.ops.items():
            graph.add_node(digest, kind=type(op).__name__, label=self.meta[digest].description)
            for dependency in op.inputs():
                graph.add_edge(dependency, digest)
        return graph

    def topological(self) -> list[str]:
        import networkx

        return list(networkx.topological_sort(self.networkx()))

    def critical_path_length(self) -> int:
        import networkx

        graph = self.networkx()
        return networkx.dag_longest_path_length(graph) + 1 if graph else 0

    # --------------------------------------------------------- rendering

    def to_json(self) -> dict[str, Any]:
        return {
            "ops": [
                {
                    "digest": digest,
                    "kind": type(op).__name__,
                    "inputs": list(op.inputs()),
                    "description": self.meta[digest].description,
                    "stage": self.meta[digest].stage,
                    "lines": list(span) if (span := self.meta[digest].span) else None,
                    "op": _plain(op),
                }
                for digest, op in self.ops.items()
            ]
        }

    def to_text(self, notes: Mapping[str, str] | None = None) -> str:
        """One line per op; ``notes`` adds a word to some (which platforms need the op)."""
        short = {d: f"#{i + 1}" for i, d in enumerate(self.ops)}
        lines = []
        for digest, op in self.ops.items():
            meta = self.meta[digest]
            inputs = ", ".join(short[i] for i in op.inputs()) or "-"
            where = f" (line {meta.span[0]})" if meta.span else ""
            note = f" {notes[digest]}" if notes and digest in notes else ""
            lines.append(f"{short[digest]:>4} {type(op).__name__:<12} {digest[7:19]} <- {inputs:<10} {meta.description}{where}{note}")
        return "\n".join(lines) + "\n"

    def to_dot(self) -> str:
        short = {d: f"op{i + 1}" for i, d in enumerate(self.ops)}
        lines = ["digraph pybuild {", "  rankdir=LR;", '  node [shape=box, fontname="monospace"];']
        for digest, op in self.ops.items():
            label = json.dumps(f"{type(op).__name__}\n{self.meta[digest].description}")[1:-1]
            lines.append(f'  {short[digest]} [label="{label}"];')
        for digest, op in self.ops.items():
            for dependency in op.inputs():
                lines.append(f"  {short[dependency]} -> {short[digest]};")
        lines.append("}")
        return "\n".join(lines) + "\n"
