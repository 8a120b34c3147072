"""``pybuild worker``'s whole life: one bot session until a signal drains it."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._connection import BotsConnection
from ._lease import BotsRemote, LeaseRunner
from ._session import Session
from ._step import StepRunner

if TYPE_CHECKING:
    from pybuild.cache import Root
    from pybuild.executors import Executor, RootfsCaller


@dataclass(frozen=True)
class BotOptions:
    name: str  # the bot id, and the worker named in each ActionResult
    platform: str  # os/arch[/variant] the worker runs steps for
    jobs: int  # steps at once (the session's capacity)
    keepalive: float = 1.0  # seconds between keepalives when at capacity


def worker_properties(platform: str) -> tuple[tuple[str, str], ...]:
    """What the worker offers: ``OSFamily``, ``ISA`` and ``pybuild-sandbox``, as an Action asks."""
    from ..remote import platform_properties

    return platform_properties(platform)


async def serve(
    remote: BotsRemote, root: Root, executor: Executor, files: RootfsCaller, options: BotOptions, say: Callable[[str], None],
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """Take leases and run them until SIGINT/SIGTERM drains the worker (a second one abandons
    the running steps, giving their leases back).  ``on_ready`` is called once those signals
    are caught: a supervisor told the worker is serving may stop it from then on."""
    from pybuild.oci import ImageStore

    from .._worker import WorkerOptions

    steps = StepRunner(root, ImageStore(root), executor, files, WorkerOptions())
    connection = BotsConnection(remote, options.name, worker_properties(options.platform), options.jobs)
    session = Session(connection, LeaseRunner(remote, steps, options.name, say), capacity=options.jobs,
                      keepalive=options.keepalive, say=say)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        on_ready()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_on_signals, signals, session, say)
            await session.serve()
            nursery.cancel_scope.cancel()


async def _on_signals(signals: AsyncIterator[int], session: Session, say: Callable[[str], None]) -> None:
    async for number in signals:
        if not session.draining:
            say(f"{signal.Signals(number).name}: draining (running steps finish; again to give them back)")
            session.drain()
        else:
            say(f"{signal.Signals(number).name}: giving the running steps back")
            session.abandon()
