"""Graph conversion and scheduling overhead per op (issue 3).

    .venv/bin/python benchmarks/graph.py

Generates a 200-stage, 5,000-instruction Dockerfile (RUN, COPY --from,
ENV, WORKDIR, ...), converts it, and solves it with a runner that does no
work, so what is measured is pybuild's own cost per op: conversion (parse
excluded and reported apart), cache-key-less scheduling in trio, events.
Target: under 1 ms per op.
"""

from __future__ import annotations

import random
import statistics
import time

import trio

from pybuild.dag import BuildOptions, ResolvedImage, convert
from pybuild.dag._solver import CacheKey, Result, Solver
from pybuild.grammar import parse

BASE = {
    "architecture": "amd64",
    "os": "linux",
    "config": {"Env": ["PATH=/usr/bin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]},
}


class Images:
    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        return ResolvedImage(ref, "sha256:" + "a" * 64, BASE)


class NoWork:
    async def cache_key(self, digest, op, inputs):  # type: ignore[no-untyped-def]
        return CacheKey(digest)

    async def load(self, digest, op, key, inputs):  # type: ignore[no-untyped-def]
        return None

    async def explain_miss(self, digest, op, key):  # type: ignore[no-untyped-def]
        return None

    async def run(self, digest, op, key, inputs, emit):  # type: ignore[no-untyped-def]
        await trio.lowlevel.checkpoint()
        return Result(key.key, chain=(digest,), layer=digest)


def generate(stages: int = 200, instructions: int = 5000, seed: int = 7) -> str:
    rng = random.Random(seed)
    per_stage = instructions // stages
    lines = ["ARG VERSION=1"]
    for s in range(stages):
        lines.append(f"FROM busybox:1 AS s{s}" if s % 10 == 0 else f"FROM s{s - 1 - (s % 3 == 0)} AS s{s}")
        for i in range(per_stage - 1):
            kind = rng.randrange(6)
            if kind == 0 and s > 0:
                lines.append(f"COPY --from=s{rng.randrange(s)} /out/{i} /in/{s}/{i}")
            elif kind == 1:
                lines.append(f"ENV K{i}=v{s}_{i}")
            elif kind == 2:
                lines.append(f"WORKDIR /w/{s}/{i}")
            else:
                lines.append(f"RUN echo {s} {i} > /out_{i}")
    return "\n".join(lines) + "\n"


def main() -> None:
    text = generate()
    instructions = text.count("\n")
    started = time.perf_counter()
    dockerfile = parse(text)
    parse_seconds = time.perf_counter() - started

    convert_times, solve_times = [], []
    ops = 0
    for _ in range(5):
        started = time.perf_counter()
        plan = convert(dockerfile, BuildOptions(), Images())
        convert_times.append(time.perf_counter() - started)
        ops = len(plan.definition.ops)
        targets = [plan.definition.ops and d for d in plan.definition.ops]

        async def solve() -> None:
            await Solver(plan.definition, NoWork(), jobs=8).solve(targets)

        started = time.perf_counter()
        trio.run(solve)
        solve_times.append(time.perf_counter() - started)
    convert_s, solve_s = statistics.median(convert_times), statistics.median(solve_times)
    print(f"Dockerfile: 200 stages, {instructions} instructions; parse {parse_seconds * 1000:.0f} ms")
    print(f"graph: {ops} ops")
    print(f"convert: {convert_s * 1000:.0f} ms ({convert_s / ops * 1e6:.0f} us/op)")
    print(f"schedule (no-op runner, jobs=8): {solve_s * 1000:.0f} ms ({solve_s / ops * 1e6:.0f} us/op)")
    print(f"total overhead per op: {(convert_s + solve_s) / ops * 1e3:.3f} ms (target < 1 ms)")


if __name__ == "__main__":
    main()
