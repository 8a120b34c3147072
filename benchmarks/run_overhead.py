"""Per-step overhead of RUN: a 40-step ``RUN true`` chain with pybuild, BuildKit and Buildah.

    .venv/bin/python benchmarks/run_overhead.py [--repeat N]

Each engine builds, without cache, a Dockerfile of 40 ``RUN true N`` steps
and one of a single step; per-step overhead = (t40 - t1) / 39, so start-up,
base image and export costs cancel out.  Medians of --repeat runs (default 3).
Target (issue 4): pybuild's per-step overhead at most BuildKit's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import Engines, median, table  # noqa: E402


def chain(steps: int) -> str:
    return "FROM busybox\n" + "".join(f"RUN true {i}\n" for i in range(steps))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", default="pybuild,buildkit,buildah")
    args = parser.parse_args()
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
