"""A lease the server sends that does not decode (issue 19): it becomes a ``MalformedLease``
(reapi/_proto.py), which the worker reports failed at once (INVALID_ARGUMENT with the escaped
reason, one log line) while the other leases of the answer and later updates go on. Before,
one such lease failed the whole UpdateBotSession answer, every time: the worker retried
forever and ran nothing. Here the Bots service is a fake speaking protobuf, so the real
decoding, ``BotsConnection`` and ``Session`` are what run."""

from __future__ import annotations

import threading
from dataclasses import replace

import trio
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid.common.protos.google.devtools.remoteworkers.v1test2 import bots_pb2

from pybuild import reapi
from pybuild.dag.bot._connection import BotsConnection
from pybuild.dag.bot._session import INVALID_ARGUMENT, Assigned, Finished, Session
from pybuild.reapi import _proto

GOOD = reapi.Digest.of(b"the Action's bytes")


def _good(lease_id: str) -> bots_pb2.Lease:
    message = bots_pb2.Lease(id=lease_id, state=bots_pb2.ACTIVE)
    message.payload.Pack(_proto.digest_to_proto(GOOD))
    return message


def _unknown_payload(lease_id: str) -> bots_pb2.Lease:
    message = bots_pb2.Lease(id=lease_id, state=bots_pb2.ACTIVE)
    message.payload.Pack(re_pb2.Command(arguments=["true"]))
    return message


def _bad_digest(lease_id: str) -> bots_pb2.Lease:
    message = bots_pb2.Lease(id=lease_id, state=bots_pb2.ACTIVE)
    action = re_pb2.Action(command_digest=_proto.digest_to_proto(GOOD))
    action.input_root_digest.hash = "\x1b[31mnot hex"  # and an escape sequence for the log
    message.payload.Pack(action)
    return message


def _undecodable(lease_id: str) -> bots_pb2.Lease:
    message = _good(lease_id)
    message.payload.type_url = "type.googleapis.com/build.bazel.remote.execution.v2.Action"
    message.payload.value = b"\xff\xff\xff"  # not a protobuf message at all
    return message


def _unknown_state(lease_id: str) -> bots_pb2.Lease:
    message = _good(lease_id)
    message.state = 9  # type: ignore[assignment]  # no such state: what a broken server may send
    return message


def test_only_the_malformed_leases_of_an_answer_are_malformed() -> None:
    sent = reapi.BotSession("", "bot", reapi.BotStatus.OK)
    cancelled = _unknown_payload("gone")
    cancelled.state = bots_pb2.CANCELLED
    answer = bots_pb2.BotSession(name="s", leases=[
        _good("ok-1"), _unknown_payload("payload"), _bad_digest("digest"), _undecodable("bytes"),
        _unknown_state("state"), cancelled, _good("ok-2"),
    ])
    session = _proto.bot_session_from_proto(answer, sent)
    leases = {lease.id: lease for lease in session.leases}
    assert [lease.id for lease in session.leases] == ["ok-1", "payload", "digest", "bytes", "state", "gone", "ok-2"]
    for good in ("ok-1", "ok-2"):
        assert not isinstance(leases[good], reapi.MalformedLease) and leases[good].action_digest == GOOD
    malformed = {i: lease for i, lease in leases.items() if isinstance(lease, reapi.MalformedLease)}
    assert set(malformed) == {"payload", "digest", "bytes", "state", "gone"}
    assert "payload of type" in malformed["payload"].reason
    assert "malformed input root digest" in malformed["digest"].reason
    assert "\x1b" not in malformed["digest"].reason and "\\x1b" in malformed["digest"].reason
    assert "does not decode" in malformed["bytes"].reason
    assert "unknown state 9" in malformed["state"].reason
    assert all(m.action is None and m.action_digest == reapi.EMPTY for m in malformed.values())
    # reported with the state it came in; one in no known state is one to report (ACTIVE)
    assert malformed["gone"].state is reapi.LeaseState.CANCELLED
    assert malformed["state"].state is reapi.LeaseState.ACTIVE


class ProtoBots:
    """A Bots service answering in protobuf: each update hands out the next queued lease and
    repeats the active ones; a lease reported COMPLETED is recorded and dropped."""

    def __init__(self, queue: list[bots_pb2.Lease]) -> None:
        self.queue = queue
        self.active: dict[str, bots_pb2.Lease] = {}
        self.completed: dict[str, reapi.Lease] = {}
        self.lock = threading.Lock()

    def create_bot_session(self, bot_id: str, properties: tuple[tuple[str, str], ...], *, capacity: int = 1) -> reapi.BotSession:
        session = reapi.BotSession("", bot_id, reapi.BotStatus.OK, properties=properties, capacity=capacity)
        return self._answer(replace(session, name="session-1"))

    def update_bot_session(self, session: reapi.BotSession) -> reapi.BotSession | None:
        with self.lock:
            for lease in session.leases:
                if lease.state is reapi.LeaseState.COMPLETED and lease.id in self.active:
                    del self.active[lease.id]
                    # what the server reads: the lease as the bot sent it, through protobuf
                    self.completed[lease.id] = _proto.lease_from_proto(_proto.lease_to_proto(lease))
        return self._answer(session)

    def _answer(self, session: reapi.BotSession) -> reapi.BotSession:
        with self.lock:
            if self.queue:
                lease = self.queue.pop(0)
                self.active[lease.id] = lease
            answer = bots_pb2.BotSession(name=session.name, bot_id=session.bot_id, leases=list(self.active.values()))
        return _proto.bot_session_from_proto(answer, session)


async def test_a_malformed_lease_is_refused_at_once_and_the_others_run() -> None:
    bots = ProtoBots([_good("first"), _bad_digest("bad\x1b[2J"), _good("after")])
    said: list[str] = []
    ran: list[str] = []
    done = trio.Event()

    async def run(lease: Assigned) -> Finished:
        assert lease.action_digest == GOOD  # never a malformed one
        ran.append(lease.lease_id)
        return Finished(lease.lease_id, result=reapi.ActionResult(exit_code=0, worker="w"))

    connection = BotsConnection(bots, "w", (), 1)  # type: ignore[arg-type]
    session = Session(connection, run, capacity=1, keepalive=0.05, retry=0.05, say=said.append)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.serve)
        with trio.fail_after(10):
            while len(bots.completed) < 3:
                await trio.sleep(0.01)
        session.drain()
    assert ran == ["first", "after"]
    refused = bots.completed["bad\x1b[2J"]
    assert refused.status_code == INVALID_ARGUMENT and refused.result is None
    assert "malformed input root digest" in refused.status_message and "\x1b" not in refused.status_message
    assert all(bots.completed[i].status_code == 0 and bots.completed[i].result is not None for i in ("first", "after"))
    assert len(said) == 1 and said[0].startswith("refused lease bad\\x1b[2J: ")  # one line, escaped
    assert "\x1b" not in said[0] and "update failed" not in said[0]
