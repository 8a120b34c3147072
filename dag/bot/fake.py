"""``MemoryLeases``: the fake of ``LeaseSource`` (a Bots service in a list), and
``check_lease_source``, the behaviour the session relies on, run against it and against
``BotsConnection`` on a real BuildGrid (tests/remote)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ._session import INTERNAL, UNAVAILABLE, Assigned, Finished, LeaseSource

if TYPE_CHECKING:
    from pybuild.reapi import ActionResult, Digest


class MemoryLeases:
    """A scheduler with a queue: work goes to the bot up to its capacity while it accepts;
    a lease that ends INTERNAL or UNAVAILABLE is queued again, as BuildGrid does."""

    def __init__(self, capacity: int = 1) -> None:
        self.capacity = capacity
        self.queue: list[Assigned] = []
        self.active: dict[str, Assigned] = {}
        self.finished: dict[str, Finished] = {}
        self._lock = threading.Lock()
        self._count = 0

    def submit(self, action: Digest) -> str:
        with self._lock:
            self._count += 1
            lease = Assigned(f"lease-{self._count}", action)
            self.queue.append(lease)
            return lease.lease_id

    def open(self) -> Sequence[Assigned]:
        return self._hand_out(accepting=True)

    def update(self, running: Sequence[str], finished: Sequence[Finished], *, accepting: bool) -> Sequence[Assigned]:
        with self._lock:
            for done in finished:
                lease = self.active.pop(done.lease_id, None)
                if lease is None:
                    continue  # reported before, or never this bot's
                if done.status in (INTERNAL, UNAVAILABLE):
                    self.queue.insert(0, lease)
                else:
                    self.finished[done.lease_id] = done
        return self._hand_out(accepting=accepting)

    def _hand_out(self, *, accepting: bool) -> list[Assigned]:
        with self._lock:
            while accepting and self.queue and len(self.active) < self.capacity:
                lease = self.queue.pop(0)
                self.active[lease.lease_id] = lease
            return list(self.active.values())


def check_lease_source(
    make: Callable[[], tuple[LeaseSource, Callable[[], Digest]]], result: ActionResult, *, tries: int = 40
) -> None:
    """Behaviour every ``LeaseSource`` must have. ``make()`` gives a fresh source for a bot of
    capacity 1 (not opened yet) and a way to queue one new Action for it (its digest)."""
    source, submit = make()
    source.open()
    first = submit()
    lease = _wait_for(source, first, accepting=True, tries=tries)
    _expect(lease is not None, "a queued Action reaches the bot that asks for work")
    assert lease is not None
    again = source.update([lease.lease_id], [], accepting=True)
    _expect(all(a.lease_id == lease.lease_id for a in again if a.action_digest == first), "a running lease keeps its id")

    second = submit()
    source.update([], [Finished(lease.lease_id, result=result)], accepting=False)
    later = [a for _ in range(3) for a in _pause(source.update([], [], accepting=False))]
    _expect(all(a.action_digest != first for a in later), "a reported lease is not given again")
    _expect(all(a.action_digest != second for a in later), "a bot that takes no work is given none")

    given = _wait_for(source, second, accepting=True, tries=tries)
    _expect(given is not None, "the queued Action reaches the bot once it takes work again")
    assert given is not None
    source.update([], [Finished(given.lease_id, status=UNAVAILABLE, message="given back")], accepting=True)
    back = _wait_for(source, second, accepting=True, tries=tries)
    _expect(back is not None, "a lease given back (UNAVAILABLE) is queued again")
    assert back is not None
    source.update([], [Finished(back.lease_id, result=result)], accepting=True)


def _wait_for(source: LeaseSource, action: Digest, *, accepting: bool, tries: int) -> Assigned | None:
    for _ in range(tries):
        found = [a for a in source.update([], [], accepting=accepting) if a.action_digest == action]
        if found:
            return found[0]
        time.sleep(0.1)
    return None


def _pause(assigned: Sequence[Assigned]) -> Sequence[Assigned]:
    time.sleep(0.2)  # time for a scheduler to assign something it should not
    return assigned


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
