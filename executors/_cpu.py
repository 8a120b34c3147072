"""One budget for pybuild's own CPU-heavy work in threads: a CPU count of it at once.

Steps run without a limit by default (``--jobs``: BuildKit's every ready step
at once), since a step that waits (sleep, network, a registry) costs no CPU.
What pybuild itself computes for them -- hashing a context, the file work of
COPY, unpacking and hashing layers -- competes for the same cores, and forty
threads of it would only thrash.  Such work runs through ``run_cpu_bound``
(or inside ``async with cpu_limiter()``): one limiter per trio run, with as
many tokens as this process may use CPUs.

A holder must never wait for something another holder could need (a lock,
a step's result): with every token held, that would wait forever.  Waiting
for another process (``flock``) or the network is not CPU work: use a plain
``trio.to_thread.run_sync`` for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import trio

T = TypeVar("T")

_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("pybuild_cpu_limiter")


def cpu_budget() -> int:
    """How many CPUs this process may run on (its affinity mask, as ``nproc``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_limiter() -> trio.CapacityLimiter:
    """The limiter of this trio run's CPU-heavy work (made on first use)."""
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(cpu_budget())
        _LIMITER.set(limiter)
        return limiter


async def run_cpu_bound(function: Callable[..., T], *args: object) -> T:
    """``function(*args)`` in a worker thread, at most ``cpu_budget()`` of them at once."""
    return await trio.to_thread.run_sync(function, *args, limiter=cpu_limiter())
