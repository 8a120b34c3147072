"""Per-step overhead of RUN: a 40-step ``RUN true`` chain with pybuild, BuildKit and Buildah.

    .venv/bin/python benchmarks/run_overhead.py [--repeat N]

Each engine builds, without cache, a Dockerfile of 40 ``RUN true N`` steps
and one of a single step; per-step overhead = (t40 - t1) / 39, so start-up,
base image and export costs cancel out.  Medians of --repeat runs (default 3).
Target (issue 4): pybuild's per-step overhead at most BuildKit's.

    .venv/bin/python benchmarks/run_overhead.py --baseline /tmp/old [--repeat N]

A/B of pybuild alone on a noisy machine: each repeat builds both chains with
this checkout and with the one at ``/tmp/old/pybuild`` (put first on
PYTHONPATH, same venv), back to back, and prints each one's per-step
overhead per repeat, then the medians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import Engines, median, table  # noqa: E402


def chain(steps: int) -> str:
    return "FROM busybox\n" + "".join(f"RUN true {i}\n" for i in range(steps))


def per_step(engines: Engines, context: Path, pythonpath: str | None) -> float:
    """One (t40 - t1) / 39 of pybuild, from this checkout or the one on ``pythonpath``."""
    own_env = Engines.pybuild_env

    def env(self: Engines) -> dict[str, str]:
        return {**own_env(self), **({"PYTHONPATH": pythonpath} if pythonpath else {})}

    engines.pybuild_env = env.__get__(engines)  # type: ignore[method-assign]  # this run's builds only
    try:
        single = engines.build("pybuild", context, chain(1), tag="bench-run1", no_cache=True)
        total = engines.build("pybuild", context, chain(40), tag="bench-run40", no_cache=True)
    finally:
        del engines.pybuild_env
    return (total - single) / 39


def compare(repeat: int, baseline: Path) -> None:
    if not (baseline / "pybuild" / "executors").is_dir():
        raise SystemExit(f"{baseline}/pybuild is not a pybuild checkout")
    engines = Engines.prepare(["pybuild"])
    try:
        context = engines.work / "ctx"
        context.mkdir()
        ours: list[float] = []
        theirs: list[float] = []
        for i in range(repeat):
            pair = [(ours, None), (theirs, str(baseline))]
            for values, pythonpath in pair if i % 2 == 0 else reversed(pair):
                values.append(per_step(engines, context, pythonpath))
            print(f"repeat {i + 1}: per-step this {ours[-1] * 1000:.1f} ms, baseline {theirs[-1] * 1000:.1f} ms", flush=True)
        won = sum(1 for a, b in zip(ours, theirs) if a < b)
        print(f"median per-step: this {median(ours) * 1000:.1f} ms, baseline {median(theirs) * 1000:.1f} ms; this faster in {won} of {repeat}")
    finally:
        engines.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="pybuild,buildkit,buildah")
    parser.add_argument("--baseline", type=Path, help="a directory holding another checkout as pybuild/: A/B of pybuild alone")
    args = parser.parse_args()
    if args.baseline is not None:
        compare(args.repeat, args.baseline)
        return
    engines = Engines.prepare(args.engines.split(","))
    try:
        context = engines.work / "ctx"
        context.mkdir()
        totals: dict[str, float] = {}
        singles: dict[str, float] = {}
        per_step: dict[str, float] = {}
        for engine in engines.available:
            singles[engine] = median([engines.build(engine, context, chain(1), tag="bench-run1", no_cache=True) for _ in range(args.repeat)])
            totals[engine] = median([engines.build(engine, context, chain(40), tag="bench-run40", no_cache=True) for _ in range(args.repeat)])
            per_step[engine] = (totals[engine] - singles[engine]) / 39
        print(table([("1 RUN step (s)", singles), ("40 RUN steps (s)", totals), ("per-step overhead (s)", per_step)], engines.available))
    finally:
        engines.cleanup()


if __name__ == "__main__":
    main()
