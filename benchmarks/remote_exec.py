#!/usr/bin/env python3
"""Remote execution (issue 19): builds on a BuildGrid cluster of two ``pybuild worker``s,
beside the same builds run locally, all on this one machine.

    .venv/bin/python benchmarks/remote_exec.py [--repeat 3] [--jobs 2]

- **four stages**: four independent stages (``RUN sleep 2`` plus real work each), then a
  stage copying their results: locally (steps at once, no limit) and with
  ``--remote-executor`` (two workers, ``--jobs`` steps each).  One machine gains nothing
  from distribution: the figure says what the round trips cost, not a speed-up.
- **per-step overhead**: a chain of 40 ``RUN true N`` steps and one of a single step, each
  with ``--no-cache``; per step = (t40 - t1) / 39 (start-up, base and export cancel out),
  locally and remotely; the remote figure minus the local one is what executing a step on
  the cluster adds (target: under 100 ms on this machine).
- **where a remote step's time goes**: the CPU time each process group spends per step,
  measured the same way ((cpu40 - cpu1) / 39): the client (``pybuild build`` and its
  sandboxes), the two workers, BuildGrid, PostgreSQL.  On a machine others load too, wall
  times wander; CPU times barely do, and on two cores they are what a step waits for.

The cluster is the one tests/remote starts (PostgreSQL from Debian, BuildGrid 0.4.4 from
``build/buildgrid-venv``; ``.ci/setup`` installs both), in a temporary directory removed at
the end.  Every round's steps are new (a unique first line), so the cluster's action cache
never answers.  Medians of --repeat rounds.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import pwd
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from peers import Engines, median  # noqa: E402

from tests.remote import conftest as cluster  # noqa: E402  # PostgreSQL and BuildGrid as tests/remote start them
from tests.remote.workers import WorkerProcess  # noqa: E402

STAGES = 4


def four_stages(tag: str) -> str:
    return "".join(
        f"FROM busybox AS stage{n}\n"
        f"RUN echo {tag} > /tag && sleep 2 && seq 1 {200000 + n} | md5sum > /stage{n}.sum\n"
        for n in range(STAGES)
    ) + "FROM busybox\n" + "".join(f"COPY --from=stage{n} /stage{n}.sum /out/\n" for n in range(STAGES))


def chain(steps: int, tag: str) -> str:
    return f"FROM busybox\nRUN echo {tag} > /tag\n" + "".join(f"RUN true {i}\n" for i in range(steps))


@contextlib.contextmanager
def postgres() -> Iterator[cluster.Postgres]:
    """PostgreSQL as tests/remote's session fixture starts it (as the postgres user)."""
    bindir = next(d for d in cluster.POSTGRES_BINDIRS if (d / "initdb").exists())
    owner = pwd.getpwnam("postgres")
    directory = Path(tempfile.mkdtemp(prefix="pybuild-bench-postgres-"))
    os.chown(directory, owner.pw_uid, owner.pw_gid)
    server = cluster.Postgres(port=cluster.free_port(), directory=directory, bindir=bindir, user="postgres")
    data = directory / "data"
    try:
        done = server.run("initdb", "-D", str(data), "-A", "trust", "-U", "bgd", "--no-sync", "-E", "UTF8")
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr[-2000:]}")
        postmaster = cluster._start_postmaster(server, data)
        try:
            yield server
        finally:
            server.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
            cluster._reap(postmaster)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def two_workers(url: str, directory: Path, jobs: int) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(url, directory, name, jobs=jobs) for name in ("bench-w1", "bench-w2")]
    try:
        for worker in workers:
            worker.wait_for("serving")
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def worker_times(workers: list[WorkerProcess]) -> tuple[float, float]:
    """Medians over the chains' ``RUN true`` steps of the workers' own figures: the step's
    run and the whole lease (``ran … (exit code 0, 0.05s, lease 0.09s)``)."""
    found = re.compile(r"^ran RUN true \d+ \(exit code 0, ([0-9.]+)s.*, lease ([0-9.]+)s\)$")
    pairs = [(float(m[1]), float(m[2])) for w in workers for line in w.lines("ran ") if (m := found.match(line))]
    return median([p[0] for p in pairs]), median([p[1] for p in pairs])


GROUPS = ("client", "workers", "BuildGrid", "PostgreSQL")


def cpu_by_group() -> collections.Counter[str]:
    """CPU seconds so far (user + system, reaped children included) of this process's children
    by group: the builds (reaped by this process), and the live workers, BuildGrid and
    PostgreSQL (each with the children it reaped: sandboxes, backends)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    commands: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry.name}/cmdline", "rb") as cmdline:
                commands[int(entry.name)] = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(fields[1])
        seconds[int(entry.name)] = sum(int(f) for f in fields[11:15]) / ticks  # utime stime cutime cstime
    found: collections.Counter[str] = collections.Counter()
    me = os.getpid()
    for pid, spent in seconds.items():
        top, walker = pid, pid
        while walker in parents and parents[walker] != me:
            walker = parents[walker]
            top = walker
        if parents.get(top) != me:
            continue
        command = commands.get(top, "")
        group = "BuildGrid" if " server start " in command else "PostgreSQL" if "postgres" in command else "workers" if " worker " in command else None
        if group:
            found[group] += spent
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the builds, each reaped when it ended
    found["client"] = usage.ru_utime + usage.ru_stime
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="steps at once on each worker (default 2)")
    args = parser.parse_args()
    engines = Engines.prepare(only=("pybuild",))
    context = engines.work / "context"
    context.mkdir()
    rounds = iter(range(1_000_000))

    def timed(body: str, *extra: str) -> float:
        return engines.build("pybuild", context, body, tag="bench-remote", no_cache=True, extra=extra)

    def unique() -> str:
        return f"{os.getpid()}-{time.time_ns()}-{next(rounds)}"

    results: dict[str, list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    try:
        with postgres() as database, cluster.start_buildgrid(database, engines.work / "buildgrid") as server, \
                two_workers(server.url, engines.work, args.jobs) as workers:
            remote = ("--remote-executor", server.url)
            for round_number in range(args.repeat):
                print(f"round {round_number + 1}/{args.repeat}", file=sys.stderr, flush=True)
                results.setdefault("four stages, local", []).append(timed(four_stages(unique())))
                results.setdefault("four stages, remote", []).append(timed(four_stages(unique()), *remote))
                for where, extra in (("local", ()), ("remote", remote)):
                    before = cpu_by_group()
                    single = timed(chain(1, unique()), *extra)
                    between = cpu_by_group()
                    total = timed(chain(40, unique()), *extra)
                    after = cpu_by_group()
                    results.setdefault(f"per RUN step, {where}", []).append((total - single) / 39)
                    for group in GROUPS:
                        spent = ((after[group] - between[group]) - (between[group] - before[group])) / 39
                        cpu.setdefault((where, group), []).append(spent)
            spread = {w.name: len(w.lines("ran ")) for w in workers}
            step, lease = worker_times(workers)
    finally:
        engines.cleanup()
    rows = {name: median(values) for name, values in results.items()}
    print(f"| workload ({args.repeat} rounds, medians; two workers x --jobs {args.jobs}, one machine) | seconds |")
    print("|---|---|")
    for name, value in rows.items():
        print(f"| {name} | {value:.3f} |")
    added = rows["per RUN step, remote"] - rows["per RUN step, local"]
    print(f"| remote execution's overhead per RUN step (remote - local) | {added:.3f} |")
    print(f"| of which on the worker: the step itself / the whole lease (its reads and uploads too), medians of `RUN true` | {step:.3f} / {lease:.3f} |")
    for where in ("local", "remote"):
        spent = {group: median(cpu[(where, group)]) for group in GROUPS}
        shown = ", ".join(f"{group} {value * 1000:.0f}" for group, value in spent.items() if where == "remote" or group == "client")
        print(f"| CPU per RUN step, {where} (ms: {shown}) | {sum(spent.values()):.3f} |")
    print(f"\nsteps each worker ran: {spread}; target for the overhead: under 0.100 s "
          f"({'met' if added < 0.1 else 'not met'}); load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
