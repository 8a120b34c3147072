"""Per-step overhead of the RUN sandbox alone (no solver, no snapshot commit).

    sudo .venv/bin/python benchmarks/run_overhead_sandbox.py [--steps 40]

Runs a chain of `RUN true` steps through ``SandboxExecutor`` on a busybox base,
as a build would: step i's rootfs is the busybox tree plus the upper dirs of
the steps before it (top first), each step with fresh upper/work dirs.  Done
for network ``none`` and ``default`` (slirp4netns), after one warm-up step
that starts the zygote.  Prints mean, median and p90 of the wall time of
``executor.run`` per step, and the same for a bare fork/exec of ``true`` from
trio as a floor.

For comparison, BuildKit on the same machine: ``benchmarks/run_overhead.py``
(the full 40-step build with pybuild, BuildKit and Buildah).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from conftest import make_busybox_rootfs  # noqa: E402

from pybuild.executors import ProcessSpec, Rootfs, SandboxExecutor  # noqa: E402

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[min(len(ms) - 1, int(len(ms) * 0.9))]
    return f"{label:<28} mean {statistics.mean(ms):6.1f} ms   median {statistics.median(ms):6.1f} ms   p90 {p90:6.1f} ms   (n={len(ms)})"


async def chain(executor: SandboxExecutor, base: Path, work: Path, network: str, steps: int) -> list[float]:
    lowers: tuple[str, ...] = (str(base),)
    times = []
    for i in range(steps):
        step = work / f"{network}-{i}"
        (step / "upper").mkdir(parents=True)
        (step / "work").mkdir()
        rootfs = Rootfs(lowers, str(step / "upper"), str(step / "work"))
        start = time.perf_counter()
        result = await executor.run(rootfs, ProcessSpec(("/bin/sh", "-c", "true"), env=(PATH,), network=network))
        times.append(time.perf_counter() - start)
        if result.exit_code != 0:
            raise SystemExit(f"step {i} failed: {result}")
        lowers = (str(step / "upper"),) + lowers
    return times


async def bare_exec(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await trio.run_process(["true"])
        times.append(time.perf_counter() - start)
    return times


async def main(steps: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pybuild-bench-") as tmp:
        root = Path(tmp)
        base = make_busybox_rootfs(root / "busybox")
        async with SandboxExecutor(state_dir=str(root)) as executor:
            await chain(executor, base, root / "warmup", "none", 1)
            print(f"{steps} x `RUN true` through SandboxExecutor ({executor.cgroup_layout.describe()})")
            for network in ("none", "default"):
                print(summary(f"network={network}", await chain(executor, base, root / "steps", network, steps)))
        print(summary("bare fork/exec of true", await bare_exec(steps)))


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("needs root (namespaces, overlayfs, cgroups)")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    trio.run(main, parser.parse_args().steps)
