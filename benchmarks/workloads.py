"""The workloads of ``benchmarks/run_all.py``: Dockerfiles, contexts and base images.

Each Dockerfile names its base ``busybox``, ``gcc:local`` or ``debian:local``;
each engine's store knows them by another name (``peers.BASE_FROM`` for busybox,
which ``peers.Engines.build`` puts in, :data:`GCC_FROM` and :data:`DEBIAN_FROM`,
which :func:`name_gcc` puts in).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import DOCKER, PYBUILD, REPO, Engines, run  # noqa: E402

EXAMPLES = REPO / "examples"
GCC_FROM = {"pybuild": "gcc:local", "buildkit": "pybuild-bench/gcc:local", "buildah": "localhost/pybuild-bench-gcc:local"}
DEBIAN_FROM = {"pybuild": "debian:local", "buildkit": "pybuild-bench/debian:local", "buildah": "localhost/pybuild-bench-debian:local"}

# Debian bookworm made here by debootstrap (minbase), kept between runs: making it
# downloads ~40 MB and takes a minute or two.  build/ is not tracked by git.
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_TAR = REPO / "build" / "bench" / f"debian-{DEBIAN_SUITE}-minbase.tar"

# The download-heavy step of issue 18: Debian's index and python3 with its
# dependencies (~30 MB) from Debian's mirror.  Run with the network: pybuild's
# default network, BuildKit's --network=host (peers.Engines.build).
APT = "FROM debian:local\nRUN apt-get update && apt-get install -y python3\n"

# Four independent stages that wait (sleep 2) and write 20 MB each, copied into a
# final stage (issue 18's table): what an engine overlaps without a job limit.
WAIT_STAGES = 4
STAGES = "FROM busybox AS base\nRUN echo base > /base\n" + "".join(
    f"\nFROM base AS s{i}\nRUN sleep 2 && dd if=/dev/urandom of=/out{i} bs=1M count=20 2>/dev/null\n" for i in range(WAIT_STAGES)
) + "\nFROM busybox\n" + "".join(f"COPY --from=s{i} /out{i} /\n" for i in range(WAIT_STAGES))

# A small project: a few source files copied into an image and one step on them.
SMALL = "FROM busybox\nWORKDIR /app\nCOPY . /app/\nRUN cat /app/src/*.txt | wc -c > /app/size\n"

# Four independent stages of about one second of CPU each (sha256 of 200 MB
# of zeros), copied into a final stage: what a parallel engine overlaps.
PARALLEL_STAGES = 4
PARALLEL = "FROM busybox AS base\nRUN echo base > /base\n" + "".join(
    f"\nFROM base AS s{i}\nRUN dd if=/dev/zero bs=1M count=200 2>/dev/null | sha256sum > /out{i}\n" for i in range(PARALLEL_STAGES)
) + "\nFROM busybox\n" + "".join(f"COPY --from=s{i} /out{i} /\n" for i in range(PARALLEL_STAGES))


def run_chain(steps: int) -> str:
    """``steps`` trivial RUN steps (as benchmarks/run_overhead.py)."""
    return "FROM busybox\n" + "".join(f"RUN true {i}\n" for i in range(steps))


# The big-context workload's Dockerfile (as benchmarks/context.py).
CONTEXT = "FROM busybox\nCOPY src/ /src/\nRUN ls -R /src | wc -l > /count\n"

# The multi-stage C build is the c-hello example itself.
C_BUILD = (EXAMPLES / "c-hello" / "Dockerfile.multi").read_text()
C_SOURCES = [EXAMPLES / "c-hello" / "hello.c"]

# An image of about 100 MB of real-world bytes (binaries and text from /usr)
# on top of busybox, for the export workload.
EXPORT = "FROM busybox\nCOPY data/ /data/\n"


def name_gcc(engine: str, body: str) -> str:
    """The Dockerfile with the gcc and Debian bases named as ``engine``'s store knows
    them (``peers.Engines.build`` names the busybox base)."""
    return body.replace("FROM gcc:local", f"FROM {GCC_FROM[engine]}").replace("FROM debian:local", f"FROM {DEBIAN_FROM[engine]}")



def make_small_project(directory: Path, files: int = 20) -> Path:
    """A small project's context: ``files`` short text files and a .dockerignore."""
    for i in range(files):
        path = directory / "src" / f"part{i:02d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"line {i}\n" * 20)
    (directory / ".dockerignore").write_text("Dockerfile.*\n")
    return directory


def debian_rootfs() -> Path:
    """The Debian base's root file system tar, made by debootstrap the first time
    (``apt-get install debootstrap``) and kept in build/bench/ afterwards."""
    if DEBIAN_TAR.exists():
        return DEBIAN_TAR
    if shutil.which("debootstrap") is None:
        raise RuntimeError("the apt workload needs debootstrap (apt-get install -y debootstrap)")
    DEBIAN_TAR.parent.mkdir(parents=True, exist_ok=True)
    tree = DEBIAN_TAR.with_suffix(".tree")
    partial = DEBIAN_TAR.with_suffix(".partial")
    shutil.rmtree(tree, ignore_errors=True)
    try:
        run(["debootstrap", "--variant=minbase", DEBIAN_SUITE, str(tree), DEBIAN_MIRROR])
        # apt's downloaded packages are not part of a base image
        subprocess.run(["find", str(tree / "var/cache/apt/archives"), "-name", "*.deb", "-delete"], check=False)
        run(["tar", "--numeric-owner", "--xattrs", "-C", str(tree), "-cf", str(partial), "."])
        partial.rename(DEBIAN_TAR)
    finally:
        shutil.rmtree(tree, ignore_errors=True)
        partial.unlink(missing_ok=True)
    return DEBIAN_TAR


def make_random_context(directory: Path, files: int, megabytes: int, seed: int) -> list[Path]:
    """``files`` files of random bytes, ``megabytes`` MB in all, in 100 x 20 directories
    (benchmarks/context.py's layout with a seed of the caller's choosing)."""
    rng = random.Random(seed)
    size = megabytes * 1_000_000 // files
    paths = []
    for i in range(files):
        path = directory / "src" / f"d{i % 100:02d}" / f"e{(i // 100) % 20:02d}" / f"file{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
        paths.append(path)
    return paths


def usr_bytes(tops: tuple[str, ...], wanted: int, per_file: int) -> bytes:
    """Real-world bytes: the first ``per_file`` bytes of each file under ``tops`` (binaries
    and text under /usr), walked in name order, until there are ``wanted`` bytes or more."""
    parts: list[bytes] = []
    total = 0
    for top in tops:
        for parent, dirs, names in os.walk(top):
            dirs.sort()
            for name in sorted(names):
                path = os.path.join(parent, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    with open(path, "rb") as f:
                        data = f.read(per_file)
                except OSError:
                    continue
                parts.append(data)
                total += len(data)
                if total >= wanted:
                    return b"".join(parts)
    return b"".join(parts)


def make_real_bytes_context(directory: Path, megabytes: int, files: int = 2000) -> int:
    """``files`` files cut from the binaries and text under /usr, ``megabytes`` MB in all,
    so the layer compresses like a real image's.  Returns the bytes written."""
    wanted = megabytes * 1_000_000
    data = usr_bytes(("/usr/lib", "/usr/share", "/usr/bin"), wanted, 4 << 20)[:wanted]
    per_file = max(1, len(data) // files)
    for i in range(files):
        path = directory / "data" / f"d{i % 50:02d}" / f"part{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[i * per_file : (i + 1) * per_file if i < files - 1 else len(data)])
    return len(data)


def import_gcc(engines: Engines, rootfs_tar: Path) -> None:
    """Put the gcc base (made by examples/base-images/make-gcc-rootfs) into each engine's
    store the way peers.Engines.prepare puts busybox there."""
    import_base(engines, rootfs_tar, GCC_FROM, "gcc")


def import_base(engines: Engines, rootfs_tar: Path, names: dict[str, str], short: str) -> None:
    """Import a root file system tar into each engine's store under ``names[engine]``."""
    if "pybuild" in engines.available:
        run([*PYBUILD, "import", str(rootfs_tar), names["pybuild"]], env=engines.pybuild_env())
    if "buildkit" in engines.available:
        run([DOCKER, "import", str(rootfs_tar), names["buildkit"]])
        if "buildah" in engines.available:
            archive = engines.work / f"{short}-docker.tar"
            run([DOCKER, "save", names["buildkit"], "-o", str(archive)])
            run(["buildah", "pull", "-q", f"docker-archive:{archive}"])
            image = run(["buildah", "images", "-q", "--filter", f"reference=localhost/pybuild-bench/{short}"]).stdout.decode().split()
            run(["buildah", "tag", image[0] if image else f"localhost/pybuild-bench/{short}:local", names["buildah"]])
            archive.unlink()


def copy_c_context(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for source in C_SOURCES:
        shutil.copy2(source, directory / source.name)
    return directory

