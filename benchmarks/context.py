"""A big build context: cold build, no-op rebuild, `touch` of every file, one-file change (issue 5).

    .venv/bin/python benchmarks/context.py [--files 20000] [--megabytes 400] [--engines pybuild,buildkit]

Generates a context of N files totalling M megabytes (random bytes, in
nested directories) and a Dockerfile that copies it and runs one step on
it; then times, for each engine in the same run: the cold build, a
rebuild with nothing changed, a rebuild after `touch` of every file, and a
rebuild after one file changed (the rebuilds: median of ``--repeat``).
The engines take turns phase by phase, each in its own copy of the context.
Before each timed build the page cache's dirty data is written out
(``sync``), so that no build pays for the writes of the one before it.
Targets: no-op and one-file-change rebuilds at most BuildKit's time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import Engines, table  # noqa: E402
from workloads import make_random_context  # noqa: E402

DOCKERFILE = "FROM busybox\nCOPY src/ /src/\nRUN ls -R /src | wc -l > /count\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--engines", default="pybuild,buildkit")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the no-op and one-change rebuilds (median)")
    args = parser.parse_args()
    engines = Engines.prepare(args.engines.split(","))
    try:
        contexts = {engine: engines.work / f"ctx-{engine}" for engine in engines.available}
        paths = {engine: make_random_context(context, args.files, args.megabytes, seed=3) for engine, context in contexts.items()}
        # pybuild does not trust stat keys of files changed within the last
        # second (a change in the same clock tick could go unseen); a real
        # context is not being written while it is built
        time.sleep(1.5)

        def timed_build(engine: str) -> float:
            # each timed build starts with the page cache's dirty data written
            # out: a build must not pay for the writes of the one before it
            os.sync()
            return engines.build(engine, contexts[engine], DOCKERFILE, tag=f"bench-context-{engine}")

        def each_engine(round_: int) -> list[str]:
            # the engines take turns, the first of one round last in the next: this
            # disk's speed drifts over minutes, and no engine should always go first
            order = list(engines.available)
            return order if round_ % 2 == 0 else order[::-1]

        phases = ("cold", "no-op rebuild", "touch every file", "one file changed")
        runs: dict[str, dict[str, list[float]]] = {phase: {e: [] for e in engines.available} for phase in phases}
        for engine in each_engine(0):
            runs["cold"][engine].append(timed_build(engine))
        for round_ in range(args.repeat):
            for engine in each_engine(round_):
                runs["no-op rebuild"][engine].append(timed_build(engine))
        for engine in each_engine(1):
            for path in paths[engine]:
                os.utime(path)
            runs["touch every file"][engine].append(timed_build(engine))
        for round_ in range(args.repeat):
            for engine in each_engine(round_):
                paths[engine][len(paths[engine]) // 2].write_bytes(f"changed {round_}".encode())
                runs["one file changed"][engine].append(timed_build(engine))
        medians = [(phase, {e: statistics.median(times) for e, times in by_engine.items()}) for phase, by_engine in runs.items()]
        print(f"context: {args.files} files, {args.megabytes} MB")
        print(table(medians, engines.available))
    finally:
        engines.cleanup()


if __name__ == "__main__":
    main()
