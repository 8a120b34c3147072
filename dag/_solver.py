"""The scheduler: solve a graph of ops with trio, in parallel, each op once.

One task per op; an op starts as soon as its inputs are done; at most
``jobs`` ops execute at once, or every ready one with ``jobs=None`` (BuildKit's
way, ``--jobs``'s default: a step that waits costs no CPU; pybuild's own CPU
work for them is bounded apart, by ``executors.cpu_limiter``); cache lookups
are not limited; an op that several consumers share runs once and they all
wait on its ``trio.Event``.
The first failure cancels everything else and is raised after every task
has stopped, so no sandbox or temp dir outlives the solve.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import field
from typing import Protocol

import trio

from pybuild._frozen import frozen
from pybuild.errors import BuildError, Location, PybuildError, shortened

from ._events import Event, EventSink, StepCached, StepFailed, StepFinished, StepMiss, StepStarted, ignore_events
from ._graph import Definition
from ._ops import Op


@frozen
class Result:
    """A solved op.  ``chain`` is its filesystem as snapshot ids, top first;
    ``layer`` the snapshot this op added (None if it changed nothing);
    ``path`` a host directory for sources that are directories (the context)."""

    key: str
    chain: tuple[str, ...] = ()
    layer: str | None = None
    path: str | None = None
    cached: bool = False
    created: float = 0.0  # when the layer was first made (kept across cached rebuilds)


@frozen
class CacheKey:
    """A cache key and the named inputs it was made of (to explain a miss)."""

    key: str
    inputs: Mapping[str, str] = field(default_factory=dict)
    step_id: str | None = None  # stable name of the step across builds


class OpRunner(Protocol):
    """How the solver turns one op into a result; the real one is ``Worker``."""

    async def cache_key(self, digest: str, op: Op, inputs: Mapping[str, Result]) -> CacheKey:
        """The op's cache key, from its own fields and its inputs' keys and contents."""

    async def load(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result]) -> Result | None:
        """A stored result for ``key`` whose data is intact, or None."""

    async def explain_miss(self, digest: str, op: Op, key: CacheKey) -> str | None:
        """Why ``key`` missed, in words, if it can be told."""

    async def run(
        self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result], emit: EventSink
    ) -> Result:
        """Execute the op and store its result under ``key``."""


@frozen
class SolveStatistics:
    ops: int
    cached: int
    executed: int
    max_parallel: int
    duration: float


class Solver:
    """Solves one Definition.  ``statistics()`` is available after ``solve``.

    ``dockerfile`` names the file the ops' spans are lines of: an op's error
    that has no location of its own is given its step's, in this one place.
    """

    def __init__(
        self,
        definition: Definition,
        runner: OpRunner,
        *,
        jobs: int | None = 2,
        emit: EventSink = ignore_events,
        dockerfile: str | None = None,
        after: Callable[[str, Result], Awaitable[None]] | None = None,
    ) -> None:
        """``after(digest, result)`` runs in the op's own task once its result is there and
        its dependents were let go (work that may overlap the rest of the build); the solve
        ends when every one has returned, and one that raises fails the build."""
        if jobs is not None and jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.definition = definition
        self.dockerfile = dockerfile
        self.runner = runner
        self.emit = emit
        self.after = after
        self.limiter = trio.CapacityLimiter(math.inf if jobs is None else jobs)  # None: every ready op at once, as BuildKit
        self.results: dict[str, Result] = {}
        self._done: dict[str, trio.Event] = {}
        self._failure: BaseException | None = None
        self._running = 0
        self._max_running = 0
        self._cached = 0
        self._executed = 0
        self._start = 0.0
        self._end = 0.0

    def statistics(self) -> SolveStatistics:
        return SolveStatistics(
            ops=len(self._done),
            cached=self._cached,
            executed=self._executed,
            max_parallel=self._max_running,
            duration=self._end - self._start,
        )

    async def solve(self, targets: Sequence[str | None]) -> dict[str, Result]:
        graph = self.definition.needed_by([t for t in targets if t])
        self._done = {digest: trio.Event() for digest in graph.ops}
        self._start = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                for digest, op in graph.ops.items():
                    nursery.start_soon(self._solve_one, nursery.cancel_scope, digest, op)
        except BaseExceptionGroup as group:
            # Ctrl-C delivered at the nursery's own checkpoint arrives wrapped
            if group.subgroup(KeyboardInterrupt) is not None:
                raise KeyboardInterrupt from None
            raise
        finally:
            self._end = trio.current_time()
        if self._failure is not None:
            raise self._failure
        return {t: self.results[t] for t in targets if t}

    async def _solve_one(self, scope: trio.CancelScope, digest: str, op: Op) -> None:
        name = self.definition.meta[digest].description
        try:
            for dependency in op.inputs():
                await self._done[dependency].wait()
            inputs = {d: self.results[d] for d in op.inputs()}
            key = await self.runner.cache_key(digest, op, inputs)
            result = await self.runner.load(digest, op, key, inputs)
            if result is not None:
                self._cached += 1
                if not self.definition.meta[digest].internal:
                    self.emit(StepCached(digest, name, trio.current_time()))
            else:
                result = await self._execute(digest, op, key, inputs, name)
            self.results[digest] = result
            self._done[digest].set()
            if self.after is not None:
                await self.after(digest, result)
        except trio.Cancelled:
            raise
        except BaseException as error:  # noqa: BLE001 - every failure cancels the solve
            if self._failure is None:
                self._failure = self._located(_user_error(error, name), digest, name)
                self.emit(StepFailed(digest, name, trio.current_time(), str(self._failure)))
            scope.cancel()

    async def _execute(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result], name: str) -> Result:
        internal = self.definition.meta[digest].internal
        async with self.limiter:
            self._running += 1
            self._max_running = max(self._max_running, self._running)
            started = trio.current_time()
            try:
                if not internal:
                    reason = await self.runner.explain_miss(digest, op, key)
                    if reason:
                        self.emit(StepMiss(digest, name, reason))
                    self.emit(StepStarted(digest, name, started))
                result = await self.runner.run(digest, op, key, inputs, self.emit)
            finally:
                self._running -= 1
        if result.cached:  # another process made it while this one waited for the step
            self._cached += 1
            if not internal:
                self.emit(StepCached(digest, name, trio.current_time()))
            return result
        self._executed += 1
        if not internal:
            now = trio.current_time()
            self.emit(StepFinished(digest, name, now, now - started))
        return result


    def _located(self, error: BaseException, digest: str, name: str) -> BaseException:
        """``error`` with its step's Dockerfile lines and description, as a failed RUN has them."""
        span = self.definition.meta[digest].span
        if not isinstance(error, PybuildError) or error.location is not None or span is None or self.dockerfile is None:
            return error
        error.location = Location(self.dockerfile, *span)
        if not self.definition.meta[digest].internal and not error.message.startswith(name):
            error.message = f"{shortened(name)}: {error.message}"
        return error


def _user_error(error: BaseException, name: str) -> BaseException:
    """What to report for ``error``: itself, the first pybuild error inside a group, or an internal error."""
    if isinstance(error, BaseExceptionGroup):
        if error.subgroup(KeyboardInterrupt) is not None:
            return KeyboardInterrupt()
        leaf = _first_leaf(error)
        if leaf is not None:
            return leaf
    if isinstance(error, (PybuildError, KeyboardInterrupt)):
        return error
    return _unexpected(error, name)


def _first_leaf(group: BaseExceptionGroup) -> PybuildError | None:
    for inner in group.exceptions:
        found = _first_leaf(inner) if isinstance(inner, BaseExceptionGroup) else inner
        if isinstance(found, PybuildError):
            return found
    return None


def _unexpected(error: BaseException, name: str) -> BuildError:
    """An error pybuild did not expect: keep the step in the message, not a traceback."""
    failure = BuildError(f"{name}: internal error: {type(error).__name__}: {error}", hint="this is a pybuild bug; please report it")
    failure.__cause__ = error
    return failure


async def solve(
    definition: Definition,
    targets: Sequence[str | None],
    runner: OpRunner,
    *,
    jobs: int | None = 2,
    emit: EventSink = ignore_events,
    dockerfile: str | None = None,
) -> dict[str, Result]:
    """Solve ``targets`` (op digests) and what they need; see ``Solver``."""
    return await Solver(definition, runner, jobs=jobs, emit=emit, dockerfile=dockerfile).solve(targets)


__all__ = ["CacheKey", "Event", "OpRunner", "Result", "SolveStatistics", "Solver", "solve"]
