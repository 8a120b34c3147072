"""Every workload with pybuild and BuildKit (and Buildah if asked) in one run: issue 18's targets.

    .venv/bin/python benchmarks/run_all.py [--repeat 3] [--engines pybuild,buildkit[,buildah]]
                                           [--only stages,runs,c,context,small,apt,parallel,export]
                                           [--files 20000 --megabytes 400 | --small-context]
                                           [--quiet-load LOAD] [--markdown FILE]

Workloads (benchmarks/README.md explains the method; ``workloads.py`` has the Dockerfiles):

- ``stages``: 4 independent stages (``sleep 2`` + 20 MB each) copied into a final stage:
  cold and no-op rebuild.
- ``runs``: 40 ``RUN true N`` steps: cold and no-op rebuild.
- ``c``: the multi-stage C build of examples/c-hello on the gcc base made by
  examples/base-images/make-gcc-rootfs: cold, no-op, one file touched.
- ``context``: a big context (20,000 files / 400 MB, issue 18's size;
  ``--small-context``: 5,000 / 100 MB) copied and listed: cold, no-op,
  one file changed, ``touch`` of every file, one file changed after that.
- ``small``: a small project (20 files, COPY + RUN): no-op rebuild.
- ``apt``: ``apt-get update && apt-get install -y python3`` from Debian's mirror
  on a Debian bookworm base made by debootstrap (cached in build/bench/): cold.
- ``parallel``: 4 independent stages of ~1 s of CPU each: cold.
- ``export``: an image of ~100 MB of real-world bytes written to an archive file.

A cold build runs after the engine's state is reset (untimed): the result's tag
removed, the untagged images this run made removed, the build cache pruned
(``pybuild rmi``, ``image prune``, ``prune -a``; ``docker rmi``,
``docker builder prune -af``); it is also built with ``--no-cache``.  A no-op
rebuild follows an untimed build of the same thing.  Each measurement is the
wall time of the engine's command line; for pybuild also the peak RSS of its
whole process tree (``rss.py``).  The report has one line per run and
workload with each engine's seconds and the pybuild/BuildKit ratio, issue 18's
target for it and whether that run met it, then the median.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads as w  # noqa: E402
from peers import DOCKER, PYBUILD, REPO, Engines, median, run  # noqa: E402
from rss import Peak  # noqa: E402

WORKLOADS = ("stages", "runs", "c", "context", "small", "apt", "parallel", "export")
RACY_PAUSE = 1.5  # seconds; see benchmarks/README.md ("the racy-window pause")
ATTEMPTS = 3  # runs of a build that fails before its cell is left empty
WARM_UP = "FROM busybox\nRUN true\n"  # each engine's untimed first build (Driver.warm_up)
SERVER_START = 3.0  # seconds after it for pybuild's server to be listening

# Issue 18's targets: pybuild's time over BuildKit's, in the same run.  Every row
# at most DEFAULT_TARGET; these at most their own.
DEFAULT_TARGET = 1.0
TARGETS = {
    "context.noop": 0.5,
    "context.touch": 0.5,
    "context.change": 0.5,
    "context.touch_change": 0.5,
}
# Peak RSS of pybuild's process tree (bytes), issue 18: the cold 20,000-file build.
RSS_TARGETS = {"context.cold": 200 * 2**20}
TARGET_PEER = "buildkit"  # the engine the targets are ratios to

Row = tuple[str, dict[str, float]]


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(limit: float, patience: float = 600.0) -> None:
    """Wait (up to ``patience`` seconds) until the 1-minute load average is below ``limit``."""
    deadline = time.monotonic() + patience
    if load_average() >= limit:
        print(f"  waiting for the load average ({load_average():.1f}) to fall below {limit} ...", file=sys.stderr, flush=True)
    while load_average() >= limit and time.monotonic() < deadline:
        time.sleep(5)


def reason(error: BaseException) -> str:
    """The line of a failed command's output that says why (its ``error:`` line if it has one)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return next((line for line in lines if line.lower().startswith("error")), lines[-1] if lines else "?")


def qemu_handlers() -> list[str]:
    """QEMU's binfmt_misc handlers registered on this machine (BuildKit probes each one
    on every build: with them its no-op rebuild takes several times as long)."""
    try:
        names = os.listdir("/proc/sys/fs/binfmt_misc")
    except OSError:
        return []
    return sorted(n for n in names if n.startswith("qemu"))


class Driver:
    def __init__(self, engines: Engines, repeat: int, dangling_before: dict[str, set[str]]) -> None:
        self.engines = engines
        self.repeat = repeat
        self.notes: list[str] = []
        self.tags: dict[str, set[str]] = {e: set() for e in engines.available}
        self.loads: list[float] = []  # the 1-minute load average before each build
        self.spreads: dict[str, dict[str, tuple[float, float]]] = {}  # row -> engine -> (fastest, slowest)
        self.run_times: dict[str, dict[str, list[float | None]]] = {}  # None: a failed run  # row -> engine -> seconds of each run
        self.rss: dict[str, list[Peak | None]] = {}  # row -> pybuild's peak memory in each run
        self.targets: dict[str, float] = {}  # row -> target ratio to TARGET_PEER
        self.rss_targets: dict[str, int] = {}  # row -> peak RSS target (bytes)
        self.last_rss: Peak | None = None  # pybuild's peak memory in the last build
        self.qemu_seen: set[str] = set()  # QEMU handlers registered before some build (by someone else)
        self.qemu_builds = 0  # builds that started with one registered
        self.dangling_before = {e: dangling_before.get(e, set()) for e in engines.available}
        self.settle = 0.0  # seconds to wait after the context workload's reset and new context (--settle)

    def warm_up(self) -> None:
        """One untimed build per engine before any measurement, as a user's machine has
        done before: dockerd's first build after it started, and pybuild's first build of a
        root, which starts that root's server (README, *Start-up*).  Its tag and cache go at
        the first reset."""
        context = self.engines.work / "warm-up"
        context.mkdir(exist_ok=True)
        for engine in self.engines.available:
            self.build(engine, context, WARM_UP, "runall-warm-up", no_cache=True)
            self.reset(engine, "runall-warm-up")
        if "pybuild" in self.engines.available:
            time.sleep(SERVER_START)  # the server imports what a build needs before it listens

    def build(self, engine: str, context: Path, body: str, tag: str, *, no_cache: bool = False, extra: Sequence[str] = (), network: bool = False) -> float:
        """One build's wall time.  A build that fails is run again, up to ATTEMPTS in all, and
        each failure noted: the BuildKit of docker.io 20.10 fails a big COPY now and then (see
        benchmarks/README.md).  A cold build (``no_cache``) is retried after another reset, so
        from the same state."""
        self.tags[engine].add(tag)
        body = w.name_gcc(engine, body)
        for attempt in range(1, ATTEMPTS + 1):
            os.sync()  # no build pays for the writes of the one before it (or of a reset)
            self.loads.append(load_average())
            handlers = qemu_handlers()  # another user's tests may register them for a while
            if handlers:
                self.qemu_seen.update(handlers)
                self.qemu_builds += 1
            try:
                seconds = self.engines.build(engine, context, body, tag=tag, no_cache=no_cache, extra=extra, network=network)
                break
            except RuntimeError as error:
                if attempt == ATTEMPTS:
                    raise
                self.notes.append(f"{engine}: a build failed and was run again ({reason(error)})")
                print(f"  {engine:8} build failed, running it again:\n{error}", file=sys.stderr)
                if no_cache:
                    self.reset(engine, tag)
        self.last_rss = self.engines.last_rss
        return seconds

    def reset(self, engine: str, tag: str) -> None:
        """What a cold build starts from (untimed): the result's tag, the untagged
        images this run made and the build cache removed; the bases stay."""
        if engine == "pybuild":
            environment = self.engines.pybuild_env()
            subprocess.run([*PYBUILD, "rmi", "-f", tag], env={**os.environ, **environment}, capture_output=True)
            run([*PYBUILD, "image", "prune", "-f"], env=environment)
            run([*PYBUILD, "prune", "-a"], env=environment)
        elif engine == "buildkit":
            subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)
            self.remove_new_dangling(engine)
            run([DOCKER, "builder", "prune", "-af"])
        elif engine == "buildah":
            subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
            self.remove_new_dangling(engine)

    def remove_new_dangling(self, engine: str) -> None:
        """The untagged images this run made (results it re-tagged, Buildah's --layers
        intermediates); the ones there before the run belong to someone else."""
        before = self.dangling_before.get(engine, set())
        for _ in range(3):  # children first: a parent goes on the next pass
            left = [i for i in dangling_images(engine) if i not in before]
            if not left:
                break
            for image in left:
                subprocess.run([DOCKER if engine == "buildkit" else "buildah", "rmi", image], capture_output=True)

    def order(self, round_: int) -> list[str]:
        """The engines in turn, the first of one round last in the next: no engine always goes first."""
        engines = list(self.engines.available)
        return engines if round_ % 2 == 0 else engines[::-1]

    def row(
        self,
        name: str,
        one_run: Callable[[str], float],
        prepare: Callable[[str], object] | None = None,
        before_each: Callable[[str], None] | None = None,
        key: str = "",
    ) -> Row:
        """Row ``name``: ``one_run(engine)`` ``repeat`` times per engine, the engines taking
        turns (so a busy minute on the machine falls on all of them), after ``prepare(engine)``
        once and ``before_each(engine)`` (untimed) before every run.  ``key`` names its targets."""
        times: dict[str, list[float | None]] = {e: [] for e in self.engines.available}
        rss: list[Peak | None] = []
        failed: dict[str, RuntimeError] = {}
        for engine in self.engines.available:
            if prepare is not None:
                try:
                    prepare(engine)
                except RuntimeError as error:
                    failed[engine] = error
        for round_ in range(self.repeat):
            for engine in self.order(round_):
                self.last_rss = None
                if engine not in failed:
                    try:
                        if before_each is not None:
                            before_each(engine)
                        times[engine].append(one_run(engine))
                    except RuntimeError as error:
                        failed[engine] = error
                if engine in failed:  # this run and the later ones
                    times[engine].append(None)
                if engine == "pybuild":
                    rss.append(self.last_rss)
        for engine, problem in failed.items():
            self.notes.append(f"{engine}, {name}: failed: {reason(problem)}")
            print(f"  {engine:8} {name}: FAILED\n{problem}", file=sys.stderr)
        self.set_targets(name, key, rss)
        return self.summarize(name, times)

    def set_targets(self, name: str, key: str, rss: list[Peak | None]) -> None:
        self.rss[name] = rss
        self.targets[name] = TARGETS.get(key, DEFAULT_TARGET)
        if key in RSS_TARGETS:
            self.rss_targets[name] = RSS_TARGETS[key]

    def summarize(self, name: str, times: Mapping[str, Sequence[float | None]]) -> Row:
        """The row's medians; ``times`` has each engine's runs in order, None for a failed one."""
        done = {e: [t for t in v if t is not None] for e, v in times.items()}
        done = {e: v for e, v in done.items() if v}
        for engine, values in times.items():
            shown = " ".join("failed" if t is None else f"{t:.2f}" for t in values)
            middle = f"median {median(done[engine]):.3f}s" if engine in done else "no run"
            print(f"  {engine:8} {name}: {middle} (runs: {shown})", file=sys.stderr, flush=True)
        self.spreads[name] = {e: (min(v), max(v)) for e, v in done.items()}
        self.run_times[name] = {e: list(v) for e, v in times.items() if e in done}
        return name, {e: median(v) for e, v in done.items()}

    # ------------------------------------------------------------ workloads

    def cold_and_noop(self, label: str, key: str, context: Path, body: str, tag: str) -> list[Row]:
        """Two rows: cold builds (each after a reset) and no-op rebuilds (after one untimed build)."""

        def cold(engine: str) -> float:
            return self.build(engine, context, body, tag, no_cache=True)

        def noop(engine: str) -> float:
            return self.build(engine, context, body, tag)

        rows = [self.row(f"{label}: cold", cold, before_each=lambda e: self.reset(e, tag), key=f"{key}.cold")]
        rows.append(self.row(f"{label}: no-op rebuild", noop, prepare=noop, key=f"{key}.noop"))
        return rows

    def stages(self) -> list[Row]:
        context = self.engines.work / "stages"
        context.mkdir()
        label = f"{w.WAIT_STAGES} independent stages (sleep 2 + 20 MB each)"
        return self.cold_and_noop(label, "stages", context, w.STAGES, "runall-stages")

    def parallel(self) -> list[Row]:
        context = self.engines.work / "parallel"
        context.mkdir()
        jobs = str(len(os.sched_getaffinity(0)))
        # Buildah runs one stage at a time unless told otherwise (--jobs, default 1).
        extra = {"pybuild": [], "buildkit": [], "buildah": ["--jobs", jobs]}
        self.notes.append(f"parallel stages: Buildah runs with --jobs {jobs} (its default, 1, runs stages one by one); pybuild and BuildKit run every ready step at once.")
        name = f"parallel stages ({w.PARALLEL_STAGES} x ~1 s CPU), cold"
        tag = "runall-parallel"
        return [
            self.row(
                name,
                lambda e: self.build(e, context, w.PARALLEL, tag, no_cache=True, extra=extra.get(e, [])),
                before_each=lambda e: self.reset(e, tag),
                key="parallel.cold",
            )
        ]

    def runs(self) -> list[Row]:
        context = self.engines.work / "runs"
        context.mkdir()
        return self.cold_and_noop("40 RUN steps", "runs", context, w.run_chain(40), "runall-runs")

    def small(self) -> list[Row]:
        context = w.make_small_project(self.engines.work / "small")
        time.sleep(RACY_PAUSE)
        tag = "runall-small"

        def noop(engine: str) -> float:
            return self.build(engine, context, w.SMALL, tag)

        return [self.row("small project (20 files, COPY + RUN): no-op rebuild", noop, prepare=noop, key="small.noop")]

    def apt(self) -> list[Row]:
        context = self.engines.work / "apt"
        context.mkdir()
        self.notes.append(
            "apt: `apt-get update && apt-get install -y python3` from Debian's mirror (deb.debian.org) on a Debian bookworm minbase "
            "made by debootstrap; pybuild with its default network, BuildKit with --network=host."
        )
        tag = "runall-apt"

        def cold(engine: str) -> float:
            return self.build(engine, context, w.APT, tag, no_cache=True, network=True)

        return [self.row("apt-get install python3 from Debian's mirror: cold", cold, before_each=lambda e: self.reset(e, tag), key="apt.cold")]

    def context(self, files: int, megabytes: int) -> list[Row]:
        phases = {
            "cold": "cold", "noop": "no-op rebuild", "change": "one file changed",
            "touch": "touch every file", "touch_change": "one file changed after touching every file",
        }
        # one slot per run, so that each run's ratio pairs builds of the same round even when one failed
        times: dict[str, dict[str, list[float | None]]] = {p: {e: [None] * self.repeat for e in self.engines.available} for p in phases}
        rss: dict[str, list[Peak | None]] = {p: [None] * self.repeat for p in phases}
        seed = time.time_ns()  # new bytes every run: no engine finds them in a cache from an earlier run
        tag = "runall-context"
        for r in range(self.repeat):
            for engine in self.order(r):
                context = self.engines.work / f"context-{r}-{engine}"

                def timed(phase: str) -> None:
                    self.last_rss = None
                    os.sync()  # no build pays for the writes of the one before it
                    seconds = times[phase][engine][r] = self.build(engine, context, w.CONTEXT, tag, no_cache=phase == "cold")
                    if engine == "pybuild":
                        rss[phase][r] = self.last_rss
                    print(f"  {engine:8} context run {r + 1}, {phases[phase]}: {seconds:.2f}s", file=sys.stderr, flush=True)

                try:
                    self.reset(engine, tag)
                    paths = w.make_random_context(context, files, megabytes, seed + r)
                    if self.settle:  # past ext4's avoidance of recently deleted inodes (README: --settle)
                        os.sync()
                        time.sleep(self.settle)
                    time.sleep(RACY_PAUSE)
                    timed("cold")
                    time.sleep(RACY_PAUSE)
                    timed("noop")
                    time.sleep(RACY_PAUSE)
                    paths[len(paths) // 3].write_bytes(f"changed {r}".encode())
                    timed("change")
                    time.sleep(RACY_PAUSE)
                    for path in paths:
                        os.utime(path)
                    timed("touch")
                    time.sleep(RACY_PAUSE)
                    # every file now has a new time, which COPY keeps: no earlier file can be reused
                    paths[len(paths) // 2].write_bytes(f"changed again {r}".encode())
                    timed("touch_change")
                except RuntimeError as error:  # this run's later phases are left out; the next run starts afresh
                    self.notes.append(f"{engine}, big context, run {r + 1}: failed: {reason(error)}")
                    print(f"  {engine:8} context, run {r + 1}: FAILED\n{error}", file=sys.stderr)
                # Each context stays until the end (Engines.cleanup): deleting its 20,000 files
                # right before the other engine's cold build would slow that build, as chance
                # places it (ext4 without a journal, benchmarks/README.md).
        label = f"context {files:,} files / {megabytes} MB"
        rows = []
        for phase, shown in phases.items():
            name = f"{label}: {shown}"
            self.set_targets(name, f"context.{phase}", rss[phase])
            rows.append(self.summarize(name, times[phase]))
        return rows

    def c_build(self) -> list[Row]:
        context = w.copy_c_context(self.engines.work / "c-hello")
        tag = "runall-c-hello"
        rows = self.cold_and_noop("multi-stage C build (gcc -> scratch)", "c", context, w.C_BUILD, tag)

        def touched(engine: str) -> float:
            return self.build(engine, context, w.C_BUILD, tag)

        def touch(engine: str) -> None:  # new mtime and ctime, same bytes: found unchanged by content
            os.utime(context / w.C_SOURCES[0].name)

        rows.append(self.row("multi-stage C build: one file touched", touched, prepare=touched, before_each=touch, key="c.touch"))
        return rows

    def export(self, megabytes: int) -> list[Row]:
        context = self.engines.work / "export"
        size = w.make_real_bytes_context(context, megabytes)
        time.sleep(RACY_PAUSE)
        out = self.engines.work / "export-out.tar"
        tag = "runall-export:latest"
        save = pybuild_save_command()
        if save is None:
            self.notes.append("export: pybuild has no save command in this checkout; pybuild's cell is empty.")
        commands = {
            "pybuild": (save or []) + ["-o", str(out), tag],
            "buildkit": [DOCKER, "save", "-o", str(out), tag],
            "buildah": ["buildah", "push", "-q", tag, f"oci-archive:{out}"],
        }
        environment = {"pybuild": self.engines.pybuild_env(), "buildkit": {}, "buildah": {}}
        sizes: dict[str, str] = {}

        def prepare(engine: str) -> None:
            if engine == "pybuild" and save is None:
                raise RuntimeError("no pybuild save command")
            self.build(engine, context, w.EXPORT, tag)

        def one_run(engine: str) -> float:
            out.unlink(missing_ok=True)
            started = time.perf_counter()
            run(commands[engine], env=environment[engine])
            elapsed = time.perf_counter() - started
            sizes[engine] = f"{out.stat().st_size / 1e6:.0f} MB"
            out.unlink()
            return elapsed

        row = self.row(f"export a {size / 1e6:.0f} MB image to an archive", one_run, prepare, key="export")
        self.notes.append(
            "export: each engine's own archive command with its defaults — `pybuild save` and `docker save` write a docker-archive "
            "(uncompressed layer tars), `buildah push oci-archive:` an OCI archive whose layers it gzips during the push. Archive sizes: "
            + ", ".join(f"{e} {s}" for e, s in sizes.items()) + ". Not a build: no peak RSS."
        )
        return [row]

    def cleanup(self) -> None:
        for engine, tags in self.tags.items():
            for tag in sorted(tags):
                if engine == "buildkit":
                    subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)
                elif engine == "buildah":
                    subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
        for names in (w.GCC_FROM, w.DEBIAN_FROM):
            if "buildkit" in self.engines.available:
                subprocess.run([DOCKER, "rmi", names["buildkit"]], capture_output=True)
            if "buildah" in self.engines.available:
                subprocess.run(["buildah", "rmi", names["buildah"]], capture_output=True)
        if "buildah" in self.engines.available:  # the names the docker-archives gave the bases
            subprocess.run(["buildah", "rmi", "localhost/pybuild-bench/gcc:local", "localhost/pybuild-bench/debian:local"], capture_output=True)
        # Untagged images this run left behind (re-tagged results, Buildah's --layers
        # intermediates): several GB a run.  An image still in use is refused and stays.
        for engine in self.dangling_before:
            self.remove_new_dangling(engine)


def dangling_images(engine: str) -> set[str]:
    """IDs of the untagged images in a peer's store (pybuild's root is temporary)."""
    if engine == "buildkit":
        argv = [DOCKER, "images", "-q", "--no-trunc", "-f", "dangling=true"]
    elif engine == "buildah":
        argv = ["buildah", "images", "-q", "--no-trunc", "--filter", "dangling=true"]
    else:
        return set()
    try:
        result = subprocess.run(argv, capture_output=True, text=True)
    except OSError:  # not installed
        return set()
    return set(result.stdout.split()) if result.returncode == 0 else set()


def pybuild_save_command() -> list[str] | None:
    """``pybuild save`` if this checkout has it (older ones do not)."""
    if subprocess.run([*PYBUILD, "save", "--help"], capture_output=True).returncode == 0:
        return [*PYBUILD, "save"]
    return None


def spread_table(rows: list[Row], spreads: dict[str, dict[str, tuple[float, float]]], engines: Sequence[str]) -> str:
    lines = ["| workload | " + " | ".join(engines) + " |", "|---|" + "---|" * len(engines)]
    for name, _ in rows:
        cells = [f"{spreads[name][e][0]:.2f}–{spreads[name][e][1]:.2f}s" if e in spreads.get(name, {}) else "—" for e in engines]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- the report


def qemu_warning(driver: Driver) -> list[str]:
    if not driver.qemu_seen:
        return []
    names = ", ".join(sorted(driver.qemu_seen))
    return [
        f"**WARNING: QEMU binfmt handlers were registered when {driver.qemu_builds} of the builds started ({names}).** "
        "BuildKit probes each one on every build (its no-op rebuild takes several times as long); issue 18 measured with none: run again.",
        "",
    ]


def mib(value: int | None) -> str:
    return f"{value / 2**20:.0f} MiB" if value is not None else "—"


def shown_peak(peak: Peak | None) -> str:
    return f"{mib(peak.rss)} (anon {mib(peak.anon)})" if peak is not None else "—"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def ratio_of(values: dict[str, float], peer: str) -> float | None:
    if "pybuild" in values and values.get(peer, 0) > 0:
        return values["pybuild"] / values[peer]
    return None


def run_table(rows: list[Row], driver: Driver, engines: Sequence[str]) -> tuple[str, list[str]]:
    """One line per run and row (each engine's seconds, the ratios, the target, met or not,
    pybuild's peak RSS), then the row's median line.  Also the rows whose target a run missed."""
    peers = [e for e in engines if e != "pybuild"]
    header = ["workload", "run", *engines, *(f"pybuild/{e}" for e in peers), "target", "met", "pybuild peak RSS"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    missed: list[str] = []
    for name, medians in rows:
        target = driver.targets.get(name, DEFAULT_TARGET)
        rss_target = driver.rss_targets.get(name)
        runs = driver.run_times.get(name, {})
        peaks = driver.rss.get(name, [])
        count = max((len(v) for v in runs.values()), default=0)
        results: list[bool | None] = []
        for i in range(count):
            values = {e: t for e, v in runs.items() if i < len(v) and (t := v[i]) is not None}
            peak = peaks[i] if i < len(peaks) else None
            ok = met(ratio_of(values, TARGET_PEER), target, peak, rss_target)
            results.append(ok)
            lines.append(line(name if i == 0 else "", str(i + 1), values, engines, peers, target, rss_target, ok, shown_peak(peak)))
        known = [p for p in peaks if p is not None]
        highest = Peak(max(p.rss for p in known), max(p.anon for p in known)) if known else None
        ok = met(ratio_of(medians, TARGET_PEER), target, highest, rss_target)
        lines.append(line("", "median", medians, engines, peers, target, rss_target, ok, "highest " + shown_peak(highest) if highest else "—"))
        if any(r is False for r in results) or ok is False:
            missed.append(f"{name} ({sum(r is False for r in results)} of {count} runs)")
        elif TARGET_PEER in engines and (not results or all(r is None for r in results)):
            missed.append(f"{name} (not judged: no run of both engines)")
    return "\n".join(lines), missed


def met(ratio: float | None, target: float, peak: Peak | None, rss_target: int | None) -> bool | None:
    if ratio is None:
        return None
    return ratio <= target and (rss_target is None or peak is None or peak.rss <= rss_target)


def line(
    name: str, run_label: str, values: dict[str, float], engines: Sequence[str], peers: Sequence[str],
    target: float, rss_target: int | None, ok: bool | None, peak: str,
) -> str:
    cells = [name, run_label, *(f"{values[e]:.3f} s" if e in values else "—" for e in engines)]
    for peer in peers:
        r = ratio_of(values, peer)
        cells.append(f"{r:.2f}" if r is not None else "—")
    shown_target = f"≤ {target:g}" + (f", RSS ≤ {mib(rss_target)}" if rss_target is not None else "")
    cells += [shown_target, verdict(ok), peak]
    return "| " + " | ".join(cells) + " |"


def byte_compile() -> None:
    """What .ci/setup does after an install: with PYTHONDONTWRITEBYTECODE set (as on
    CI machines and here) Python would otherwise compile each changed module
    from source on every pybuild command, which is not what an installed pybuild costs."""
    run([PYBUILD[0], "-m", "compileall", "-q", "-x", r"(^|/)(\.venv|tests|benchmarks|examples)/", "."], cwd=REPO, env={"PYTHONDONTWRITEBYTECODE": ""})


# ---------------------------------------------------------------- the machine


def _first(command: Sequence[str]) -> str:
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=30)
    except OSError:
        return "not installed"
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr).strip() else "?"


def machine(work: Path) -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), 0)
    source, fstype = (_first(["findmnt", "-no", "SOURCE,FSTYPE", "-T", str(work)]).split() + ["?", "?"])[:2]
    device = Path(source).name
    rotational = Path(f"/sys/block/{device}/queue/rotational")
    kind = {"0": "non-rotational", "1": "the kernel reports it rotational"}.get(rotational.read_text().strip(), "?") if rotational.exists() else "?"
    os_name = next((line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines() if line.startswith("PRETTY_NAME=")), "?")
    return [
        f"CPU: {model}, {len(os.sched_getaffinity(0))} cores available",
        f"RAM: {memory / 1024 / 1024:.1f} GiB",
        f"OS: {os_name}, kernel {platform.release()}",
        f"disk: {source} ({fstype}, {kind}), where the engines and the contexts live",
        f"Python {platform.python_version()}",
    ]


def versions(engines: Sequence[str]) -> list[str]:
    out = []
    if "pybuild" in engines:
        changed = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
        dirty = f", and {len(changed.splitlines())} files changed in the working tree" if changed else ""
        out.append(_first([*PYBUILD, "--version"]) + f" (git {_first(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'])} at the report{dirty})")
    if "buildkit" in engines:
        server = _first([DOCKER, "version", "-f", "{{.Server.Version}}"])
        containerd = _first([DOCKER, "version", "-f", '{{range .Server.Components}}{{if eq .Name "containerd"}}{{.Version}}{{end}}{{end}}'])
        out.append(f"BuildKit of Debian's docker.io {server}, containerd {containerd} (`DOCKER_BUILDKIT=1 docker build --network=host`)")
    if "buildah" in engines:
        out.append(_first(["buildah", "--version"]) + f" with {_first(['runc', '--version'])} (`buildah bud --runtime=runc --network=host --layers`)")
    return out


def report_footer(engines: Engines, loads: list[float], notes: list[str]) -> list[str]:
    """The report's lines after the tables: the machine, the load, the engines, the notes."""
    lines = [
        "Machine:",
        "",
        *[f"- {line}" for line in machine(engines.work)],
        f"- load average (1 min) before each build: median {median(loads):.1f}, highest {max(loads):.1f}"
        " (the machine is shared: other work ran beside the benchmark)" if loads else "- no build ran",
        "",
        "Engines:",
        "",
        *[f"- {line}" for line in versions(engines.available)],
    ]
    idle = engines.server_rss() if "pybuild" in engines.available else None
    if idle is not None:
        lines.append(f"- pybuild's build server, idle between builds (not in the rows): {idle / 2**20:.0f} MiB RSS")
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (default 3); each run is shown, and the median")
    parser.add_argument("--engines", default="pybuild,buildkit", help="engines to run (default pybuild,buildkit; buildah can be added)")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run: " + ",".join(WORKLOADS))
    parser.add_argument("--files", type=int, default=20_000, help="files of the big context (default 20,000, issue 18's)")
    parser.add_argument("--megabytes", type=int, default=400, help="size of the big context in MB (default 400)")
    parser.add_argument("--small-context", action="store_true", help="the big context at 5,000 files / 100 MB (quicker; the targets stay the same)")
    parser.add_argument("--full", action="store_true", help="accepted for older command lines: the big context is full size by default")
    parser.add_argument("--export-megabytes", type=int, default=100, help="size of the exported image's content (default 100)")
    parser.add_argument(
        "--settle", type=float, default=0.0, metavar="SECONDS",
        help="in the context workload, wait this long after each reset and new context before the cold build "
        "(60: past ext4's avoidance of inodes deleted in the last minute, on a file system without a journal)",
    )
    parser.add_argument("--quiet-load", type=float, default=0.0, metavar="LOAD", help="before each workload, wait (up to 10 min) for the 1-minute load average to fall below LOAD")
    parser.add_argument("--markdown", type=Path, help="also write the report (table, machine, versions, notes) to this file")
    args = parser.parse_args(argv)
    if args.small_context:
        args.files, args.megabytes = 5_000, 100
    chosen = [x for x in args.only.split(",") if x]
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    if "pybuild" in args.engines.split(","):
        byte_compile()
    if "apt" in chosen:
        if not w.DEBIAN_TAR.exists():
            print(f"making the Debian base (once; kept as {w.DEBIAN_TAR.relative_to(REPO)}) ...", file=sys.stderr, flush=True)
        w.debian_rootfs()
    # what the peers' stores hold untagged already: the clean-up leaves it alone
    dangling_before = {e: dangling_images(e) for e in ("buildkit", "buildah")}
    engines = Engines.prepare(args.engines.split(","))
    driver = Driver(engines, args.repeat, dangling_before)
    driver.settle = args.settle
    if args.settle:
        driver.notes.append(f"context workload: a wait of {args.settle:g} s after each reset and new context, before the cold build (--settle)")
    if qemu_handlers() and "buildkit" in engines.available:
        print(f"WARNING: QEMU binfmt handlers are registered ({', '.join(qemu_handlers())}): BuildKit probes each one on every build", file=sys.stderr, flush=True)
    rows: list[Row] = []
    try:
        driver.warm_up()
        if "c" in chosen:
            gcc_tar = engines.work / "gcc.tar"
            run([sys.executable, str(w.EXAMPLES / "base-images" / "make-gcc-rootfs"), str(gcc_tar)])
            w.import_gcc(engines, gcc_tar)
            gcc_tar.unlink()
        if "apt" in chosen:
            w.import_base(engines, w.debian_rootfs(), w.DEBIAN_FROM, "debian")
        workloads: dict[str, Callable[[], list[Row]]] = {
            "stages": driver.stages,
            "runs": driver.runs,
            "c": driver.c_build,
            "context": lambda: driver.context(args.files, args.megabytes),
            "small": driver.small,
            "apt": driver.apt,
            "parallel": driver.parallel,
            "export": lambda: driver.export(args.export_megabytes),
        }
        for name in chosen:
            if args.quiet_load:
                wait_for_quiet(args.quiet_load)
            print(f"workload {name} ...", file=sys.stderr, flush=True)
            rows += workloads[name]()
        table, missed = run_table(rows, driver, engines.available)
        shown = " ".join(sys.argv[1:] if argv is None else argv)
        summary = (
            f"**Targets ({TARGET_PEER} in the same run): met in every run by every row.**"
            if not missed and TARGET_PEER in engines.available
            else f"**Targets not met** (pybuild/{TARGET_PEER} over the target, or peak RSS over it): " + "; ".join(missed)
            if missed
            else f"No targets checked: {TARGET_PEER} did not run."
        )
        report = [
            f"Run of {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, `benchmarks/run_all.py {shown}`".rstrip()
            + f" ({(time.perf_counter() - started) / 60:.1f} min), {args.repeat} runs per row:",
            "",
            *(qemu_warning(driver) if "buildkit" in engines.available else []),
            summary,
            "",
            table,
            "",
            "Seconds are wall time of the engine's command; the ratio is pybuild's over the peer's in the same run (below 1: pybuild faster); "
            "`met` compares that run's pybuild/buildkit ratio (and, where given, pybuild's peak RSS) with issue 18's target, the median line the medians. "
            "Peak RSS is the highest sum of the resident set sizes of pybuild's whole process tree during the build (sampled every 10 ms for the first 100 ms, then every 100 ms, benchmarks/rss.py; "
            "shared pages counted in each process), and in brackets the highest sum of their anonymous parts (without file pages mapped from the page cache); "
            "the RSS target is on the first. It is pybuild's only: BuildKit's work happens in dockerd, a daemon.",
            "",
            *report_footer(engines, driver.loads, driver.notes),
        ]
        text = "\n".join(report) + "\n"
        print(text)
        if args.markdown:
            args.markdown.write_text(text)
    finally:
        driver.cleanup()
        engines.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
