"""Benchmark: hashing a build context with pybuild.cache.ContextHasher.

Generates a context of N files / M megabytes (default 20,000 files, 400 MB:
mostly small source-like files plus a few large assets), then times:

  cold    first hash, empty stat cache (files in the page cache, unless
          --drop-caches, which needs root and slows the whole machine briefly)
  warm    second hash: the stat cache says no file needs reading
  touch   after `touch` of every file: every file is read again (new ctime),
          and the digest must not change

and, for scale, `sha256sum` of the same files.  Usage:

    .venv/bin/python benchmarks/context_hash.py [--files N] [--mbytes M] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pybuild.cache import ContextHasher, DockerIgnore, Root


def generate(context: Path, files: int, total_bytes: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    # 95% small files (~1-16 KiB), 5% large ones carrying the rest of the bytes
    small = [rng.randint(1 << 10, 16 << 10) for _ in range(int(files * 0.95))]
    large_count = files - len(small)
    rest = max(total_bytes - sum(small), large_count)
    large = [rest // large_count] * large_count
    sizes = small + large
    rng.shuffle(sizes)
    noise = os.urandom(1 << 20)
    per_dir = 100
    for i, size in enumerate(sizes):
        directory = context / f"pkg{i // (per_dir * 20):03d}" / f"mod{(i // per_dir) % 20:02d}"
        if i % per_dir == 0:
            directory.mkdir(parents=True, exist_ok=True)
        offset = rng.randrange(0, len(noise) - min(size, len(noise)) + 1)
        with open(directory / f"file{i:05d}.dat", "wb") as f:
            remaining = size
            header = b"%d\n" % i  # every file distinct
            f.write(header)
            remaining -= len(header)
            while remaining > 0:
                chunk = noise[offset : offset + min(remaining, len(noise) - offset)] or noise[:remaining]
                f.write(chunk)
                remaining -= len(chunk)
                offset = 0


def timed(label: str, fn):
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    return label, elapsed, result


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mbytes", type=int, default=400)
    parser.add_argument("--dir", type=Path, default=None, help="where to make the context (default: a temp dir)")
    parser.add_argument("--drop-caches", action="store_true", help="drop the page cache before the cold run (root)")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-", dir=args.dir))
    try:
        context = work / "context"
        t0 = time.perf_counter()
        generate(context, args.files, args.mbytes << 20)
        generated = time.perf_counter() - t0
        file_count = sum(1 for p in context.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in context.rglob("*") if p.is_file())
        print(f"context: {file_count} files, {size / (1 << 20):.0f} MiB (generated in {generated:.1f}s)")
        time.sleep(1.1)  # let the newest files leave the stat cache's racy window

        with Root.open(work / "root") as root:
            hasher = ContextHasher(context, DockerIgnore(), root.index)
            if args.drop_caches:
                drop_caches()
            rows = [timed("cold (empty stat cache)", hasher.whole)]
            rows.append(timed("warm (stat cache)", hasher.whole))
            subprocess.run(["find", str(context), "-exec", "touch", "{}", "+"], check=True)
            rows.append(timed("after touch of every file", hasher.whole))
            time.sleep(1.1)
            rows.append(timed("after touch, re-cached", hasher.whole))
            rows.append(timed("warm again", hasher.whole))

        digests = {sel.digest() for _, _, sel in rows}
        assert len(digests) == 1, "the digest must not depend on mtime/ctime or the stat cache"
        width = max(len(label) for label, _, _ in rows)
        print(f"{'run'.ljust(width)}  seconds  files read  MiB read  stat-cache hits")
        for label, elapsed, sel in rows:
            s = sel.stats
            print(
                f"{label.ljust(width)}  {elapsed:7.3f}  {s.files_hashed:10d}  {s.bytes_hashed / (1 << 20):8.0f}"
                f"  {s.stat_cache_hits:15d}"
            )

        sha256sum = shutil.which("sha256sum")
        if sha256sum:
            start = time.perf_counter()
            subprocess.run(
                f"find {context} -type f -print0 | xargs -0 {sha256sum} > /dev/null", shell=True, check=True
            )
            print(f"{'sha256sum (reference)'.ljust(width)}  {time.perf_counter() - start:7.3f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
