#!/usr/bin/env python3
"""Runner B's rebuild from a registry cache: pybuild against BuildKit's ``--cache-from``.

Two CI runners share one registry (Debian's ``docker-registry`` on
127.0.0.1).  Runner A builds the workload and exports its cache; runner B
starts empty -- no images, no build cache, not even the base -- and builds
the same checkout with the cache imported.  Timed: runner B's build.

- pybuild: a fresh root per round; ``--cache-from`` the image A pushed with
  ``--cache-to type=inline`` (BuildKit's mode), and also the cache artifact
  A exported with ``--cache-to type=registry,mode=max``.
- BuildKit (Debian's docker.io, ``DOCKER_BUILDKIT=1 --network=host``): A
  builds with ``--build-arg BUILDKIT_INLINE_CACHE=1`` and pushes; before
  each B round every image and all build cache are removed.

Both B builds end with the image in the engine's local store (so both fetch
the layer blobs; neither has to run a step).

    python benchmarks/remote_cache.py [--repeat 3] [--files 2000] [--megabytes 64]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import DOCKER, PYBUILD, REPO, ensure_dockerd, median, run  # noqa: E402

WORKLOAD = """\
FROM {base}
WORKDIR /app
COPY deps/ /app/deps/
RUN cat deps/* | sha256sum > deps.sum && dd if=/dev/urandom of=/app/vendor.bin bs=1M count={megabytes} 2>/dev/null
COPY src/ /app/src/
RUN find src -type f | sort | xargs cat | sha256sum > build.sum
RUN mkdir -p /out && cp -r src /out/ && du -s /out > /out/size
CMD ["cat", "/app/build.sum"]
"""


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = work / "registry.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {work / 'registry'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("docker-registry did not start")


def make_context(path: Path, files: int, megabytes: int, base: str) -> None:
    (path / "src").mkdir(parents=True)
    (path / "deps").mkdir()
    for i in range(files):
        (path / "src" / f"module{i:05d}.py").write_text(f"# module {i}\n" + "x = 1\n" * 50)
    for i in range(20):
        (path / "deps" / f"dep{i}.txt").write_text(f"dependency {i}\n" * 100)
    (path / "Dockerfile").write_text(WORKLOAD.format(base=base, megabytes=megabytes))


def pybuild(root: Path, *args: str) -> float:
    started = time.perf_counter()
    run([*PYBUILD, "build", "-q", "--network=none", *args], env={"PYBUILD_ROOT": str(root)})
    return time.perf_counter() - started


def docker_reset(host: str) -> None:
    """Runner B's docker starts empty: this benchmark's images (base included) and all build cache go."""
    names = run([DOCKER, "images", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.decode().split()
    ours = [n for n in names if n.startswith((f"{host}/bench/", "app-bk:"))]
    if ours:
        subprocess.run([DOCKER, "rmi", "-f", *ours], capture_output=True)
    run([DOCKER, "builder", "prune", "-af"], env={"DOCKER_BUILDKIT": "1"})


def docker_build(context: Path, *args: str) -> float:
    started = time.perf_counter()
    run([DOCKER, "build", "-q", "--network=host", *args, str(context)], env={"DOCKER_BUILDKIT": "1"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--megabytes", type=int, default=64)
    parser.add_argument("--no-buildkit", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pybuild-bench-cache-"))
    registry, host = start_registry(work)
    try:
        base = f"{host}/bench/busybox:1"
        rootfs = work / "busybox.tar"
        run([sys.executable, str(REPO / "examples" / "busybox_rootfs.py"), str(rootfs)])
        seed = work / "seed-root"
        run([*PYBUILD, "import", str(rootfs), base], env={"PYBUILD_ROOT": str(seed)})
        run([*PYBUILD, "push", base], env={"PYBUILD_ROOT": str(seed)})
        context = work / "checkout"
        make_context(context, args.files, args.megabytes, base)

        rows: dict[str, list[float]] = {}
        a_root = work / "runner-a"
        cold = pybuild(a_root, "-t", f"{host}/bench/app-py:1", "--cache-to", "type=inline", "--push", str(context))
        pybuild(a_root, "--cache-to", f"type=registry,ref={host}/bench/cache-py:1,mode=max", str(context))
        print(f"pybuild runner A (cold, push): {cold:.2f}s", file=sys.stderr)
        for name, flags in {
            "pybuild inline": ["--cache-from", f"{host}/bench/app-py:1"],
            "pybuild registry mode=max": ["--cache-from", f"type=registry,ref={host}/bench/cache-py:1"],
            "pybuild inline + push (layers stay in the registry)": [
                "--cache-from", f"{host}/bench/app-py:1", "-t", f"{host}/bench/app-py:b", "--push",
            ],
        }.items():
            for i in range(args.repeat):
                rows.setdefault(name, []).append(pybuild(work / f"runner-b-{name.split()[1]}-{i}", *flags, str(context)))

        if not args.no_buildkit and shutil.which(DOCKER):
            ensure_dockerd()
            docker_reset(host)
            cold = docker_build(context, "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", f"{host}/bench/app-bk:1")
            run([DOCKER, "push", f"{host}/bench/app-bk:1"])
            print(f"BuildKit runner A (cold): {cold:.2f}s", file=sys.stderr)
            for _ in range(args.repeat):
                docker_reset(host)
                rows.setdefault("BuildKit inline (--cache-from)", []).append(
                    docker_build(context, "--cache-from", f"{host}/bench/app-bk:1", "-t", "app-bk:b")
                )
            docker_reset(host)

        print(f"runner B rebuild, {args.files} files + {args.megabytes} MB layer, median of {args.repeat}:\n")
        print("| runner B | median | runs |\n|---|---|---|")
        for name, times in rows.items():
            print(f"| {name} | {median(times):.2f}s | {' '.join(f'{t:.2f}' for t in times)} |")
    finally:
        registry.terminate()
        registry.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
