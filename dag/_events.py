"""Progress events: what the solver reports while it works.

The solver calls an ``EventSink`` (a plain callable) with these frozen values;
the CLI renders them (plain, tty, rawjson).  Times are ``trio.current_time()``
values, so tests with a MockClock see exact durations.
"""

from __future__ import annotations

from collections.abc import Callable

from .._frozen import frozen


@frozen
class StepStarted:
    digest: str
    name: str
    time: float


@frozen
class StepCached:
    digest: str
    name: str
    time: float


@frozen
class StepMiss:
    """Why a step could not come from the cache (``COPY src/ /app: src/main.py changed``)."""

    digest: str
    name: str
    reason: str


@frozen
class StepLog:
    digest: str
    stream: str  # stdout | stderr
    data: bytes
    time: float


@frozen
class StepFinished:
    digest: str
    name: str
    time: float
    duration: float


@frozen
class StepFailed:
    digest: str
    name: str
    time: float
    error: str


@frozen
class Notice:
    """Anything else worth telling the user (a warning, an export phase)."""

    message: str
    time: float


Event = StepStarted | StepCached | StepMiss | StepLog | StepFinished | StepFailed | Notice
EventSink = Callable[[Event], None]


def ignore_events(event: Event) -> None:
    pass
