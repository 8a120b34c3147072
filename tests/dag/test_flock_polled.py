"""The worker's flock waits poll: a waiter holds no thread and a cancelled build stops waiting."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import trio

from pybuild.dag._worker import _flock_polled


async def test_waits_for_the_holder_then_takes_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    waiter = os.open(path, os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    taken = trio.Event()

    async def wait() -> None:
        await _flock_polled(waiter)
        taken.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.sleep(0.2)
        assert not taken.is_set()
        os.close(holder)  # releases
        with trio.fail_after(5):
            await taken.wait()
    os.close(waiter)


async def test_many_waiters_use_no_threads_and_can_be_cancelled(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    holder = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    waiters = [os.open(path, os.O_RDWR) for _ in range(100)]  # more than trio's 40 default threads
    with trio.move_on_after(0.3) as scope:
        async with trio.open_nursery() as nursery:
            for fd in waiters:
                nursery.start_soon(_flock_polled, fd)
            await trio.sleep(0.1)
            assert trio.to_thread.current_default_thread_limiter().borrowed_tokens == 0
    assert scope.cancelled_caught
    for fd in [holder, *waiters]:
        os.close(fd)
