"""Retries with exponential backoff for registry requests.

A request that fails in a way that may pass (a 5xx answer, 429 Too Many
Requests, a dropped connection, a timeout, a body cut short) raises
``TransientError`` inside one attempt; ``with_retries`` sleeps and tries
again, and after the last attempt turns it into a one-line ``RegistryError``.
Sleeping uses ``trio.sleep``, so tests drive it with trio's ``MockClock``.

Retries never multiply the wait: every operation runs under the overall
deadline of ``_network`` (back-off included: no sleep starts that would end
past it), each attempt under its stall watch, and a timed-out attempt (a
silent or dripping server) is tried again only ``timeout_retries`` times.

A connection that cannot be made costs seconds, not the full back-off:
waiting does not make an unknown host name resolve or an untrusted
certificate trusted, so those fail at once (``permanent``); a refused,
reset or unroutable connection (a registry restarting) is tried again only
``connect_retries`` times, after waits of ``connect_base_delay`` doubling.
BuildKit's retry handler (util/resolver/retryhandler/retry.go) does not
retry either kind; the short retry of a refused connection is pybuild's.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import trio

from pybuild.errors import RegistryError

from .._network import DeadlineExceeded, NetworkLimits, Stalled, connect_failure, default_limits, operation

T = TypeVar("T")

#: Status codes worth another try; 501 and 505 say the server never will.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class TransientError(Exception):
    """One attempt failed in a way that may pass; never shown to users as is.

    ``reason`` must not contain credentials: it is built from status lines,
    exception class names, host names and byte counts only.  ``timed_out``
    marks a connect or stall timeout, which is retried at most
    ``timeout_retries`` times; ``cannot_connect`` a connection that could not
    be made, retried at most ``connect_retries`` times; ``permanent`` one that
    waiting cannot fix (not retried; ``hint`` says what can).
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        timed_out: bool = False,
        cannot_connect: bool = False,
        permanent: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.timed_out = timed_out
        self.cannot_connect = cannot_connect
        self.permanent = permanent
        self.hint = hint


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0
    timeout_retries: int = 1
    # A refused connection: at most 0.25 + 0.5 s of waiting before the third and last try.
    connect_retries: int = 2
    connect_base_delay: float = 0.25
    limits: NetworkLimits = field(default_factory=default_limits)

    def delay(self, attempt: int, retry_after: float | None = None, *, base: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempts count from 0);
        ``base`` is the first step's ceiling (``base_delay`` unless given)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        first = self.base_delay if base is None else base
        ceiling: float = min(self.max_delay, first * (2**attempt))  # int ** int is Any to mypy
        # "equal jitter": at least half the exponential step, so retries of
        # many concurrent requests spread out but still back off.
        return ceiling / 2 + random.uniform(0, ceiling / 2)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe_transport_error(error: httpx.TransportError, limits: NetworkLimits | None = None) -> str:
    """A short cause for a failed connection, without URLs or headers."""
    limits = limits or default_limits()
    if isinstance(error, httpx.ConnectTimeout):
        return limits.connect_reason()
    if isinstance(error, httpx.TimeoutException):
        return limits.stall_reason(0)
    if isinstance(error, httpx.ConnectError):
        cause = str(error).split("]")[-1].strip() or "cannot connect"
        return f"cannot connect ({cause[:80]})"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the connection was closed in the middle of a response"
    if isinstance(error, httpx.ReadError | httpx.WriteError):
        return "the connection was dropped"
    return f"network error ({type(error).__name__})"


def transport_error(
    prefix: str, error: httpx.TransportError, limits: NetworkLimits | None = None, *, url: str = ""
) -> TransientError:
    """The TransientError for an httpx failure: "GET URL: cause".

    A connection that could not be made says so with the host it tried
    (from ``url``) instead of the request: "cannot resolve h.example (...)",
    "cannot connect to h:5000 (connection refused)", and whether another try
    may help.
    """
    failure = connect_failure(error, _host_of(url, error)) if isinstance(error, httpx.ConnectError) else None
    if failure is not None:
        return TransientError(failure.reason, cannot_connect=True, permanent=not failure.retry, hint=_CONNECT_HINTS.get(failure.kind))
    reason = describe_transport_error(error, limits)
    return TransientError(
        f"{prefix}: {reason}" if prefix else reason,
        timed_out=isinstance(error, httpx.TimeoutException),
        cannot_connect=isinstance(error, httpx.ConnectError),
    )


_CONNECT_HINTS = {
    "unknown host": "check the registry in the image's name and this machine's DNS"
    " (a name without a registry, like busybox, is pulled from Docker Hub, registry-1.docker.io)",
    "untrusted certificate": "add the registry's CA certificate to the system's trust store"
    " (for a test registry, --insecure-registry HOST uses plain http)",
}


def _host_of(url: str, error: httpx.TransportError) -> str:
    """host[:port] of the request that failed, never its user info."""
    if not url:
        try:
            url = str(error.request.url)
        except RuntimeError:  # httpx raises it when the error carries no request
            return "the registry"
    return urlsplit(url).netloc.rpartition("@")[2] or "the registry"


async def with_retries(
    policy: RetryPolicy,
    what: str,
    attempt: Callable[[int], Awaitable[T]],
    *,
    hint: str | None = None,
    expected_bytes: int = 0,
) -> T:
    """Run ``attempt(n)`` until it returns, retrying on TransientError.

    ``what`` names the operation for the final error: "GET manifest for x".
    The whole runs under one overall deadline (see ``_network``), which
    ``expected_bytes`` (a blob's size) extends; each attempt under a stall watch.
    """
    n = timeouts = connect_failures = 0
    try:
        with operation(policy.limits, expected_bytes) as op:
            while True:
                try:
                    with op.attempt():
                        return await attempt(n)
                except Stalled as stalled:
                    error = TransientError(stalled.reason, timed_out=True)
                except TransientError as failed:
                    error = failed
                timeouts += error.timed_out
                if error.cannot_connect:
                    delay = policy.delay(connect_failures, base=policy.connect_base_delay)
                    connect_failures += 1
                else:
                    delay = policy.delay(n, error.retry_after)
                out_of_tries = (
                    error.permanent
                    or n >= policy.retries
                    or timeouts > policy.timeout_retries
                    or connect_failures > policy.connect_retries
                )
                if out_of_tries or trio.current_time() + delay >= op.deadline:
                    tries = "once" if n == 0 else f"{n + 1} times"
                    raise RegistryError(
                        f"{what} failed: {error.reason} (tried {tries})",
                        hint=error.hint or hint or "the registry or the network is having trouble; try again later",
                    ) from None
                await trio.sleep(delay)
                n += 1
    except DeadlineExceeded as exceeded:
        raise RegistryError(
            f"{what} failed: {exceeded.reason}",
            hint=hint or "the registry or the network is too slow; try again later",
        ) from None
