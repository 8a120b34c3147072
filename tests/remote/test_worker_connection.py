"""``BotsConnection`` (dag/bot/_connection.py): what the worker sends in each UpdateBotSession
(leases echoed as the server gave them, finished ones COMPLETED, the bot's status) and a new
session when the server closed the old one. A fake Bots service records the calls."""

from __future__ import annotations

from dataclasses import replace

from pybuild.dag.bot._connection import BotsConnection
from pybuild.dag.bot._session import UNAVAILABLE, Finished
from pybuild.reapi import ActionResult, BotSession, BotSessionClosed, BotStatus, Digest, Lease, LeaseState

PROPERTIES = (("ISA", "amd64"), ("OSFamily", "linux"), ("pybuild-sandbox", "1"))


def _lease(n: int, state: LeaseState = LeaseState.ACTIVE) -> Lease:
    return Lease(f"lease-{n}", Digest.of(f"action {n}".encode()), state)


class FakeBots:
    def __init__(self) -> None:
        self.created: list[tuple[str, tuple[tuple[str, str], ...], int]] = []
        self.sent: list[BotSession] = []
        self.answers: list[tuple[Lease, ...]] = []
        self.closed = False

    def create_bot_session(self, bot_id: str, properties: tuple[tuple[str, str], ...], *, capacity: int = 1) -> BotSession:
        self.created.append((bot_id, properties, capacity))
        self.closed = False
        return BotSession(f"session-{len(self.created)}", bot_id, BotStatus.OK, (_lease(0),), properties, capacity, "1")

    def update_bot_session(self, session: BotSession) -> BotSession | None:
        self.sent.append(session)
        if self.closed:
            raise BotSessionClosed("closed")
        leases = self.answers.pop(0) if self.answers else ()
        return replace(session, leases=leases, version=str(int(session.version or 0) + 1))


def test_the_session_is_created_with_the_workers_properties_and_capacity() -> None:
    bots = FakeBots()
    assigned = BotsConnection(bots, "w1", PROPERTIES, 3).open()  # type: ignore[arg-type]
    assert bots.created == [("w1", PROPERTIES, 3)]
    assert [a.lease_id for a in assigned] == ["lease-0"]


def test_running_leases_are_echoed_and_finished_ones_completed_once() -> None:
    bots = FakeBots()
    connection = BotsConnection(bots, "w1", PROPERTIES, 2)  # type: ignore[arg-type]
    connection.open()
    bots.answers = [(_lease(0), _lease(1), _lease(2, LeaseState.CANCELLED))]
    assigned = connection.update(["lease-0"], [], accepting=True)
    assert [a.lease_id for a in assigned] == ["lease-0", "lease-1"]  # a cancelled lease is not work
    assert bots.sent[-1].leases == (_lease(0),) and bots.sent[-1].status is BotStatus.OK

    result = ActionResult(exit_code=0, worker="w1")
    done = [Finished("lease-0", result=result), Finished("lease-1", status=UNAVAILABLE, message="stopping")]
    connection.update([], done, accepting=False)
    sent = bots.sent[-1]
    assert sent.status is BotStatus.BOT_TERMINATING
    assert [(l.id, l.state, l.result, l.status_code) for l in sent.leases] == [
        ("lease-0", LeaseState.COMPLETED, result, 0),
        ("lease-1", LeaseState.COMPLETED, None, UNAVAILABLE),
    ]
    connection.update([], [], accepting=False)
    assert bots.sent[-1].leases == ()  # acknowledged: never sent again


def test_a_closed_session_is_replaced_by_a_new_one() -> None:
    bots = FakeBots()
    connection = BotsConnection(bots, "w1", PROPERTIES, 1)  # type: ignore[arg-type]
    connection.open()
    bots.closed = True
    assigned = connection.update(["lease-0"], [], accepting=True)
    assert len(bots.created) == 2 and [a.lease_id for a in assigned] == ["lease-0"]
    connection.update([], [], accepting=True)
    assert bots.sent[-1].name == "session-2"



def test_the_fake_lease_source_has_the_behaviour_the_session_relies_on() -> None:
    from pybuild.dag.bot.fake import MemoryLeases, check_lease_source

    def make() -> tuple[MemoryLeases, object]:
        leases = MemoryLeases(capacity=1)
        count = iter(range(1000))

        def submit() -> Digest:
            digest = Digest.of(f"action {next(count)}".encode())
            leases.submit(digest)
            return digest

        return leases, submit

    check_lease_source(make, ActionResult(exit_code=0, worker="fake"), tries=3)  # type: ignore[arg-type]
