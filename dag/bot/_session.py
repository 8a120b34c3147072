"""The bot session: leases in, results out, up to ``capacity`` steps at once.

Two tasks talk to the Bots service, each from its own thread (the ``reapi``
client is synchronous):

- the *poller* asks for work: an update with spare capacity is a long poll
  the server answers when it assigns a lease (or after most of its keepalive
  timeout); at full capacity it only keeps the session alive, every
  ``keepalive`` seconds;
- the *reporter* sends each finished lease at once, so a result never waits
  for the long poll to end (the server hands out new work in that same answer).

Both send the whole state (running leases, finished ones not yet
acknowledged); leases the answers name that are new are started, each once.

Draining (``drain()``: Ctrl-C, SIGTERM) stops taking work -- the session says
it is unhealthy, and a lease that still arrives is given back at once
(UNAVAILABLE, which BuildGrid re-queues) -- lets running steps finish and
reports them, then ends.  ``abandon()`` (a second signal) gives the running
leases back too.  A worker killed outright just stops calling: the server
re-queues its leases when the session's keepalive runs out.  So does one whose
server stays away while it drains: after ``give_up`` seconds of failed updates
(at once once abandoned) it stops reporting, says how many results it leaves,
and ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from pybuild.reapi import Action, ActionResult, Digest

log = logging.getLogger(__name__)

# google.rpc.Code values a finished lease may carry
OK = 0
INVALID_ARGUMENT = 3
FAILED_PRECONDITION = 9
INTERNAL = 13
UNAVAILABLE = 14

MIN_POLL = 0.1  # seconds between two updates at least, when the server answers at once


@dataclass(frozen=True)
class Assigned:
    """A lease the server gave this bot: an Action to run."""

    lease_id: str
    action_digest: Digest
    action: Action | None = None  # the Action itself, when the server sent it (else read from the CAS)
    malformed: str = ""  # why the lease cannot be read (escaped): reported failed at once, nothing runs


@dataclass(frozen=True)
class Finished:
    """How a lease ended: an ActionResult (a failing step is one too, with its
    exit code), or an error status and its one-line message (nothing ran)."""

    lease_id: str
    result: ActionResult | None = None
    status: int = OK
    message: str = ""


class LeaseSource(Protocol):
    """What the session asks of the Bots service (``BotsConnection`` is the real one)."""

    def open(self) -> Sequence[Assigned]:
        """Create the bot session; the leases it came with."""

    def update(self, running: Sequence[str], finished: Sequence[Finished], *, accepting: bool) -> Sequence[Assigned]:
        """Tell the server the running leases and the finished ones; the leases it now assigns."""


RunLease = Callable[[Assigned], Awaitable[Finished]]


class Session:
    """One bot session on ``source``; ``serve`` returns when drained."""

    def __init__(
        self, source: LeaseSource, run: RunLease, *, capacity: int, keepalive: float = 1.0, retry: float = 1.0,
        give_up: float = 30.0, say: Callable[[str], None] = log.warning,
    ) -> None:
        self.source = source
        self.say = say
        self.run_lease = run
        self.capacity = capacity
        self.keepalive = keepalive
        self.retry = retry
        self.give_up = give_up
        self.running: dict[str, trio.CancelScope] = {}
        self.unreported: list[Finished] = []
        # Two updates may be in flight: an answer can still name a lease this bot has since
        # reported. Reported by update R, which returned when update N was the last sent, a
        # lease named in the answer to another update up to N may be stale (that answer may
        # come from before the server heard of R); named by R's own answer or a later one,
        # the server re-queued it (an INTERNAL or UNAVAILABLE) and gave it here again: it runs.
        self._sent = 0  # updates sent so far
        self._sending: set[str] = set()  # finished leases an update in flight reports
        self._reported: dict[str, tuple[int, int]] = {}  # lease -> (R, N)
        self.draining = False
        self._failing = False  # the last update failed (said once until one succeeds)
        self._failing_since = 0.0  # when the updates started failing (trio's clock)
        self._abandoned = False
        self._announced = True  # what the server last heard: accepting work
        self._changed = trio.Event()  # a lease finished or the session started draining
        self._opening = trio.CancelScope()
        self._limiter = trio.CapacityLimiter(2)  # one thread for the poller, one for the reporter

    def drain(self) -> None:
        """Stop taking work; finish and report what runs, then end."""
        self.draining = True
        self._opening.cancel()  # still creating the session (a long poll): stop waiting
        self._wake()

    def abandon(self) -> None:
        """Stop at once: the running leases are given back (the server re-queues them)."""
        self._abandoned = True
        self.drain()
        for scope in self.running.values():
            scope.cancel()

    async def serve(self) -> None:
        with self._opening:
            assigned = await trio.to_thread.run_sync(self.source.open, limiter=self._limiter, abandon_on_cancel=True)
        if self._opening.cancelled_caught:
            return  # drained before the session existed: nothing ran, nothing to report
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self._take(assigned, 0)
            nursery.start_soon(self._poll)
            await self._report()  # returns once drained and every result is acknowledged
            nursery.cancel_scope.cancel()  # the poller may be in a long poll: not waited for

    # ------------------------------------------------------------ the two callers

    async def _poll(self) -> None:
        while True:
            if self.draining or len(self.running) >= self.capacity:
                # nothing to ask for: only keep the session alive
                with trio.move_on_after(self.keepalive):
                    await self._wait_change()
            started = trio.current_time()
            took_work = await self._update()
            # a server that answers at once without work (it does not long-poll) is not hammered;
            # one that answered with work is asked again at once: it may have more (BuildGrid
            # assigns a bot's second lease between its updates, and hands it out on the next one)
            if not took_work and trio.current_time() - started < MIN_POLL:
                await trio.sleep(MIN_POLL)

    async def _report(self) -> None:
        while not self._done():
            if not self._to_send() and self._announced == (not self.draining):
                await self._wait_change()
                continue
            await self._update()

    def _to_send(self) -> list[Finished]:
        """The finished leases no update in flight carries: each report goes out once at a time
        (sent twice, the second could complete the same lease's next attempt, re-queued here)."""
        return [f for f in self.unreported if f.lease_id not in self._sending]

    async def _update(self) -> bool:
        """One update; whether its answer started a lease."""
        finished = self._to_send()
        self._sending.update(f.lease_id for f in finished)
        running = sorted(self.running)
        accepting = not self.draining
        self._sent += 1
        number = self._sent
        try:
            assigned = await trio.to_thread.run_sync(
                lambda: self.source.update(running, finished, accepting=accepting),
                limiter=self._limiter, abandon_on_cancel=True,
            )
        except Exception as error:  # the server is away or refused: told once, tried again
            self._sending.difference_update(f.lease_id for f in finished)
            if not self._failing:
                self.say(f"bot session update failed (retrying): {error}")
                self._failing_since = trio.current_time()
            self._failing = True
            if self.draining and (self._abandoned or trio.current_time() - self._failing_since >= self.give_up):
                self._leave_unreported()
                return False
            await trio.sleep(self.retry)
            return False
        if self._failing:
            self.say("bot session updated again")
        self._failing = False
        self._announced = accepting
        sent = {f.lease_id for f in finished}
        self._sending -= sent
        self.unreported = [f for f in self.unreported if f.lease_id not in sent]
        self._reported.update((lease_id, (number, self._sent)) for lease_id in sent)
        started = self._take(assigned, number)
        self._wake()
        return started

    # ------------------------------------------------------------ leases

    def _take(self, assigned: Sequence[Assigned], answering: int) -> bool:
        """Start the leases an answer to update ``answering`` names that are new to this bot;
        whether one started."""
        started = False
        for lease in assigned:
            lease_id = lease.lease_id
            if lease_id in self.running or any(f.lease_id == lease_id for f in self.unreported):
                continue
            reported, last = self._reported.get(lease_id, (-1, -1))
            if answering != reported and answering <= last:
                continue  # maybe an answer from before the server heard this lease was done
            self._reported.pop(lease_id, None)
            if lease.malformed:  # final (INVALID_ARGUMENT is not re-queued): another bot would find it as malformed
                self._refuse(lease)
                continue
            if self.draining:
                self._finish(Finished(lease_id, status=UNAVAILABLE, message="the worker is stopping"))
                continue
            scope = trio.CancelScope()
            self.running[lease_id] = scope
            self._nursery.start_soon(self._run, lease, scope)
            started = True
        return started

    def _refuse(self, lease: Assigned) -> None:
        from ..remote._action import shown

        self.say(f"refused lease {shown(lease.lease_id)}: {lease.malformed}")
        self._finish(Finished(lease.lease_id, status=INVALID_ARGUMENT, message=lease.malformed))

    async def _run(self, lease: Assigned, scope: trio.CancelScope) -> None:
        finished: Finished | None = None
        with scope:
            try:
                finished = await self.run_lease(lease)
            except Exception as error:  # a bug here must not take the other leases down
                log.exception("lease %s failed", lease.lease_id)
                finished = Finished(lease.lease_id, status=INTERNAL, message=f"the worker failed: {error}")
        del self.running[lease.lease_id]
        if finished is None:  # abandoned: given back
            finished = Finished(lease.lease_id, status=UNAVAILABLE, message="the worker stopped before the step ended")
        self._finish(finished)

    def _finish(self, finished: Finished) -> None:
        self.unreported.append(finished)
        self._wake()

    def _leave_unreported(self) -> None:
        """Stop reporting to a server that stays away: it re-queues the leases of a session
        whose keepalive ran out, so another worker runs those steps again."""
        if self.unreported:
            self.say(f"giving up: {len(self.unreported)} finished step(s) not reported (the server re-queues them)")
        self.unreported = []
        self._sending.clear()
        self._wake()

    def _done(self) -> bool:
        return self.draining and not self.running and not self.unreported

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_change(self) -> None:
        await self._changed.wait()
