"""Layer tree → compressed layer throughput, against `tar -c | gzip`.

    .venv/bin/python benchmarks/layer_throughput.py [--size-mb 400] [--files 20000] [--runs 3]

Generates a tree of about ``--size-mb`` MB in ``--files`` files (sizes
log-normally spread, a few large files; content cut from the binaries and
text under /usr so it compresses like a real image) and times, median of
``--runs`` with a warm page cache:

- ``write_layer`` to a null sink (the tar alone),
- ``compress_layer`` gzip (default level) and zstd (level 3),
- ``apply_layer`` of the gzip blob into a fresh directory,
- ``flatten_into`` of the tree,
- ``tar -c | gzip`` (GNU tar, gzip -6) and ``tar -c | zstd -3 -T0`` on the same tree.

MB/s is tree content bytes (file data) per second of wall time.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pybuild.oci._compression import compress_layer
from pybuild.oci._layers import write_layer
from pybuild.oci._tar_apply import apply_layer
from pybuild.oci._tar_flatten import flatten_into
from workloads import usr_bytes  # noqa: E402

CORPUS_BYTES = 48 << 20


class _Null:
    def write(self, data: bytes) -> int:
        return len(data)


def corpus() -> bytes:
    """Real-world bytes: binaries and docs from /usr, up to CORPUS_BYTES."""
    tops = ("/usr/lib/x86_64-linux-gnu", "/usr/share/doc", "/usr/bin", "/usr/lib")
    return usr_bytes(tops, CORPUS_BYTES, 4 << 20) or os.urandom(CORPUS_BYTES)


def generate(dest: Path, size: int, files: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    data = corpus()
    weights = [rng.lognormvariate(0, 1.6) for _ in range(files)]
    scale = size / sum(weights)
    total = 0
    for i, weight in enumerate(weights):
        directory = dest / f"d{i % 97:02d}" / f"s{i % 13}"
        directory.mkdir(parents=True, exist_ok=True)
        length = min(int(weight * scale), len(data) - 1)
        start = rng.randrange(0, len(data) - length)
        (directory / f"f{i:05d}.bin").write_bytes(data[start : start + length])
        total += length
    return total


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        # Write back earlier runs' dirty pages first, so one run does not pay for another.
        os.sync()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def shell(command: str, tree: Path) -> None:
    subprocess.run(["sh", "-c", command], cwd=tree, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=400)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="pybuild-bench-") as tmp:
        tree = Path(tmp) / "tree"
        tree.mkdir()
        content = generate(tree, args.size_mb * 1_000_000, args.files)
        mb = content / 1e6
        print(f"tree: {args.files} files, {mb:.0f} MB of content")
        write_layer(tree, _Null())  # warm the page cache

        results: dict[str, float] = {}
        results["write_layer (tar only)"] = timed(lambda: write_layer(tree, _Null()), args.runs)
        sizes: dict[str, int] = {}
        for kind in ("gzip", "zstd"):

            def run(kind: str = kind) -> None:
                sizes[kind] = compress_layer(tree, kind, None, _Null()).size

            results[f"compress_layer {kind}"] = timed(run, args.runs)

        blob = io.BytesIO()
        compress_layer(tree, "gzip", None, blob)

        counter = iter(range(1_000_000))

        def apply() -> None:
            dest = Path(tmp) / f"applied{next(counter)}"
            dest.mkdir()
            apply_layer(io.BytesIO(blob.getvalue()), dest)

        def gnu_untar() -> None:
            dest = Path(tmp) / f"untarred{next(counter)}"
            dest.mkdir()
            subprocess.run(["tar", "-xzf", "-", "-C", str(dest)], input=blob.getvalue(), check=True)

        results["apply_layer gzip"] = timed(apply, args.runs)
        results["tar -xzf (GNU tar)"] = timed(gnu_untar, args.runs)

        def flatten() -> None:
            flatten_into([tree], Path(tmp) / f"flat{next(counter)}")

        results["flatten_into (copy)"] = timed(flatten, args.runs)
        for leftover in Path(tmp).iterdir():
            if leftover != tree:
                shutil.rmtree(leftover)

        results["tar -c | gzip (-6)"] = timed(lambda: shell("tar -cf - . | gzip -6 > /dev/null", tree), args.runs)
        if shutil.which("zstd"):
            results["tar -c | zstd -3 -T0"] = timed(lambda: shell("tar -cf - . | zstd -q -3 -T0 > /dev/null", tree), args.runs)

        for name, seconds in results.items():
            print(f"{name:28s} {seconds:7.2f} s  {mb / seconds:8.0f} MB/s")
        for kind, size in sizes.items():
            print(f"{kind} blob: {size / 1e6:.0f} MB ({size / content:.1%} of content)")


if __name__ == "__main__":
    main()
