"""``LeaseSource`` on a real Bots service (``reapi``'s bot session calls).

The session value the server last answered is kept here and sent back with
the leases as this bot sees them: the running ones as the server gave them
(ACTIVE), the finished ones COMPLETED with their result or status.  The
poller and the reporter call ``update`` from two threads at once; the lock
only guards this bookkeeping, never a call to the server.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from ._session import Assigned, Finished

if TYPE_CHECKING:
    from pybuild.reapi import BotSession, Lease

    from ._lease import BotsRemote


class BotsConnection:
    def __init__(self, remote: BotsRemote, bot_id: str, properties: tuple[tuple[str, str], ...], capacity: int) -> None:
        self.remote = remote
        self.bot_id = bot_id
        self.properties = properties
        self.capacity = capacity
        self._lock = threading.Lock()
        self._reopening = threading.Lock()
        self._session: BotSession | None = None
        self._leases: dict[str, Lease] = {}  # as the server gave them, until reported finished

    def open(self) -> Sequence[Assigned]:
        session = self.remote.create_bot_session(self.bot_id, self.properties, capacity=self.capacity)
        with self._lock:
            self._session = replace(session, leases=())
            return self._new(session.leases)

    def update(self, running: Sequence[str], finished: Sequence[Finished], *, accepting: bool) -> Sequence[Assigned]:
        from pybuild.reapi import BotSessionClosed, BotStatus

        with self._lock:
            assert self._session is not None, "open() first"
            leases = tuple(self._leases[i] for i in running if i in self._leases)
            leases += tuple(self._reported(f) for f in finished if f.lease_id in self._leases)
            status = BotStatus.OK if accepting else BotStatus.BOT_TERMINATING
            current = self._session
            sent = replace(current, status=status, leases=leases)
        try:
            answer = self.remote.update_bot_session(sent)
        except BotSessionClosed:
            # expired (this machine was away too long) or replaced: the server re-queued its
            # leases; a new session takes work again, and late results are simply ignored
            return self._reopen(current)
        if answer is None:  # interrupted: nothing was settled, the next update says it all again
            return []
        with self._lock:
            self._session = replace(answer, leases=())
            for done in finished:
                self._leases.pop(done.lease_id, None)
            return self._new(answer.leases)

    def _reopen(self, closed: BotSession) -> Sequence[Assigned]:
        """A new session for the closed one, once: the poller and the reporter may both find it closed."""
        with self._reopening:
            with self._lock:
                if self._session is not closed:
                    return []  # the other caller opened a new one meanwhile
            return self.open()

    def _reported(self, finished: Finished) -> Lease:
        lease = self._leases[finished.lease_id]
        if finished.result is not None:
            return lease.completed(finished.result)
        return lease.failed(finished.status, finished.message)

    def _new(self, leases: Sequence[Lease]) -> list[Assigned]:
        """The leases to run: active ones (BuildGrid never sends a PENDING one) not reported yet.
        A malformed one is assigned too, with its reason: the session reports it failed."""
        from pybuild.reapi import LeaseState, MalformedLease

        assigned = []
        for lease in leases:
            if lease.state is not LeaseState.ACTIVE:
                continue
            self._leases.setdefault(lease.id, lease)
            malformed = lease.reason if isinstance(lease, MalformedLease) else ""
            assigned.append(Assigned(lease.id, lease.action_digest, lease.action, malformed=malformed))
        return assigned
