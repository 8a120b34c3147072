"""Two platforms from one Dockerfile: pybuild, BuildKit and Buildah, cold builds.

    .venv/bin/python benchmarks/multiarch.py [--repeat 3] [--engines pybuild,buildkit,buildah]
                                             [--only example,emulated,noop] [--steps 10]
                                             [--markdown FILE]

Workloads (benchmarks/README.md, "multiarch.py", explains the method):

- ``example``: examples/multiarch, a C program cross-compiled natively for linux/amd64 and
  linux/arm64 in a ``FROM --platform=$BUILDPLATFORM`` stage (nothing emulated);
- ``emulated``: ``FROM busybox:$TARGETARCH`` and ``--steps`` RUN steps of busybox work, for
  linux/amd64 and linux/arm64 (the arm64 steps run under QEMU);
- ``noop``: a no-op rebuild for the host's platform alone, first with QEMU's arm64 handler
  registered, then with every handler of qemu-user-static (BuildKit probes each registered
  emulator on every build; pybuild only when a build needs that platform).

Each engine builds both platforms its own way:

- pybuild: one ``pybuild build --platform linux/amd64,linux/arm64`` (one index);
- Buildah: one ``buildah build --platform linux/amd64,linux/arm64 --manifest NAME``;
- BuildKit: Debian's docker.io 20.10 stores one platform per image, so ``DOCKER_BUILDKIT=1
  docker build --platform P`` runs once per platform and its cell is the SUM of the two
  (both are also shown on their own).

The example and emulated builds are cold: ``--no-cache``, and before each timed run (untimed)
the engine's result of the previous run is removed and its dangling images pruned.  QEMU's handlers are registered
(``pybuild binfmt --install linux/arm64``'s function) for the run only: the ones this script
registered are removed at the end, so the machine is left as it was found.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peers import DOCKER, PYBUILD, REPO, Engines, median, run, table  # noqa: E402
from run_all import byte_compile, dangling_images, load_average, reason, report_footer  # noqa: E402

PLATFORMS = ("linux/amd64", "linux/arm64")
BUILD_PLATFORM = "linux/amd64"  # this machine's
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")
EXAMPLE = REPO / "examples" / "multiarch"
CROSS_PACKAGES = ("gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross")
ARM64_BUSYBOX = REPO / "build" / "debs" / "busybox-static-arm64" / "bin" / "busybox"

# How each engine's store names the bases of the Dockerfiles below (pybuild's names are theirs).
GCC_CROSS = {"pybuild": "gcc-cross:local", "buildkit": "pybuild-bench/gcc-cross:local", "buildah": "localhost/pybuild-bench-gcc-cross:local"}
BUSYBOX = {"pybuild": "busybox", "buildkit": "pybuild-bench/busybox", "buildah": "localhost/pybuild-bench-busybox"}  # :amd64, :arm64
BASE_NAMES = ("busybox:amd64", "busybox:arm64", "gcc-cross:local")
RESULT = "pybuild-bench-multiarch"

Row = tuple[str, dict[str, float]]


def emulated_dockerfile(steps: int) -> str:
    """``steps`` RUN steps of busybox work: a shell loop, a checksum, a file written."""
    body = "".join(
        f"RUN n=0; while [ $n -lt 3000 ]; do n=$((n+1)); done; sha256sum /bin/busybox > /sum{i}; echo $n {i} > /count{i}\n"
        for i in range(steps)
    )
    return "FROM busybox:$TARGETARCH\n" + body + "RUN uname -m > /machine\n"


# The no-op workload: a host-platform build whose every step is cached.  BuildKit probes
# each registered emulator on every build; pybuild asks about a platform only when a build
# needs it.
NOOP = "FROM busybox:amd64\nRUN echo cached > /cached\n"


def dockerfile_for(engine: str, text: str) -> str:
    """The Dockerfile with its bases named as ``engine``'s store knows them.

    Buildah 1.28 needs two changes to build what BuildKit builds: it expands TARGETARCH in a
    FROM line only when a global ``ARG TARGETARCH`` declares it (which BuildKit 20.10 would
    turn into an empty value), and it looks for a ``FROM --platform=$BUILDPLATFORM`` stage's
    local base under the *target's* platform ("image not known" for arm64), so its copy
    names the build platform itself."""
    text = text.replace(" gcc-cross:local", f" {GCC_CROSS[engine]}").replace("FROM busybox:", f"FROM {BUSYBOX[engine]}:")
    if engine == "buildah":
        text = "ARG TARGETARCH\n" + text.replace("--platform=$BUILDPLATFORM", f"--platform={BUILD_PLATFORM}")
    return text


def peer_name(engine: str, base: str) -> str:
    """``base`` (one of BASE_NAMES) as ``engine``'s store names it."""
    repository, _, tag = base.partition(":")
    return f"{BUSYBOX[engine]}:{tag}" if repository == "busybox" else GCC_CROSS[engine]


# ---------------------------------------------------------------- bases in every store


def make_bases(engines: Engines) -> None:
    """busybox:amd64, busybox:arm64 and gcc-cross:local in each engine's store: made here from
    Debian packages, imported into pybuild with their platform, and handed to the peers as
    docker-archives written by ``pybuild save`` (docker load, buildah pull docker-archive:)."""
    work = engines.work
    amd64_tar, arm64_tar, gcc_tar = work / "busybox-amd64.tar", work / "busybox-arm64.tar", work / "gcc-cross.tar"
    run([sys.executable, str(REPO / "examples" / "busybox_rootfs.py"), str(amd64_tar)])
    run([sys.executable, str(REPO / "examples" / "busybox_rootfs.py"), "--arch", "arm64", str(arm64_tar)])
    run([sys.executable, str(REPO / "examples" / "base-images" / "make-gcc-rootfs"), *[f"--package={p}" for p in CROSS_PACKAGES], str(gcc_tar)])
    bases = zip(BASE_NAMES, ("linux/amd64", "linux/arm64", "linux/amd64"), (amd64_tar, arm64_tar, gcc_tar))
    for name, platform, tar in bases:
        run([*PYBUILD, "import", "--platform", platform, str(tar), name], env=engines.pybuild_env())
        tar.unlink()
        peers = [e for e in ("buildkit", "buildah") if e in engines.available]
        if not peers:
            continue
        archive = work / "base-archive.tar"
        docker_name = peer_name("buildkit", name)
        run([*PYBUILD, "tag", name, docker_name], env=engines.pybuild_env())
        run([*PYBUILD, "save", "-o", str(archive), docker_name], env=engines.pybuild_env())
        if "buildkit" in peers:
            run([DOCKER, "load", "-q", "-i", str(archive)])
        if "buildah" in peers:
            pulled = run(["buildah", "pull", "-q", f"docker-archive:{archive}"]).stdout.decode().split()
            run(["buildah", "tag", pulled[-1], peer_name("buildah", name)])
        archive.unlink()


def drop_bases(engines: Engines) -> None:
    for name in BASE_NAMES:
        if "buildkit" in engines.available:
            subprocess.run([DOCKER, "rmi", peer_name("buildkit", name)], capture_output=True)
        if "buildah" in engines.available:  # the tag, and the name the docker-archive gave it
            subprocess.run(["buildah", "rmi", peer_name("buildah", name), peer_name("buildkit", name)], capture_output=True)


# ---------------------------------------------------------------- one cold build


def forget_result(engine: str, engines: Engines) -> None:
    """Untimed, before each run: the previous run's result and the dangling images it left."""
    if engine == "pybuild":
        subprocess.run([*PYBUILD, "rmi", RESULT], env={**engines.pybuild_env(), "PATH": "/usr/bin:/bin"}, capture_output=True)
        subprocess.run([*PYBUILD, "prune", "-f"], env={**engines.pybuild_env(), "PATH": "/usr/bin:/bin"}, capture_output=True)
    elif engine == "buildkit":
        for platform in PLATFORMS:
            subprocess.run([DOCKER, "rmi", "-f", f"{RESULT}:{platform.split('/')[1]}"], capture_output=True)
        subprocess.run([DOCKER, "image", "prune", "-f"], capture_output=True)
    else:
        subprocess.run(["buildah", "manifest", "rm", RESULT], capture_output=True)
        subprocess.run(["buildah", "rmi", "--prune"], capture_output=True)


def build(engine: str, engines: Engines, context: Path, text: str) -> dict[str, float]:
    """One cold two-platform build: wall times by platform (one entry "both" for the engines
    that build both in one command)."""
    dockerfile = context / f"Dockerfile.{engine}"
    dockerfile.write_text(dockerfile_for(engine, text))
    forget_result(engine, engines)
    if engine == "pybuild":
        argv = [*PYBUILD, "build", "-q", "--no-cache", "--network=none", "--platform", ",".join(PLATFORMS), "-f", str(dockerfile), "-t", RESULT, str(context)]
        return {"both": _timed(argv, engines.pybuild_env())}
    if engine == "buildah":
        argv = ["buildah", "build", "-q", "--runtime=runc", "--network=host", "--layers", "--no-cache",
                "--platform", ",".join(PLATFORMS), "--manifest", RESULT, "-f", str(dockerfile), str(context)]
        return {"both": _timed(argv, {})}
    times = {}
    for platform in PLATFORMS:
        argv = [DOCKER, "build", "-q", "--no-cache", "--network=host", "--platform", platform, "-f", str(dockerfile), "-t", f"{RESULT}:{platform.split('/')[1]}", str(context)]
        times[platform] = _timed(argv, {"DOCKER_BUILDKIT": "1"})
    return times


def noop_build(engine: str, engines: Engines, context: Path, text: str) -> dict[str, float]:
    """A build for the host's platform alone, every step cached (after a first, untimed one)."""
    dockerfile = context / f"Dockerfile.{engine}"
    dockerfile.write_text(dockerfile_for(engine, text))
    if engine == "pybuild":
        return {"host": _timed([*PYBUILD, "build", "-q", "--network=none", "-f", str(dockerfile), "-t", f"{RESULT}-noop", str(context)], engines.pybuild_env())}
    if engine == "buildah":
        return {"host": _timed(["buildah", "build", "-q", "--runtime=runc", "--network=host", "--layers", "-f", str(dockerfile), "-t", f"{RESULT}-noop", str(context)], {})}
    return {"host": _timed([DOCKER, "build", "-q", "--network=host", "-f", str(dockerfile), "-t", f"{RESULT}-noop", str(context)], {"DOCKER_BUILDKIT": "1"})}


def _timed(argv: Sequence[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(argv, env=env)
    return time.perf_counter() - started


class Driver:
    def __init__(self, engines: Engines, repeat: int, handlers: Handlers) -> None:
        self.engines = engines
        self.handlers = handlers
        self.repeat = repeat
        self.notes: list[str] = []
        self.loads: list[float] = []
        self.parts: dict[str, dict[str, list[float]]] = {}  # row -> BuildKit's platform -> times

    def row(self, name: str, context: Path, text: str, builder: Callable[[str, Engines, Path, str], dict[str, float]] = build, prime: bool = False) -> Row:
        """Row ``name``: ``repeat`` builds per engine (cold ones by default), the engines
        taking turns; with ``prime``, one untimed build per engine first."""
        times: dict[str, list[float]] = {e: [] for e in self.engines.available}
        failed: dict[str, str] = {}
        parts: dict[str, list[float]] = {p: [] for p in PLATFORMS}
        for engine in self.engines.available if prime else ():
            try:
                builder(engine, self.engines, context, text)
            except RuntimeError as error:
                failed[engine] = reason(error)
        for _ in range(self.repeat):
            for engine in self.engines.available:
                if engine in failed:
                    continue
                self.loads.append(load_average())
                self.handlers.ensure()
                try:
                    measured = self.attempt(engine, name, builder, context, text)
                except RuntimeError as error:
                    failed[engine] = reason(error)
                    print(f"  {engine:8} {name}: FAILED\n{error}", file=sys.stderr)
                    continue
                times[engine].append(sum(measured.values()))
                for platform in PLATFORMS:
                    if platform in measured:
                        parts[platform].append(measured[platform])
        for engine, why in failed.items():
            self.notes.append(f"{engine}, {name}: failed: {why}")
        if parts[PLATFORMS[0]]:
            self.parts[name] = parts
        for engine, values in times.items():
            if values:
                print(f"  {engine:8} {name}: median {median(values):.3f}s (runs: {' '.join(f'{t:.2f}' for t in values)})", file=sys.stderr, flush=True)
        return name, {e: median(v) for e, v in times.items() if v and e not in failed}

    def attempt(self, engine: str, name: str, builder: Callable[[str, Engines, Path, str], dict[str, float]], context: Path, text: str) -> dict[str, float]:
        """One build; a failed one is run once more (and the failure noted), as run_all.py
        does: the BuildKit of docker.io 20.10 fails a step now and then under load."""
        try:
            return builder(engine, self.engines, context, text)
        except RuntimeError as error:
            self.notes.append(f"{engine}, {name}: a build failed and was run again ({reason(error)})")
            print(f"  {engine:8} build failed, running it again:\n{error}", file=sys.stderr)
            return builder(engine, self.engines, context, text)


# ---------------------------------------------------------------- QEMU for the run only


class Handlers:
    """QEMU's arm64 handler, registered for the run unless one is there already; ``ensure``
    before each build registers it again if something else (a test session's clean-up on this
    shared machine) removed it meanwhile; ``remove`` takes away what this run registered."""

    def __init__(self) -> None:
        self.registered: set[str] = set()
        self.wanted: list[str] | None = ["linux/arm64"]  # None: every handler

    def ensure(self) -> None:
        from pybuild.executors import install_handlers

        self.registered.update(install_handlers(self.wanted))  # skips one already there

    def everything(self) -> int:
        """From now on, every handler qemu-user-static has (as ``tonistiigi/binfmt --install
        all`` leaves a BuildKit machine); how many are registered."""
        self.wanted = None
        self.ensure()
        return sum(1 for entry in BINFMT_MISC.iterdir() if entry.name not in ("register", "status"))

    def remove(self) -> None:
        if self.registered:
            from pybuild.executors import uninstall_handlers

            uninstall_handlers(sorted(self.registered))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the table shows medians (default 3)")
    parser.add_argument("--engines", default="pybuild,buildkit,buildah")
    parser.add_argument("--only", default="example,emulated,noop", help="workloads: example,emulated,noop")
    parser.add_argument("--steps", type=int, default=10, help="RUN steps of the emulated workload (default 10)")
    parser.add_argument("--markdown", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    if not ARM64_BUSYBOX.exists():
        sys.exit(f"multiarch: no {ARM64_BUSYBOX.relative_to(REPO)}: run .ci/setup (it unpacks Debian's busybox-static:arm64)")

    started = time.perf_counter()
    byte_compile()
    dangling_before = {e: dangling_images(e) for e in ("buildkit", "buildah")}
    handlers = Handlers()
    handlers.ensure()
    engines = Engines.prepare(args.engines.split(","))
    driver = Driver(engines, args.repeat, handlers)
    rows: list[Row] = []
    try:
        make_bases(engines)
        chosen = [x for x in args.only.split(",") if x]
        if "example" in chosen:
            context = engines.work / "multiarch"
            shutil.copytree(EXAMPLE, context)
            print("workload example ...", file=sys.stderr, flush=True)
            rows.append(driver.row("examples/multiarch, 2 platforms (cross-compiled), cold", context, (EXAMPLE / "Dockerfile").read_text()))
        if "emulated" in chosen:
            context = engines.work / "emulated"
            context.mkdir()
            print("workload emulated ...", file=sys.stderr, flush=True)
            rows.append(driver.row(f"{args.steps} RUN steps, 2 platforms (arm64 emulated), cold", context, emulated_dockerfile(args.steps)))
        if "noop" in chosen:
            context = engines.work / "noop"
            context.mkdir()
            print("workload noop ...", file=sys.stderr, flush=True)
            rows.append(driver.row("no-op rebuild, host platform, QEMU for arm64 registered", context, NOOP, noop_build, prime=True))
            emulators = handlers.everything()
            rows.append(driver.row(f"no-op rebuild, host platform, {emulators} QEMU handlers registered", context, NOOP, noop_build, prime=True))
        report = [
            f"Run of {datetime.date.today().isoformat()}, `benchmarks/multiarch.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip()
            + f" ({(time.perf_counter() - started) / 60:.1f} min), median of {args.repeat} runs per cell"
            + " (BuildKit: the sum of its two single-platform builds):",
            "",
            table(rows, engines.available),
            "",
        ]
        for name, parts in driver.parts.items():
            report.append(f"- BuildKit, {name}: " + ", ".join(f"{p} {median(v):.3f}s" for p, v in parts.items()))
        report += ["", *report_footer(engines, driver.loads, driver.notes)]
        text = "\n".join(report) + "\n"
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
    finally:
        for engine in engines.available:
            forget_result(engine, engines)
        if "buildkit" in engines.available:  # the no-op rows' result (pybuild's root goes below)
            subprocess.run([DOCKER, "rmi", f"{RESULT}-noop"], capture_output=True)
        if "buildah" in engines.available:
            subprocess.run(["buildah", "rmi", f"{RESULT}-noop"], capture_output=True)
        drop_bases(engines)
        for engine, before in dangling_before.items():
            if engine in engines.available:
                for image in dangling_images(engine) - before:
                    subprocess.run([DOCKER if engine == "buildkit" else "buildah", "rmi", image], capture_output=True)
        engines.cleanup()
        handlers.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
