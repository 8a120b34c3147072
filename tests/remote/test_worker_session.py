"""The bot session loop (dag/bot/_session.py) against a fake Bots service: capacity, prompt
reports, draining and giving leases back. No server, no sandbox."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest
import trio

from pybuild.dag.bot import _session
from pybuild.dag.bot._session import INTERNAL, OK, UNAVAILABLE, Assigned, Finished, Session
from pybuild.reapi import Digest


def _digest(n: int) -> Digest:
    return Digest.of(f"action {n}".encode())


class FakeBots:
    """A scheduler with a queue: each update answers at once with up to the free capacity,
    as BuildGrid does when it has work (it long-polls when it has none: here a short sleep)."""

    def __init__(self, work: int, capacity: int) -> None:
        self.queue = [Assigned(f"lease-{n}", _digest(n)) for n in range(work)]
        self.capacity = capacity
        self.assigned: dict[str, Assigned] = {}
        self.finished: dict[str, Finished] = {}
        self.statuses: list[bool] = []
        self.retry = 0  # INTERNAL results re-queued (as BuildGrid's max-job-attempts allows)
        self.lock = threading.Lock()

    def open(self) -> Sequence[Assigned]:
        return self._hand_out(())

    def update(self, running: Sequence[str], finished: Sequence[Finished], *, accepting: bool) -> Sequence[Assigned]:
        with self.lock:
            self.statuses.append(accepting)
            for done in finished:
                if done.lease_id in self.finished:
                    continue
                if done.status == INTERNAL and self.retry:  # BuildGrid re-queues it, same lease id
                    self.retry -= 1
                    self.queue.insert(0, self.assigned.pop(done.lease_id))
                    continue
                self.finished[done.lease_id] = done
        if not accepting:
            time.sleep(0.01)
            return []
        answer = self._hand_out(running)
        if not answer:
            time.sleep(0.02)  # the long poll, shortened
        return answer

    def _hand_out(self, running: Sequence[str]) -> list[Assigned]:
        with self.lock:
            busy = {i for i in self.assigned if i not in self.finished}
            answer = []
            while self.queue and len(busy) < self.capacity:
                lease = self.queue.pop(0)
                self.assigned[lease.lease_id] = lease
                busy.add(lease.lease_id)
                answer.append(lease)
            # the server repeats the active leases in each answer
            return answer + [self.assigned[i] for i in running if i in self.assigned and i not in self.finished]


def _result(lease: Assigned) -> Finished:
    from pybuild.reapi import ActionResult

    return Finished(lease.lease_id, result=ActionResult(exit_code=0, worker="test"))


async def _serve_until(session: Session, done: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.serve)
        await done.wait()
        session.drain()


async def test_runs_every_lease_once_and_never_more_than_the_capacity_at_once() -> None:
    bots = FakeBots(work=7, capacity=3)
    ran: list[str] = []
    running = 0
    most = 0
    all_done = trio.Event()

    async def run(lease: Assigned) -> Finished:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(0.05)
        running -= 1
        ran.append(lease.lease_id)
        if len(ran) == 7:
            all_done.set()
        return _result(lease)

    session = Session(bots, run, capacity=3, keepalive=0.05)
    with trio.fail_after(10):
        await _serve_until(session, all_done)
    assert sorted(ran) == sorted(f"lease-{n}" for n in range(7))
    assert most == 3
    assert set(bots.finished) == set(ran)  # every result reported before serve returned
    assert all(f.status == OK and f.result is not None for f in bots.finished.values())


async def test_an_answer_that_brings_work_is_followed_by_the_next_update_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """BuildGrid assigns a bot's further leases between its updates and hands each out on the
    next one, which may answer at once: the poller must not pause after such an answer (the
    pause is for a server that answers at once with nothing)."""

    class OneAtATime(FakeBots):
        def open(self) -> Sequence[Assigned]:
            return []

        def _hand_out(self, running: Sequence[str]) -> list[Assigned]:
            with self.lock:
                answer = [self.queue.pop(0)] if self.queue else []
                self.assigned.update((lease.lease_id, lease) for lease in answer)
                return answer + [self.assigned[i] for i in running if i in self.assigned and i not in self.finished]

    monkeypatch.setattr(_session, "MIN_POLL", 3600.0)  # a pause after a quick answer would hang this test
    bots = OneAtATime(work=3, capacity=3)
    all_running = trio.Event()
    started: list[str] = []

    async def run(lease: Assigned) -> Finished:
        started.append(lease.lease_id)
        if len(started) == 3:
            all_running.set()
        await all_running.wait()  # all three at once: each came on its own quick answer
        return _result(lease)

    session = Session(bots, run, capacity=3, keepalive=0.05)
    with trio.fail_after(60):  # a hang guard, not a timing: the old pause is an hour here
        await _serve_until(session, all_running)
    assert sorted(started) == ["lease-0", "lease-1", "lease-2"]
    assert set(bots.finished) == set(started)


async def test_a_lease_that_arrives_while_draining_is_given_back_and_a_running_one_finishes() -> None:
    bots = FakeBots(work=1, capacity=2)
    started = trio.Event()
    release = trio.Event()

    async def run(lease: Assigned) -> Finished:
        started.set()
        await release.wait()
        return _result(lease)

    session = Session(bots, run, capacity=2, keepalive=0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.serve)
        with trio.fail_after(5):
            await started.wait()
        session.drain()
        late = Assigned("late", _digest(99))
        session._take([late], session._sent)  # what a long poll in flight when the drain began may still bring
        release.set()
    assert bots.finished["lease-0"].result is not None
    assert bots.finished["late"].status == UNAVAILABLE  # BuildGrid re-queues it for another bot
    assert bots.statuses[-1] is False  # the server was told the worker takes no more work


async def test_abandon_gives_the_running_leases_back() -> None:
    bots = FakeBots(work=2, capacity=2)
    started = 0
    both = trio.Event()

    async def run(lease: Assigned) -> Finished:
        nonlocal started
        started += 1
        if started == 2:
            both.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    session = Session(bots, run, capacity=2, keepalive=0.05)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.serve)
        with trio.fail_after(5):
            await both.wait()
        session.abandon()
    assert {f.status for f in bots.finished.values()} == {UNAVAILABLE}
    assert set(bots.finished) == {"lease-0", "lease-1"}


async def test_a_bug_in_one_lease_is_an_internal_error_for_that_lease_only() -> None:
    bots = FakeBots(work=2, capacity=2)
    done = trio.Event()
    count = 0

    async def run(lease: Assigned) -> Finished:
        nonlocal count
        count += 1
        if count == 2:
            done.set()
        if lease.lease_id == "lease-0":
            raise RuntimeError("boom")
        return _result(lease)

    session = Session(bots, run, capacity=2, keepalive=0.05, say=lambda line: None)
    with trio.fail_after(5):
        await _serve_until(session, done)
    assert bots.finished["lease-0"].status == INTERNAL and "boom" in bots.finished["lease-0"].message
    assert bots.finished["lease-1"].status == OK


async def test_an_update_that_fails_is_said_once_and_retried() -> None:
    bots = FakeBots(work=1, capacity=1)
    failures = 3
    said: list[str] = []
    real_update = bots.update

    down = False

    def flaky(running: Sequence[str], finished: Sequence[Finished], *, accepting: bool) -> Sequence[Assigned]:
        nonlocal failures, down
        down = down or bool(finished)  # the server goes away as the first result comes, for 3 calls
        answer = real_update(running, finished, accepting=accepting) if not (down and failures) else []
        if down and failures:  # checked after the call too: a poll in flight fails with the rest
            failures -= 1
            raise OSError("connection reset")
        return answer

    bots.update = flaky  # type: ignore[method-assign]
    done = trio.Event()

    async def run(lease: Assigned) -> Finished:
        done.set()
        return _result(lease)

    session = Session(bots, run, capacity=1, keepalive=0.05, retry=0.01, say=said.append)
    with trio.fail_after(5):
        await _serve_until(session, done)
    assert "lease-0" in bots.finished
    assert sum("failed" in line for line in said) == 1
    assert any("again" in line for line in said)




async def test_a_lease_the_server_requeues_after_an_internal_error_runs_again_here() -> None:
    bots = FakeBots(work=1, capacity=1)
    bots.retry = 1
    attempts: list[str] = []
    done = trio.Event()

    async def run(lease: Assigned) -> Finished:
        attempts.append(lease.lease_id)
        if len(attempts) == 1:
            return Finished(lease.lease_id, status=INTERNAL, message="sandbox broke")
        done.set()
        return _result(lease)

    session = Session(bots, run, capacity=1, keepalive=0.05)
    with trio.fail_after(10):
        await _serve_until(session, done)
    assert attempts == ["lease-0", "lease-0"]  # the same lease, given again, is not taken for a stale echo
    assert bots.finished["lease-0"].status == OK


async def test_draining_while_the_session_is_being_created_ends_at_once() -> None:
    release = threading.Event()

    class SlowOpen(FakeBots):
        def open(self) -> Sequence[Assigned]:
            release.wait(30)  # BuildGrid's CreateBotSession long poll, waiting for work that never comes
            return []

    async def run(lease: Assigned) -> Finished:
        raise AssertionError("no lease was given")

    session = Session(SlowOpen(work=0, capacity=1), run, capacity=1)
    try:
        with trio.fail_after(10):  # a hang guard: serve must not wait for the creation to end
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.serve)
                await trio.sleep(0.1)
                session.drain()
        assert not release.is_set() and not session.running
    finally:
        release.set()  # let the abandoned thread go


class _AwayAfterFirstResult:
    """A server that answers until the first result is reported, then never again."""

    def __init__(self, bots: FakeBots) -> None:
        self.bots = bots
        self.away = False

    def open(self) -> Sequence[Assigned]:
        return self.bots.open()

    def update(self, running: Sequence[str], finished: Sequence[Finished], *, accepting: bool) -> Sequence[Assigned]:
        self.away = self.away or bool(finished)
        if self.away:
            raise OSError("connection refused")
        return self.bots.update(running, finished, accepting=accepting)


def _one_lease_away(give_up: float) -> tuple[_AwayAfterFirstResult, Session, trio.Event, list[str]]:
    """A session of one lease whose server goes away once it is reported; ``done`` when it ran."""
    source = _AwayAfterFirstResult(FakeBots(work=1, capacity=1))
    said: list[str] = []
    done = trio.Event()

    async def run(lease: Assigned) -> Finished:
        done.set()
        return _result(lease)

    session = Session(source, run, capacity=1, keepalive=0.05, retry=0.01, give_up=give_up, say=said.append)
    return source, session, done, said


async def test_a_draining_worker_whose_server_stays_away_gives_up_and_ends() -> None:
    source, session, done, said = _one_lease_away(give_up=0.3)
    with trio.fail_after(5):
        await _serve_until(session, done)
    assert source.away
    assert any(line.startswith("giving up: 1 finished step") for line in said), said
    assert session.unreported == []


async def test_an_abandoned_worker_whose_server_is_away_ends_at_once() -> None:
    _, session, done, said = _one_lease_away(give_up=3600)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.serve)
            await done.wait()
            await trio.sleep(0.05)
            session.drain()
            await trio.sleep(0.05)
            session.abandon()
    assert any(line.startswith("giving up") for line in said), said
