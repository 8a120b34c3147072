"""Exporting a big image as an OCI archive: pybuild (gzip, zstd) beside docker save and buildah push.

    .venv/bin/python benchmarks/export.py [--files 20000] [--megabytes 400] [--runs 3]

Builds ``FROM busybox`` + ``COPY src/ /src/`` of a generated context
(``--files`` files, ``--megabytes`` MB of content cut from the binaries and
text under /usr, so it compresses like a real image) with each engine, then
times, median of ``--runs``:

- pybuild, cold: ``export_oci_archive`` with ``compression=gzip`` / ``zstd``
  (``force-compression``) of an image stored with plain layers, after
  dropping every compressed form pybuild had made of them: each layer is
  compressed inside the timed region, its bytes going at once into the
  content store and into the archive, both fsynced -- what ``--output
  type=oci`` of a fresh build does;
- pybuild, warm: the same with the compressed layers already made (what a
  second export of the same build costs);
- ``docker save`` (the BuildKit engine's export; it writes plain layer tars);
- ``buildah push oci-archive:`` with ``--compression-format gzip`` / ``zstd``.

MB/s is the image's size (Docker's measure: its files) per second of wall
time.  Targets (issue 6): pybuild gzip at least docker save's throughput,
zstd at least 3x it.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import BASE_FROM, DOCKER, Engines, run  # noqa: E402
from workloads import usr_bytes  # noqa: E402

DOCKERFILE = "FROM busybox\nCOPY src/ /src/\n"
CORPUS_BYTES = 64 << 20


def corpus() -> bytes:
    """Real-world bytes from /usr, up to CORPUS_BYTES."""
    return usr_bytes(("/usr/lib", "/usr/share", "/usr/bin"), CORPUS_BYTES, 2 << 20)


def make_context(directory: Path, files: int, megabytes: int, seed: int = 6) -> int:
    """``files`` files of log-normally spread sizes totalling about ``megabytes`` MB."""
    rng = random.Random(seed)
    source = corpus()
    weights = [rng.lognormvariate(0, 1.2) for _ in range(files)]
    scale = megabytes * 1_000_000 / sum(weights)
    written = 0
    for i, weight in enumerate(weights):
        size = max(1, min(int(weight * scale), len(source) // 2))
        start = rng.randrange(0, len(source) - size)
        path = directory / "src" / f"d{i % 100:02d}" / f"e{(i // 100) % 20:02d}" / f"file{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(source[start : start + size])
        written += size
    return written


def median_time(action: Callable[[], None], before: Callable[[], None], runs: int) -> float:
    times = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class PybuildExport:
    """pybuild's exporter in this process, on the benchmark's root."""

    def __init__(self, root_path: Path, tag: str) -> None:
        from pybuild.cache import Root
        from pybuild.oci import ImageStore

        self.root = Root.open(root_path)
        self.store = ImageStore(self.root)
        self.image = self.store.get(tag)

    def size(self) -> int:
        return self.image.size

    def make_cold(self) -> None:
        """Forget every compressed form of the image's layers but the stored (plain) blobs."""
        from pybuild.cache import CacheRecord
        from pybuild.oci._export_layers import CONVERT_RECORD
        from pybuild.oci._store import SNAPSHOT_RECORD

        stored = {layer.digest for layer in self.image.layers}
        for snapshot in self.store.snapshots_for(self.image):
            key = SNAPSHOT_RECORD + snapshot
            record = self.root.index.lookup(key)
            if record is None:
                continue
            keep = {kind: blob for kind, blob in record.blobs.items() if blob.digest in stored}
            for blob in record.blobs.values():
                if blob.digest not in stored:
                    self.root.blobs.delete(blob.digest)
            self.root.index.record(key, CacheRecord(record.snapshot_id, record.diff_id, keep, meta=record.meta))
        for layer in self.image.layers:
            self.root.index.delete_record(CONVERT_RECORD + layer.diff_id)

    def export(self, dest: Path, compression: str) -> None:
        from pybuild.oci._export import export_oci_archive
        from pybuild.oci._export_layers import LayerSettings

        export_oci_archive(self.store, self.image, dest, ["bench-export:1"], layers=LayerSettings(compression, force=True))

    def close(self) -> None:
        self.root.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--megabytes", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--engines", default="pybuild,buildkit,buildah")
    args = parser.parse_args()
    engines = Engines.prepare(args.engines.split(","))
    out = engines.work / "out"
    out.mkdir()
    context = engines.work / "ctx"
    content = make_context(context, args.files, args.megabytes)
    time.sleep(1.5)  # pybuild does not trust stat keys of files changed within the last second
    rows: list[tuple[str, float, int]] = []
    try:
        tag = "bench-export:1"
        if "pybuild" in engines.available:
            engines.build("pybuild", context, DOCKERFILE, tag=tag, extra=["--compression", "none"])
            exporter = PybuildExport(engines.pybuild_root, tag)
            try:
                size = exporter.size()
                for kind in ("gzip", "zstd"):
                    dest = out / f"pybuild-{kind}.tar"
                    # like docker save's and buildah's runs below, each starts with no archive to replace
                    def cold_start(dest: Path = dest) -> None:
                        exporter.make_cold()
                        dest.unlink(missing_ok=True)

                    cold = median_time(lambda: exporter.export(dest, kind), cold_start, args.runs)
                    rows.append((f"pybuild OCI archive, {kind}, cold", cold, size))
                    warm = median_time(lambda: exporter.export(dest, kind), lambda: dest.unlink(missing_ok=True), args.runs)
                    rows.append((f"pybuild OCI archive, {kind}, warm", warm, size))
                    print(f"  pybuild {kind}: archive {dest.stat().st_size / 1e6:.0f} MB", file=sys.stderr)
            finally:
                exporter.close()
        if "buildkit" in engines.available:
            engines.build("buildkit", context, DOCKERFILE, tag=tag)
            size = int(run([DOCKER, "image", "inspect", "-f", "{{.Size}}", tag]).stdout)
            dest = out / "docker-save.tar"
            elapsed = median_time(lambda: run([DOCKER, "save", "-o", str(dest), tag]), lambda: dest.unlink(missing_ok=True), args.runs)
            rows.append(("docker save (plain layers)", elapsed, size))
            run([DOCKER, "rmi", tag])
        if "buildah" in engines.available:
            engines.build("buildah", context, DOCKERFILE, tag=tag)
            for kind in ("gzip", "zstd"):
                dest = out / f"buildah-{kind}.tar"
                push = ["buildah", "push", "--quiet", "--compression-format", kind, tag, f"oci-archive:{dest}"]
                elapsed = median_time(lambda: run(push), lambda: dest.unlink(missing_ok=True), args.runs)
                rows.append((f"buildah push oci-archive, {kind}", elapsed, size if "buildkit" in engines.available else content))
            run(["buildah", "rmi", tag])
        print(f"image: {args.files} files, {content / 1e6:.0f} MB of content; median of {args.runs}; {os.cpu_count()} CPUs")
        print("| export | seconds | MB/s | × docker save |")
        print("|---|---|---|---|")
        docker_rate = None
        for name, seconds, size in rows:
            rate = size / 1e6 / seconds
            if name.startswith("docker save"):
                docker_rate = rate
        for name, seconds, size in rows:
            rate = size / 1e6 / seconds
            ratio = f"{rate / docker_rate:.2f}" if docker_rate else "—"
            print(f"| {name} | {seconds:.2f} | {rate:.0f} | {ratio} |")
    finally:
        shutil.rmtree(out, ignore_errors=True)
        engines.cleanup()


if __name__ == "__main__":
    main()
