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

    sudo .venv/bin/python benchmarks/run_overhead_sandbox.py --baseline /tmp/old/pybuild

A/B on a noisy machine: steps alternate, in pairs, between this checkout's
executor and one whose zygote (and so its sandbox and overlay options) is the
baseline checkout's, without this checkout's cgroup-move primer; prints both
summaries and how many pairs this checkout won.  The trio side is this
checkout's for both (two versions of pybuild do not load in one process), so
a baseline measures the sandbox side of a change, plus the primer.
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
from pybuild.executors import _executor  # noqa: E402

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


class BaselineExecutor(SandboxExecutor):
    """The executor with another checkout's zygote and no cgroup-move primer."""

    def __init__(self, zygote: str, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.zygote_script = zygote

    def _prime_migration(self) -> None:
        return None

    async def _ensure_zygote(self) -> _executor._Zygote:
        ours = _executor._ZYGOTE
        _executor._ZYGOTE = self.zygote_script  # read when the zygote starts
        try:
            return await super()._ensure_zygote()
        finally:
            _executor._ZYGOTE = ours


async def interleaved(executors: dict[str, SandboxExecutor], base: Path, work: Path, network: str, steps: int) -> dict[str, list[float]]:
    """Each step once through each executor, in alternating order; each keeps a chain of its own."""
    lowers = {name: (str(base),) for name in executors}
    times: dict[str, list[float]] = {name: [] for name in executors}
    for i in range(steps):
        names = list(executors) if i % 2 == 0 else list(reversed(executors))
        for name in names:
            step = work / f"{name}-{network}-{i}"
            (step / "upper").mkdir(parents=True)
            (step / "work").mkdir()
            start = time.perf_counter()
            result = await executors[name].run(
                Rootfs(lowers[name], str(step / "upper"), str(step / "work")), ProcessSpec(("/bin/sh", "-c", "true"), env=(PATH,), network=network)
            )
            times[name].append(time.perf_counter() - start)
            if result.exit_code != 0:
                raise SystemExit(f"{name} step {i} failed: {result}")
            lowers[name] = (str(step / "upper"),) + lowers[name]
    return times


async def compare(steps: int, baseline: Path) -> None:
    zygote = baseline / "executors" / "_zygote.py"
    if not zygote.is_file():
        raise SystemExit(f"{baseline} is not a pybuild checkout (no executors/_zygote.py)")
    with tempfile.TemporaryDirectory(prefix="pybuild-bench-") as tmp:
        root = Path(tmp)
        base = make_busybox_rootfs(root / "busybox")
        executors = {"this": SandboxExecutor(state_dir=str(root)), "baseline": BaselineExecutor(str(zygote), state_dir=str(root))}
        try:
            await interleaved(executors, base, root / "warmup", "none", 1)
            print(f"{steps} pairs of `RUN true`, this checkout against {baseline}, alternating")
            for network in ("none", "default"):
                times = await interleaved(executors, base, root / "steps", network, steps)
                for name, seconds in times.items():
                    print(summary(f"{name} network={network}", seconds))
                won = sum(1 for ours, theirs in zip(times["this"], times["baseline"]) if ours < theirs)
                print(f"this checkout faster in {won} of {steps} pairs")
        finally:
            for executor in executors.values():
                await executor.aclose()


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
    parser.add_argument("--baseline", type=Path, help="another pybuild checkout to alternate with (A/B pairs)")
    options = parser.parse_args()
    if options.baseline is not None:
        trio.run(compare, options.steps, options.baseline)
    else:
        trio.run(main, options.steps)
