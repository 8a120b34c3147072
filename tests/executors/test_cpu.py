"""The CPU budget of pybuild's own threads: never more than a CPU count of them at once."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from pybuild.executors import _cpu
from pybuild.executors import cpu_budget, cpu_limiter, run_cpu_bound


class Gauge:
    """Counts the fake workloads running at this moment, and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.done = 0

    def work(self, seconds: float) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(seconds)  # long enough for every started thread to overlap if allowed
        with self.lock:
            self.now -= 1
            self.done += 1
        return threading.get_ident()


def test_budget_is_the_affinity_mask() -> None:
    import os

    assert cpu_budget() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("budget", [1, 3])
async def test_never_more_than_the_budget_at_once(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    monkeypatch.setattr(_cpu, "cpu_budget", lambda: budget)
    gauge = Gauge()
    async with trio.open_nursery() as nursery:
        for _ in range(3 * budget + 1):
            nursery.start_soon(run_cpu_bound, gauge.work, 0.05)
    assert gauge.done == 3 * budget + 1
    assert gauge.most == budget  # reached (the work overlaps) and never exceeded


async def test_one_limiter_per_run_shared_by_every_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_cpu, "cpu_budget", lambda: 2)
    limiter = cpu_limiter()
    assert cpu_limiter() is limiter
    assert limiter.total_tokens == 2
    gauge = Gauge()

    async def holding() -> None:  # what the rootfs caller does around its own thread
        async with cpu_limiter():
            await trio.to_thread.run_sync(gauge.work, 0.05)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(holding)
            nursery.start_soon(run_cpu_bound, gauge.work, 0.05)
    assert gauge.most == 2


def test_a_new_run_gets_its_own_limiter() -> None:
    async def total() -> trio.CapacityLimiter:
        limiter = cpu_limiter()
        assert limiter.borrowed_tokens == 0
        return limiter

    assert trio.run(total) is not trio.run(total)


async def test_results_and_errors_come_back() -> None:
    assert await run_cpu_bound(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        await run_cpu_bound(lambda: 1 // 0)
