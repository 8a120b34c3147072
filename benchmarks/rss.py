"""Run a command and measure its wall time and the peak memory of its whole process tree.

The peak is the highest sum of the resident set sizes (VmRSS) of the command's
process and all its descendants, sampled by a thread that walks
``/proc/PID/task/TID/children``: every 10 ms for the first 100 ms (a short
build), then every 100 ms.  Each sample of a build's tree (the served build, the
sandbox's zygote and monitors, the steps, a dozen threads each) costs a few ms
of CPU, and only pybuild's tree is sampled (BuildKit's work is in dockerd): at
10 ms throughout, the sampler took 0.26 s of CPU during a 2.9 s build of the
CPU-bound parallel stages, which on two cores the build paid for. Not ``ru_maxrss``: an exec'd child's keeps the
high-water mark of the memory it had before the exec, a copy of its parent's,
so a large measuring process would leak into every figure. A process shorter
than a sample can be missed; a build's own are not.

Why not a cgroup's ``memory.peak``: this machine mounts cgroup v1's memory
controller (no ``memory.peak``; v1's ``memory.max_usage_in_bytes`` counts the
page cache, which grows with the bytes a build writes, not with what the
engine holds), and pybuild moves each RUN step into a cgroup of its own in
every hierarchy, so membership of a benchmark's cgroup would lose the steps.
The sum of RSS counts a page shared by two processes (a forked zygote and its
parent) twice: it is an upper bound of the tree's memory.  The anonymous part
(RSS less the file-backed and shared pages, ``statm``'s resident - shared) is
kept beside it: file pages a process maps (a blob read through mmap) count in
RSS but are the page cache's, which the kernel may reclaim.

A build that pybuild's fork server runs (cli/server) is a child of the server, not
of the command: given the root (``server_root``), the trees of the server's
children started during the command count too (their start times are after the
command's), the idle server itself not; ``idle_server_rss`` reports that once.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

INTERVAL = 0.010  # seconds between the first samples
SLOW_INTERVAL = 0.100  # seconds between the later ones
FAST_SAMPLES = 10
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class Peak:
    """The peaks of a process tree's memory, in bytes."""

    rss: int  # the sum of the resident set sizes
    anon: int  # the sum of their anonymous parts (sampled only: 0 if no sample caught the tree)


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak: Peak
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def peak_rss(self) -> int:
        return self.peak.rss


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (children of each of their threads)."""
    found = [pid]
    index = 0
    while index < len(found):
        parent = found[index]
        index += 1
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:  # gone
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{parent}/task/{task}/children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children)
    return found


def tree_rss(pid: int) -> tuple[int, int]:
    """The sums of the resident set sizes of ``pid``'s process tree and of their
    anonymous parts, in bytes."""
    total = anon = 0
    for member in descendants(pid):
        try:
            with open(f"/proc/{member}/statm", "rb") as f:
                fields = f.read().split()
            resident, shared = int(fields[1]) * PAGE, int(fields[2]) * PAGE
        except (OSError, IndexError, ValueError):  # gone, or a zombie's empty statm
            continue
        total += resident
        anon += resident - shared
    return total, anon


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks after boot (/proc/PID/stat's 22nd field)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def server_pid(root: Path) -> int | None:
    """The pid of pybuild's fork server of ``root`` (its pid file), if it runs."""
    try:
        pid = int((root / "server" / "pid").read_text())
    except (OSError, ValueError):
        return None
    return pid if start_ticks(pid) is not None else None


def served_rss(server: int, since: int) -> tuple[int, int]:
    """The memory of the trees of ``server``'s children that started at ``since`` or later."""
    total = anon = 0
    for child in children(server):
        started = start_ticks(child)
        if started is not None and started >= since:
            rss, private = tree_rss(child)
            total, anon = total + rss, anon + private
    return total, anon


def children(pid: int) -> list[int]:
    """``pid``'s own children (of every thread)."""
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            found.extend(int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
        except OSError:
            continue
    return found


def idle_server_rss(root: Path) -> int | None:
    """The resident set of ``root``'s idle fork server, or None when none runs."""
    pid = server_pid(root)
    return None if pid is None else tree_rss(pid)[0]


class _Sampler(threading.Thread):
    def __init__(self, pid: int, server: int | None = None) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.server = server
        self.since = start_ticks(pid) or 0
        self.peak = 0
        self.anon = 0
        self.done = threading.Event()

    def run(self) -> None:
        samples = 0
        while not self.done.is_set():
            total, anon = tree_rss(self.pid)
            if self.server is not None:
                served, served_anon = served_rss(self.server, self.since)
                total, anon = total + served, anon + served_anon
            self.peak, self.anon = max(self.peak, total), max(self.anon, anon)
            samples += 1
            self.done.wait(INTERVAL if samples < FAST_SAMPLES else SLOW_INTERVAL)


def measure(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, server_root: Path | None = None) -> Measured:
    """Run ``argv`` (output captured in temporary files, so no pipe needs a reader)
    and return its wall time, the peak RSS of its process tree and its output.
    ``server_root``: a pybuild root whose fork server may run the build (counted too)."""
    server = server_pid(server_root) if server_root is not None else None
    with open(os.devnull, "rb") as stdin, _Spool() as out, _Spool() as err:
        started = time.perf_counter()
        process = subprocess.Popen(list(argv), env=env, cwd=cwd, stdin=stdin, stdout=out.file, stderr=err.file)
        sampler = _Sampler(process.pid, server)
        sampler.start()
        _, status = os.waitpid(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.done.set()
        sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)  # waitpid reaped it: tell Popen
        # not ru_maxrss: an exec'd child's carries its parent's high-water mark from before the exec
        peak = Peak(sampler.peak, sampler.anon)
        return Measured(seconds, peak, process.returncode, out.read(), err.read())


class _Spool:
    def __enter__(self) -> _Spool:
        import tempfile

        self.file = tempfile.TemporaryFile()
        return self

    def read(self) -> bytes:
        self.file.seek(0)
        return self.file.read()

    def __exit__(self, *exc: object) -> None:
        self.file.close()


if __name__ == "__main__":  # a quick check by hand: rss.py COMMAND...
    import sys

    result = measure(sys.argv[1:])
    print(f"{result.seconds:.3f} s, peak RSS of the tree {result.peak.rss / 2**20:.1f} MiB (anonymous {result.peak.anon / 2**20:.1f} MiB), exit {result.returncode}")
