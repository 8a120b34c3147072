"""Every workload with pybuild, BuildKit and Buildah in one run: one table of medians.

    .venv/bin/python benchmarks/run_all.py [--repeat 3] [--engines pybuild,buildkit,buildah]
                                           [--only parallel,runs,context,c,export]
                                           [--files 5000 --megabytes 100 | --full]
                                           [--quiet-load LOAD] [--markdown FILE]

Workloads (benchmarks/README.md explains the method):

- ``parallel``: 4 independent stages of ~1 s of CPU each, copied into a final stage; no cache.
- ``runs``: 40 ``RUN true N`` steps; no cache.
- ``context``: a big context (default 5,000 files / 100 MB, ``--full`` for
  benchmarks/context.py's 20,000 / 400 MB) copied and listed: the cold build,
  a no-op rebuild, a rebuild after ``touch`` of every file, a rebuild after
  one file changed.
- ``c``: the multi-stage C build of examples/c-hello on the gcc base made by
  examples/base-images/make-gcc-rootfs: cold (no cache) and no-op.
- ``export``: an image of ~100 MB of real-world bytes written to an archive
  file (``pybuild save``, ``docker save``, ``buildah push oci-archive:``).

Each measurement is the wall time of the engine's command line, as a user
waits for it; each row shows the median of ``--repeat`` runs and the
pybuild/peer ratios (below 1: pybuild is faster).  The whole run takes about
10 minutes on 2 cores with the defaults.
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
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads as w  # noqa: E402
from peers import DOCKER, PYBUILD, REPO, Engines, median, run, table  # noqa: E402

WORKLOADS = ("parallel", "runs", "context", "c", "export")
RACY_PAUSE = 1.5  # seconds; see benchmarks/README.md ("the racy-window pause")

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


class Driver:
    def __init__(self, engines: Engines, repeat: int, dangling_before: dict[str, set[str]]) -> None:
        self.engines = engines
        self.repeat = repeat
        self.notes: list[str] = []
        self.tags: dict[str, set[str]] = {e: set() for e in engines.available}
        self.loads: list[float] = []  # the 1-minute load average before each build
        self.spreads: dict[str, dict[str, tuple[float, float]]] = {}  # row -> engine -> (fastest, slowest)
        self.dangling_before = {e: dangling_before.get(e, set()) for e in engines.available}

    def build(self, engine: str, context: Path, body: str, tag: str, *, no_cache: bool = False, extra: Sequence[str] = ()) -> float:
        """One build's wall time.  A build that fails is run once more (and the
        failure noted): a daemon shared with other users can fail a step now and then."""
        self.tags[engine].add(tag)
        self.loads.append(load_average())
        body = w.name_gcc(engine, body)
        try:
            return self.engines.build(engine, context, body, tag=tag, no_cache=no_cache, extra=extra)
        except RuntimeError as error:
            self.notes.append(f"{engine}: a build failed and was run again ({reason(error)})")
            print(f"  {engine:8} build failed, running it again:\n{error}", file=sys.stderr)
            return self.engines.build(engine, context, body, tag=tag, no_cache=no_cache, extra=extra)

    def row(self, name: str, one_run: Callable[[str], float], prepare: Callable[[str], None] | None = None) -> Row:
        """Row ``name``: ``one_run(engine)`` ``repeat`` times per engine, the engines taking
        turns (so a busy minute on the machine falls on all of them), after ``prepare(engine)``."""
        times: dict[str, list[float]] = {e: [] for e in self.engines.available}
        failed: dict[str, RuntimeError] = {}
        for engine in self.engines.available:
            if prepare is not None:
                try:
                    prepare(engine)
                except RuntimeError as error:
                    failed[engine] = error
        for _ in range(self.repeat):
            for engine in self.engines.available:
                if engine in failed:
                    continue
                try:
                    times[engine].append(one_run(engine))
                except RuntimeError as error:
                    failed[engine] = error
        for engine, error in failed.items():
            self.notes.append(f"{engine}, {name}: failed: {reason(error)}")
            print(f"  {engine:8} {name}: FAILED\n{error}", file=sys.stderr)
        return self.summarize(name, {e: v for e, v in times.items() if v and e not in failed})

    def summarize(self, name: str, times: dict[str, list[float]]) -> Row:
        for engine, values in times.items():
            shown = " ".join(f"{t:.2f}" for t in values)
            print(f"  {engine:8} {name}: median {median(values):.3f}s (runs: {shown})", file=sys.stderr, flush=True)
        self.spreads[name] = {e: (min(v), max(v)) for e, v in times.items()}
        return name, {e: median(v) for e, v in times.items()}

    # ------------------------------------------------------------ workloads

    def parallel(self) -> list[Row]:
        context = self.engines.work / "parallel"
        context.mkdir()
        jobs = str(len(os.sched_getaffinity(0)))
        # Buildah runs one stage at a time unless told otherwise (--jobs, default 1).
        extra = {"pybuild": [], "buildkit": [], "buildah": ["--jobs", jobs]}
        self.notes.append(f"parallel stages: Buildah runs with --jobs {jobs} (its default, 1, runs stages one by one); pybuild's --jobs defaults to the CPU count, BuildKit has no limit.")
        name = f"parallel stages ({w.PARALLEL_STAGES} x ~1 s CPU), no cache"
        return [self.row(name, lambda e: self.build(e, context, w.PARALLEL, "runall-parallel", no_cache=True, extra=extra.get(e, [])))]

    def runs(self) -> list[Row]:
        context = self.engines.work / "runs"
        context.mkdir()
        return [self.row("40 RUN steps, no cache", lambda e: self.build(e, context, w.run_chain(40), "runall-runs", no_cache=True))]

    def context(self, files: int, megabytes: int) -> list[Row]:
        phases = ("cold", "no-op rebuild", "touch every file", "one file changed")
        times: dict[str, dict[str, list[float]]] = {p: {e: [] for e in self.engines.available} for p in phases}
        failed: dict[str, RuntimeError] = {}
        seed = time.time_ns()  # new bytes every run: no engine finds them in a cache from an earlier run
        for r in range(self.repeat):
            for engine in self.engines.available:
                if engine in failed:
                    continue
                context = self.engines.work / f"context-{r}-{engine}"
                paths = w.make_random_context(context, files, megabytes, seed + r)
                tag = "runall-context"
                try:
                    time.sleep(RACY_PAUSE)
                    times["cold"][engine].append(self.build(engine, context, w.CONTEXT, tag))
                    time.sleep(RACY_PAUSE)
                    times["no-op rebuild"][engine].append(self.build(engine, context, w.CONTEXT, tag))
                    time.sleep(RACY_PAUSE)
                    for path in paths:
                        os.utime(path)
                    times["touch every file"][engine].append(self.build(engine, context, w.CONTEXT, tag))
                    time.sleep(RACY_PAUSE)
                    paths[len(paths) // 2].write_bytes(f"changed {r}".encode())
                    times["one file changed"][engine].append(self.build(engine, context, w.CONTEXT, tag))
                except RuntimeError as error:
                    failed[engine] = error
                    print(f"  {engine:8} context: FAILED\n{error}", file=sys.stderr)
                finally:
                    shutil.rmtree(context, ignore_errors=True)
        for engine, error in failed.items():
            self.notes.append(f"{engine}, big context: failed: {reason(error)}")
        label = f"context {files:,} files / {megabytes} MB"
        return [self.summarize(f"{label}: {p}", {e: v for e, v in times[p].items() if v and e not in failed}) for p in phases]

    def c_build(self) -> list[Row]:
        context = w.copy_c_context(self.engines.work / "c-hello")
        tag = "runall-c-hello"
        cold = self.row("multi-stage C build (gcc -> scratch): cold", lambda e: self.build(e, context, w.C_BUILD, tag, no_cache=True))

        def prime(engine: str) -> None:  # an untimed build: every step is cached afterwards
            self.build(engine, context, w.C_BUILD, tag)

        no_op = self.row("multi-stage C build: no-op rebuild", lambda e: self.build(e, context, w.C_BUILD, tag), prime)
        return [cold, no_op]

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

        row = self.row(f"export a {size / 1e6:.0f} MB image to an archive", one_run, prepare)
        self.notes.append(
            "export: each engine's own archive command with its defaults — `pybuild save` and `docker save` write a docker-archive "
            "(uncompressed layer tars), `buildah push oci-archive:` an OCI archive whose layers it gzips during the push. Archive sizes: "
            + ", ".join(f"{e} {s}" for e, s in sizes.items()) + "."
        )
        return [row]

    def cleanup(self) -> None:
        for engine, tags in self.tags.items():
            for tag in sorted(tags):
                if engine == "buildkit":
                    subprocess.run([DOCKER, "rmi", "-f", tag], capture_output=True)
                elif engine == "buildah":
                    subprocess.run(["buildah", "rmi", "-f", tag], capture_output=True)
        if "buildkit" in self.engines.available:
            subprocess.run([DOCKER, "rmi", w.GCC_FROM["buildkit"]], capture_output=True)
        if "buildah" in self.engines.available:
            # the tag, and the name the docker-archive gave it
            subprocess.run(["buildah", "rmi", w.GCC_FROM["buildah"], "localhost/pybuild-bench/gcc:local"], capture_output=True)
        # Untagged images this run left behind (re-tagged results, Buildah's --layers
        # intermediates): several GB a run.  An image still in use is refused and stays.
        for engine, before in self.dangling_before.items():
            for _ in range(3):  # children first: a parent goes on the next pass
                left = [i for i in dangling_images(engine) if i not in before]
                if not left:
                    break
                for image in left:
                    subprocess.run([DOCKER if engine == "buildkit" else "buildah", "rmi", image], capture_output=True)


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
        out.append(_first([*PYBUILD, "--version"]) + f" (git {_first(['git', '-C', str(REPO), 'rev-parse', '--short', 'HEAD'])})")
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
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in notes]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the table shows medians (default 3)")
    parser.add_argument("--engines", default="pybuild,buildkit,buildah")
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run: " + ",".join(WORKLOADS))
    parser.add_argument("--files", type=int, default=5_000, help="files of the big context (default 5,000)")
    parser.add_argument("--megabytes", type=int, default=100, help="size of the big context in MB (default 100)")
    parser.add_argument("--full", action="store_true", help="the big context at benchmarks/context.py's full size: 20,000 files, 400 MB")
    parser.add_argument("--export-megabytes", type=int, default=100, help="size of the exported image's content (default 100)")
    parser.add_argument("--quiet-load", type=float, default=0.0, metavar="LOAD", help="before each workload, wait (up to 10 min) for the 1-minute load average to fall below LOAD")
    parser.add_argument("--markdown", type=Path, help="also write the report (machine, versions, table, notes) to this file")
    args = parser.parse_args(argv)
    if args.full:
        args.files, args.megabytes = 20_000, 400
    chosen = [x for x in args.only.split(",") if x]
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")

    started = time.perf_counter()
    if "pybuild" in args.engines.split(","):
        byte_compile()
    # what the peers' stores hold untagged already: the clean-up leaves it alone
    dangling_before = {e: dangling_images(e) for e in ("buildkit", "buildah")}
    engines = Engines.prepare(args.engines.split(","))
    driver = Driver(engines, args.repeat, dangling_before)
    rows: list[Row] = []
    try:
        if "c" in chosen:
            gcc_tar = engines.work / "gcc.tar"
            run([sys.executable, str(w.EXAMPLES / "base-images" / "make-gcc-rootfs"), str(gcc_tar)])
            w.import_gcc(engines, gcc_tar)
            gcc_tar.unlink()
        for name in chosen:
            if args.quiet_load:
                wait_for_quiet(args.quiet_load)
            print(f"workload {name} ...", file=sys.stderr, flush=True)
            if name == "parallel":
                rows += driver.parallel()
            elif name == "runs":
                rows += driver.runs()
            elif name == "context":
                rows += driver.context(args.files, args.megabytes)
            elif name == "c":
                rows += driver.c_build()
            elif name == "export":
                rows += driver.export(args.export_megabytes)
        report = [
            f"Run of {datetime.date.today().isoformat()}, `benchmarks/run_all.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip() + f" ({(time.perf_counter() - started) / 60:.1f} min), median of {args.repeat} runs per cell:",
            "",
            table(rows, engines.available),
            "",
            "Fastest and slowest of the runs behind each median:",
            "",
            spread_table(rows, driver.spreads, engines.available),
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
