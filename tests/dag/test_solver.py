"""The scheduler with a fake runner and trio's MockClock: no root, no wall time."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import trio
import trio.testing

from pybuild.dag._events import StepCached, StepFailed, StepFinished, StepStarted
from pybuild.dag._graph import GraphBuilder
from pybuild.dag._ops import ExecOp, ImageSource, OpMeta
from pybuild.dag._solver import CacheKey, Result, Solver
from pybuild.errors import StepFailed as StepFailedError


class FakeRunner:
    """Runs each op by sleeping for its scripted duration; records everything."""

    def __init__(self, durations: Mapping[str, float] | None = None, fail: str | None = None, cached: set[str] | None = None) -> None:
        self.durations = dict(durations or {})
        self.fail = fail
        self.cached = cached or set()
        self.runs: list[str] = []
        self.cancelled: list[str] = []
        self.finished: list[str] = []

    async def cache_key(self, digest, op, inputs):  # type: ignore[no-untyped-def]
        return CacheKey("key-" + digest)

    async def load(self, digest, op, key, inputs):  # type: ignore[no-untyped-def]
        return Result(key.key, cached=True) if digest in self.cached else None

    async def explain_miss(self, digest, op, key):  # type: ignore[no-untyped-def]
        return None

    async def run(self, digest, op, key, inputs, emit):  # type: ignore[no-untyped-def]
        self.runs.append(digest)
        try:
            await trio.sleep(self.durations.get(digest, 1.0))
            if digest == self.fail:
                raise StepFailedError("RUN exit 1: exit code 1", exit_code=1)
            if digest == "interrupt":
                raise KeyboardInterrupt
        except trio.Cancelled:
            self.cancelled.append(digest)
            raise
        self.finished.append(digest)
        return Result(key.key, chain=(digest,))


def run_op(base: str | None, command: str) -> ExecOp:
    return ExecOp(rootfs=base, args=("/bin/sh", "-c", command), env=(), cwd="/", user="")


def two_stages():  # type: ignore[no-untyped-def]
    """base image -> (a1 -> a2) and (b1 -> b2), both from the same base; final copies both."""
    g = GraphBuilder()
    base = g.add(ImageSource("docker.io/library/busybox:latest", "sha256:" + "0" * 64, "linux/amd64"), OpMeta("FROM busybox", internal=True))
    a1 = g.add(run_op(base, "a1"), OpMeta("a1"))
    a2 = g.add(run_op(a1, "a2"), OpMeta("a2"))
    b1 = g.add(run_op(base, "b1"), OpMeta("b1"))
    b2 = g.add(run_op(b1, "b2"), OpMeta("b2"))
    unused = g.add(run_op(base, "exit 1"), OpMeta("unused"))
    return g.build(), base, (a1, a2), (b1, b2), unused


# Every test takes trio's autojumping MockClock (pytest-trio's autojump_clock):
# sleeps take no wall time and elapsed times are exact.


async def test_independent_stages_overlap(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    runner = FakeRunner({base: 0.0, a1: 10, a2: 10, b1: 10, b2: 10})
    solver = Solver(definition, runner, jobs=2)
    start = trio.current_time()
    results = await solver.solve([a2, b2])
    elapsed = trio.current_time() - start
    assert set(results) == {a2, b2}
    assert elapsed == pytest.approx(20)  # two chains of 10+10 side by side
    assert solver.statistics().max_parallel == 2


async def test_jobs_bounds_parallelism(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    runner = FakeRunner({base: 0.0, a1: 10, a2: 10, b1: 10, b2: 10})
    solver = Solver(definition, runner, jobs=1)
    start = trio.current_time()
    await solver.solve([a2, b2])
    assert trio.current_time() - start == pytest.approx(40)
    assert solver.statistics().max_parallel == 1


def many_stages(count: int):  # type: ignore[no-untyped-def]
    """``count`` independent one-step stages on one base image."""
    g = GraphBuilder()
    base = g.add(ImageSource("docker.io/library/busybox:latest", "sha256:" + "0" * 64, "linux/amd64"), OpMeta("FROM busybox", internal=True))
    steps = [g.add(run_op(base, f"sleep {i}"), OpMeta(f"stage {i}")) for i in range(count)]
    return g.build(), base, steps


async def test_no_jobs_limit_runs_every_ready_op_at_once(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, steps = many_stages(6)
    runner = FakeRunner({base: 0.0, **{step: 10 for step in steps}})
    solver = Solver(definition, runner, jobs=None)
    start = trio.current_time()
    await solver.solve(steps)
    assert trio.current_time() - start == pytest.approx(10)
    assert solver.statistics().max_parallel == 6


@pytest.mark.parametrize("jobs", [0, -1])
def test_jobs_below_one_is_refused(jobs: int) -> None:
    definition, _, _ = many_stages(1)
    with pytest.raises(ValueError, match="at least 1"):
        Solver(definition, FakeRunner(), jobs=jobs)


async def test_shared_op_runs_once(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    runner = FakeRunner()
    await Solver(definition, runner, jobs=4).solve([a2, b2, a1])
    assert runner.runs.count(base) == 1
    assert sorted(runner.runs) == sorted({base, a1, a2, b1, b2})


async def test_target_pruning_never_runs_unneeded_ops(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), unused = two_stages()
    runner = FakeRunner(fail=unused)
    results = await Solver(definition, runner).solve([a2])
    assert a2 in results
    assert unused not in runner.runs and b1 not in runner.runs


async def test_dependencies_finish_before_dependents(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    events = []
    runner = FakeRunner({base: 0.0, a1: 3, a2: 1, b1: 1, b2: 5})
    await Solver(definition, runner, jobs=4, emit=events.append).solve([a2, b2])
    order = [e.digest for e in events if isinstance(e, StepFinished)]
    assert order.index(a1) < order.index(a2) and order.index(b1) < order.index(b2)
    started = {e.digest: e.time for e in events if isinstance(e, StepStarted)}
    finished = {e.digest: e.time for e in events if isinstance(e, StepFinished)}
    assert started[a2] >= finished[a1]


async def test_first_failure_cancels_the_rest(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    events = []
    runner = FakeRunner({base: 0.0, a1: 1, b1: 100}, fail=a1)
    start = trio.current_time()
    with pytest.raises(StepFailedError):
        await Solver(definition, runner, jobs=2, emit=events.append).solve([a2, b2])
    assert trio.current_time() - start == pytest.approx(1)  # b1 did not run to its end
    assert runner.cancelled == [b1]
    assert a2 not in runner.runs and b2 not in runner.runs
    failures = [e for e in events if isinstance(e, StepFailed)]
    assert len(failures) == 1 and failures[0].digest == a1


async def test_interrupt_cancels_everything_and_propagates(autojump_clock: trio.testing.MockClock) -> None:
    g = GraphBuilder()
    slow = g.add(run_op(None, "slow"), OpMeta("slow"))
    g.add(run_op(None, "interrupt"), OpMeta("interrupt"))
    definition = g.build()
    # the op named "interrupt" raises KeyboardInterrupt, as Ctrl-C delivered into a task would
    digests = list(definition.ops)
    runner = FakeRunner({slow: 100})
    runner.durations = {digests[0]: 100, digests[1]: 1}

    class Interrupting(FakeRunner):
        async def run(self, digest, op, key, inputs, emit):  # type: ignore[no-untyped-def]
            if digest == digests[1]:
                await trio.sleep(1)
                raise KeyboardInterrupt
            return await super().run(digest, op, key, inputs, emit)

    interrupting = Interrupting({digests[0]: 100})
    with pytest.raises(KeyboardInterrupt):
        await Solver(definition, interrupting, jobs=2).solve(digests)
    assert interrupting.cancelled == [digests[0]]


async def test_cached_ops_do_not_execute(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    events = []
    runner = FakeRunner(cached={base, a1, a2})
    solver = Solver(definition, runner, emit=events.append)
    await solver.solve([a2])
    assert runner.runs == []
    assert {e.digest for e in events if isinstance(e, StepCached)} == {a1, a2}
    assert solver.statistics().cached == 3 and solver.statistics().executed == 0


async def test_unexpected_errors_become_build_errors(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), _, _ = two_stages()

    class Broken(FakeRunner):
        async def run(self, digest, op, key, inputs, emit):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    from pybuild.errors import BuildError

    with pytest.raises(BuildError, match="internal error: RuntimeError: boom"):
        await Solver(definition, Broken()).solve([a2])


def one_located_step(message_error: BaseException):  # type: ignore[no-untyped-def]
    """base -> a COPY at Dockerfile lines 3-4 whose runner raises ``message_error``."""
    g = GraphBuilder()
    base = g.add(ImageSource("docker.io/library/busybox:latest", "sha256:" + "0" * 64, "linux/amd64"), OpMeta("FROM busybox", internal=True))
    step = g.add(run_op(base, "copy"), OpMeta("[2/2] COPY a /", span=(3, 4)))

    class Failing(FakeRunner):
        async def cache_key(self, digest, op, inputs):  # type: ignore[no-untyped-def]
            if digest == step:
                raise message_error
            return CacheKey("key-" + digest)

    return g.build(), step, Failing()


async def test_errors_of_a_step_carry_its_dockerfile_line(autojump_clock: trio.testing.MockClock) -> None:
    from pybuild.errors import BuildError, Location

    definition, step, runner = one_located_step(BuildError('"/a": not found', hint="check the context"))
    events = []
    with pytest.raises(BuildError) as raised:
        await Solver(definition, runner, dockerfile="ctx/Dockerfile", emit=events.append).solve([step])
    assert raised.value.location == Location("ctx/Dockerfile", 3, 4)
    assert str(raised.value) == 'ctx/Dockerfile:3: [2/2] COPY a /: "/a": not found'
    assert raised.value.hint == "check the context"
    assert [e.error for e in events if isinstance(e, StepFailed)] == [str(raised.value)]


async def test_an_error_that_has_a_location_keeps_it(autojump_clock: trio.testing.MockClock) -> None:
    from pybuild.errors import DockerfileError, Location

    error = DockerfileError("bad", location=Location("other", 9))
    definition, step, runner = one_located_step(error)
    with pytest.raises(DockerfileError) as raised:
        await Solver(definition, runner, dockerfile="Dockerfile").solve([step])
    assert str(raised.value) == "other:9: bad"


async def test_unexpected_errors_and_groups_carry_the_line_too(autojump_clock: trio.testing.MockClock) -> None:
    from pybuild.errors import BuildError, ImageError

    definition, step, runner = one_located_step(KeyError("x"))
    with pytest.raises(BuildError) as raised:
        await Solver(definition, runner, dockerfile="Dockerfile").solve([step])
    assert str(raised.value).startswith("Dockerfile:3: [2/2] COPY a /: internal error: KeyError")

    group = ExceptionGroup("nursery", [ImageError("cannot unpack")])
    definition, step, runner = one_located_step(group)
    with pytest.raises(ImageError) as raised_group:
        await Solver(definition, runner, dockerfile="Dockerfile").solve([step])
    assert str(raised_group.value) == "Dockerfile:3: [2/2] COPY a /: cannot unpack"


async def test_after_runs_once_per_op_beside_its_dependents(autojump_clock: trio.testing.MockClock) -> None:
    """``after`` gets each op's result once the op is done, and its dependents do not wait for it."""
    definition, base, (a1, a2), (b1, b2), _ = two_stages()
    runner = FakeRunner({base: 0.0, a1: 10, a2: 10, b1: 10, b2: 10})
    seen: list[tuple[str, str, float]] = []

    async def after(digest: str, result: Result) -> None:
        seen.append((digest, result.key, trio.current_time()))
        await trio.sleep(25)  # longer than the next step: the solve must not wait for it in between

    solver = Solver(definition, runner, jobs=None, after=after)
    start = trio.current_time()
    await solver.solve([a2, b2])
    assert sorted(d for d, _, _ in seen) == sorted([base, a1, a2, b1, b2])
    assert all(key == "key-" + digest for digest, key, _ in seen)
    when = {d: t - start for d, _, t in seen}
    assert when[a2] == 20  # a2 started right after a1 (at 10), not after a1's after (at 35)
    assert trio.current_time() - start == 45  # the solve ends when the last after (a2's, b2's) returns


async def test_an_after_that_raises_fails_the_solve(autojump_clock: trio.testing.MockClock) -> None:
    definition, base, (a1, a2), _, _ = two_stages()

    async def after(digest: str, result: Result) -> None:
        if digest == a1:
            raise StepFailedError("after failed", exit_code=1)

    with pytest.raises(StepFailedError, match="after failed"):
        await Solver(definition, FakeRunner({base: 0.0}), after=after).solve([a2])
