"""Time limits for every network operation: connect, stall and an overall deadline.

httpx's timeouts bound each single read, so a server that sends a byte every
few seconds would hold a transfer forever, and a silent one would cost every
retry a full timeout.  pybuild watches progress instead, as curl's and git's
low-speed limit do (``CURLOPT_LOW_SPEED_TIME``, ``http.lowSpeedTime``):

- **connect**: a connection is up within ``connect_timeout`` seconds;
- **stall**: in every ``stall_timeout`` seconds at least ``stall_bytes``
  move, either way (an answer's headers count as progress), so a byte every
  10 s is a stall, but a slow, steady link is not;
- **deadline**: one operation, its retries and back-off included, ends after
  ``deadline`` seconds plus one second for every ``min_rate`` bytes it moves
  or is known to move (a blob's size, a download's Content-Length), so big
  blobs get time in proportion and nothing runs forever.

An ``Operation`` holds the deadline (a trio cancel scope); each attempt in
it is a ``Watch`` (another cancel scope, whose deadline moves on as bytes
flow).  Code that moves bytes calls ``progress(n)``: the current watch is
found through a context variable, as trio finds the current cancel scope,
so the layers between (authentication, redirects) need not pass it along.
While a nested operation runs (a token fetch inside a manifest request),
the outer attempt's stall clock waits for it; during ``local_work()`` (a
disk read in a thread, a credential helper) neither clock runs: that time
is pybuild's own, not the network's.

The limits are read once from the environment (``from_env``).

A connection that cannot be made at all is read by ``connect_failure``: a
host name that does not exist, or a certificate that is not trusted, will
not change by waiting (the caller fails at once); a refused, reset or
unroutable connection, or a name lookup that failed for now, may pass within
seconds if a server is restarting (the caller retries briefly).
"""

from __future__ import annotations

import errno
import functools
import math
import os
import socket
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:  # httpx is imported where a request is made
    import httpx

from pybuild._frozen import frozen
from pybuild.errors import UsageError


KiB = 1024

ENV_CONNECT_TIMEOUT = "PYBUILD_NETWORK_CONNECT_TIMEOUT"
ENV_STALL_TIMEOUT = "PYBUILD_NETWORK_STALL_TIMEOUT"
ENV_DEADLINE = "PYBUILD_NETWORK_DEADLINE"

#: Request bodies are handed to httpx in pieces this big, so a slow upload
#: shows progress instead of looking stalled while one big write drains.
UPLOAD_PIECE = 64 * KiB


@frozen
class NetworkLimits:
    """How long network operations may take; see the module docstring."""

    connect_timeout: float = 30.0
    stall_timeout: float = 30.0
    stall_bytes: int = 1 * KiB
    deadline: float = 300.0
    min_rate: int = 64 * KiB  # bytes per second the deadline grows by

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "stall_timeout", "deadline"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        if self.stall_bytes <= 0 or self.min_rate <= 0:
            raise ValueError("stall_bytes and min_rate must be positive")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> NetworkLimits:
        """The defaults, with the seconds the environment sets instead."""
        values: dict[str, float] = {}
        for name, field in ((ENV_CONNECT_TIMEOUT, "connect_timeout"), (ENV_STALL_TIMEOUT, "stall_timeout"), (ENV_DEADLINE, "deadline")):
            text = environ.get(name, "").strip()
            if not text:
                continue
            try:
                values[field] = float(text)
            except ValueError:
                values[field] = math.nan
            if not (values[field] > 0 and math.isfinite(values[field])):
                raise UsageError(f"{name}={text[:40]!r} is not a positive number of seconds", hint=f"unset {name} or set it to, e.g., 30")
        return cls(**values)  # type: ignore[arg-type]  # the float fields only

    def stall_reason(self, moved: int) -> str:
        """Why a watch stopped: "no response within 30 s (stall timeout; ...)"."""
        window = f"{self.stall_timeout:g} s"
        what = f"no response within {window}" if moved == 0 else f"less than {_size(self.stall_bytes)} in {window}"
        return f"{what} (stall timeout; set {ENV_STALL_TIMEOUT} to wait longer)"

    def connect_reason(self) -> str:
        return f"cannot connect within {self.connect_timeout:g} s (connect timeout; set {ENV_CONNECT_TIMEOUT} to wait longer)"

    def deadline_reason(self, allowed: float) -> str:
        return f"not done within {allowed:.0f} s (overall deadline; set {ENV_DEADLINE} to allow more)"


def git_low_speed_env(limits: NetworkLimits) -> dict[str, str]:
    """git's own stall timeout over http(s), set to pybuild's: curl's low-speed
    limit aborts a transfer slower than LIMIT bytes/s for TIME seconds."""
    return {
        "GIT_HTTP_LOW_SPEED_LIMIT": str(max(1, math.ceil(limits.stall_bytes / limits.stall_timeout))),
        "GIT_HTTP_LOW_SPEED_TIME": str(max(1, math.ceil(limits.stall_timeout))),
    }


@functools.cache
def default_limits() -> NetworkLimits:
    """The limits of this process, read from the environment once."""
    return NetworkLimits.from_env()


def _size(n: int) -> str:
    return f"{n // KiB} KiB" if n % KiB == 0 else f"{n} bytes"


class Stalled(Exception):
    """An attempt moved too few bytes in the stall window; ``reason`` says so."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadlineExceeded(Exception):
    """An operation ran past its overall deadline; ``reason`` says so."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@frozen
class ConnectFailure:
    """Why a connection to a host could not be made, and whether waiting may help."""

    kind: str  # "unknown host", "untrusted certificate", or "unreachable" (refused, reset, lookup failing for now)
    reason: str  # "cannot resolve h.example (Name or service not known)"; no URL, no credentials

    @property
    def retry(self) -> bool:
        """False when waiting cannot help: the name does not exist, the certificate is not trusted."""
        return self.kind == "unreachable"


#: Connect errors that a server starting or restarting gives for a moment.
_PASSING_ERRNOS = {
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNRESET: "connection reset",
    errno.ECONNABORTED: "connection aborted",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "no route to host",
}


def connect_failure(error: BaseException, host: str) -> ConnectFailure | None:
    """What stopped a connection to ``host``, read from ``error``'s causes
    (an httpx ConnectError wraps httpcore's, which wraps the OS error, or
    trio's exception group of one error per address); None if nothing there
    says.  Like Go's net.DNSError, only a lookup that failed for now
    (EAI_AGAIN) is worth another try; a name that is not known is final.
    """
    for cause in _causes(error):
        if isinstance(cause, socket.gaierror):
            reason = f"cannot resolve {host} ({cause.strerror or 'name resolution failed'})"
            return ConnectFailure("unreachable" if cause.errno == socket.EAI_AGAIN else "unknown host", reason)
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or "certificate verify failed"
            return ConnectFailure("untrusted certificate", f"the TLS certificate of {host} is not trusted ({why})")
    for cause in _causes(error):
        if isinstance(cause, OSError) and cause.errno in _PASSING_ERRNOS:
            return ConnectFailure("unreachable", f"cannot connect to {host} ({_PASSING_ERRNOS[cause.errno]})")
    return None


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and everything behind it: causes, contexts, group members."""
    seen: set[int] = set()
    stack = [error]
    while stack and len(seen) < 64:  # a chain is short; a cycle must not loop
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend(e for e in (current.__context__, current.__cause__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)


_current: ContextVar[Watch | None] = ContextVar("pybuild_network_watch", default=None)


class Watch:
    """One attempt: a cancel scope whose deadline moves on while bytes flow."""

    def __init__(self, operation: Operation) -> None:
        self.operation = operation
        self.limits = operation.limits
        self.scope = trio.CancelScope()
        self.moved = 0
        self._window = 0
        # The first window also covers connecting, which has its own timeout:
        # let that one speak when it is the shorter.
        self.scope.deadline = trio.current_time() + max(self.limits.stall_timeout, self.limits.connect_timeout)

    def progress(self, n: int) -> None:
        self.moved += n
        self._window += n
        self.operation.moved(n)
        if self._window >= self.limits.stall_bytes:
            self.restart()

    def restart(self) -> None:
        """Start a new stall window (also when an answer's headers arrive)."""
        self._window = 0
        self.scope.deadline = trio.current_time() + self.limits.stall_timeout

    def pause(self) -> None:
        self.scope.deadline = math.inf


class Operation:
    """One network operation: an overall deadline over its attempts."""

    def __init__(self, limits: NetworkLimits, expected_bytes: int) -> None:
        self.limits = limits
        self._expected = max(expected_bytes, 0)
        self._moved = 0
        self._start = trio.current_time()
        self._paused = 0.0  # seconds of local work, which the deadline does not count
        self.scope = trio.CancelScope(deadline=self._start + self.allowed)

    @property
    def allowed(self) -> float:
        """Seconds this operation may take, from its start."""
        return self.limits.deadline + max(self._expected, self._moved) / self.limits.min_rate

    @property
    def deadline(self) -> float:
        return self.scope.deadline

    def expect(self, size: int) -> None:
        """Learn how many bytes the transfer will move (a Content-Length)."""
        if size > self._expected:
            self._expected = size
            self._reset_deadline()

    def moved(self, n: int) -> None:
        self._moved += n
        if self._moved > self._expected:
            self._reset_deadline()

    def _reset_deadline(self) -> None:
        self.scope.deadline = self._start + self._paused + self.allowed

    def pause(self) -> None:
        self.scope.deadline = math.inf

    def resume(self, paused: float) -> None:
        self._paused += paused
        self._reset_deadline()

    @contextmanager
    def attempt(self) -> Iterator[Watch]:
        """Watch one attempt; raises ``Stalled`` if it stalls."""
        watch = Watch(self)
        token = _current.set(watch)
        try:
            with watch.scope:
                yield watch
        finally:
            _current.reset(token)
        if watch.scope.cancelled_caught:
            raise Stalled(self.limits.stall_reason(watch.moved))


@contextmanager
def operation(limits: NetworkLimits, expected_bytes: int = 0) -> Iterator[Operation]:
    """Run one network operation under its deadline; raises ``DeadlineExceeded``.

    An enclosing attempt's stall clock is paused meanwhile and restarted after.
    """
    outer = _current.get()
    if outer is not None:
        outer.pause()
    op = Operation(limits, expected_bytes)
    token = _current.set(None)  # bytes moved between attempts belong to no watch
    try:
        with op.scope:
            yield op
    finally:
        _current.reset(token)
        if outer is not None:
            outer.restart()
    if op.scope.cancelled_caught:
        raise DeadlineExceeded(limits.deadline_reason(op.allowed))


@contextmanager
def local_work() -> Iterator[None]:
    """Stop the current attempt's clocks while pybuild works on its own side."""
    watch = _current.get()
    if watch is None:
        yield
        return
    started = trio.current_time()
    watch.pause()
    watch.operation.pause()
    try:
        yield
    finally:
        watch.operation.resume(trio.current_time() - started)
        watch.restart()


def progress(n: int) -> None:
    """Count ``n`` bytes moved by the current attempt (none outside one)."""
    watch = _current.get()
    if watch is not None:
        watch.progress(n)


def answered() -> None:
    """An answer's headers arrived: that is progress, too."""
    watch = _current.get()
    if watch is not None:
        watch.restart()


def expect(size: int) -> None:
    """The current operation will move ``size`` bytes (a Content-Length)."""
    watch = _current.get()
    if watch is not None:
        watch.operation.expect(size)


async def read_at_most(response: httpx.Response, limit: int) -> bytes | None:
    """An httpx response's body, counted as progress; None if it is bigger
    than ``limit`` bytes (known from its Content-Length before reading, when
    it has one: the answer to HEAD announces a body it does not send)."""
    announced = response.headers.get("content-length", "")
    if response.request.method != "HEAD" and announced.isdigit() and int(announced) > limit:
        return None
    body = bytearray()
    async for chunk in response.aiter_bytes():
        progress(len(chunk))
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def upload_pieces(data: bytes) -> AsyncIterator[bytes]:
    """A request body in small pieces, each counted when httpx takes the next."""
    view = memoryview(data)
    for start in range(0, len(data), UPLOAD_PIECE):
        piece = bytes(view[start : start + UPLOAD_PIECE])
        yield piece
        progress(len(piece))


async def counted_upload(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """A streamed request body, in small pieces, counted as httpx takes them."""
    async for chunk in chunks:
        async for piece in upload_pieces(chunk):
            yield piece
