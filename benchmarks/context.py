"""A big build context: cold build, no-op rebuild, `touch` of every file, one-file change (issue 5).

    .venv/bin/python benchmarks/context.py [--files 20000] [--megabytes 400] [--engines pybuild,buildkit]

Generates a context of N files totalling M megabytes (random bytes, in
nested directories) and a Dockerfile that copies it and runs one step on
it; then times, for each engine in the same run: the cold build, a
rebuild with nothing changed, a rebuild after `touch` of every file, and a
rebuild after one file changed (the rebuilds: median of ``--repeat``).
Before each timed build the page cache's dirty data is written out
(``sync``), so that no build pays for the writes of the one before it.
Targets: no-op and one-file-change rebuilds at most BuildKit's time.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import Engines, table  # noqa: E402

DOCKERFILE = "FROM busybox\nCOPY src/ /src/\nRUN ls -R /src | wc -l > /count\n"


def make_context(directory: Path, files: int, megabytes: int, seed: int = 3) -> list[Path]:
    rng = random.Random(seed)
    size = megabytes * 1_000_000 // files
    paths = []
    for i in range(files):
        path = directory / "src" / f"d{i % 100:02d}" / f"e{(i // 100) % 20:02d}" / f"file{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--engines", default="pybuild,buildkit")
    parser.add_argument("--repeat", type=int, default=3, help="runs of the no-op and one-change rebuilds (median)")
    args = parser.parse_args()
    engines = Engines.prepare(args.engines.split(","))
    try:
        results: dict[str, dict[str, float]] = {"cold": {}, "no-op rebuild": {}, "touch every file": {}, "one file changed": {}}
        for engine in engines.available:
            context = engines.work / f"ctx-{engine}"
            paths = make_context(context, args.files, args.megabytes)
            # pybuild does not trust stat keys of files changed within the last
            # second (a change in the same clock tick could go unseen); a real
            # context is not being written while it is built
            time.sleep(1.5)
            tag = f"bench-context-{engine}"

            def timed_build() -> float:
                # each timed build starts with the page cache's dirty data written
                # out: a build must not pay for the writes of the one before it
                os.sync()
                return engines.build(engine, context, DOCKERFILE, tag=tag)

            results["cold"][engine] = timed_build()
            results["no-op rebuild"][engine] = statistics.median(timed_build() for _ in range(args.repeat))
            for path in paths:
                os.utime(path)
            results["touch every file"][engine] = timed_build()
            changes = []
            for round_ in range(args.repeat):
                paths[len(paths) // 2].write_bytes(f"changed {round_}".encode())
                changes.append(timed_build())
            results["one file changed"][engine] = statistics.median(changes)
        print(f"context: {args.files} files, {args.megabytes} MB")
        print(table(list(results.items()), engines.available))
    finally:
        engines.cleanup()


if __name__ == "__main__":
    main()
