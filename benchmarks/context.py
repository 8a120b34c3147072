"""A big build context: cold, no-op, one-file change, `touch` of every file, one more change (issues 5, 18).

    .venv/bin/python benchmarks/context.py [--files 20000] [--megabytes 400] [--engines pybuild,buildkit]
                                           [--repeat 3] [--markdown FILE]

run_all.py's ``context`` workload alone: for each run and engine (the engines
taking turns), a new context of N files totalling M megabytes (random bytes, in
nested directories, new bytes every run) and a Dockerfile that copies it and
runs one step on it; then, after the engine's state is reset, the cold build, a
rebuild with nothing changed, a rebuild after one file changed, a rebuild after
`touch` of every file, and a rebuild after one more file changed.  Before each timed build the page cache's dirty
data is written out (``sync``), so that no build pays for the writes of the one
before it.  The report has every run's times, the pybuild/BuildKit ratios,
issue 18's targets (at most 0.5 for the rebuilds, 1.0 for the cold build, whose
peak RSS of pybuild's process tree must stay under 200 MiB) and whether each
run met them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run_all  # noqa: E402
from peers import Engines  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--engines", default="pybuild,buildkit")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every phase, each in a new context")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args()
    if "pybuild" in args.engines.split(","):
        run_all.byte_compile()
    dangling_before = {e: run_all.dangling_images(e) for e in ("buildkit", "buildah")}
    engines = Engines.prepare(args.engines.split(","))
    driver = run_all.Driver(engines, args.repeat, dangling_before)
    try:
        rows = driver.context(args.files, args.megabytes)
        table, missed = run_all.run_table(rows, driver, engines.available)
        lines = [f"context: {args.files} files, {args.megabytes} MB, {args.repeat} runs", ""]
        if missed:
            lines += ["**Targets not met**: " + "; ".join(missed), ""]
        lines += [table, "", *run_all.report_footer(engines, driver.loads, driver.notes)]
        text = "\n".join(lines) + "\n"
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
    finally:
        driver.cleanup()
        engines.cleanup()


if __name__ == "__main__":
    main()
