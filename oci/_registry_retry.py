"""Retries with exponential backoff for registry requests.

A request that fails in a way that may pass (a 5xx answer, 429 Too Many
Requests, a dropped connection, a timeout, a body cut short) raises
``TransientError`` inside one attempt; ``with_retries`` sleeps and tries
again, and after the last attempt turns it into a one-line ``RegistryError``.
Sleeping uses ``trio.sleep``, so tests drive it with trio's ``MockClock``.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx
import trio

from pybuild.errors import RegistryError

T = TypeVar("T")

#: Status codes worth another try; 501 and 505 say the server never will.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class TransientError(Exception):
    """One attempt failed in a way that may pass; never shown to users as is.

    ``reason`` must not contain credentials: it is built from status lines,
    exception class names and byte counts only.
    """

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 4
    base_delay: float = 0.5
    max_delay: float = 20.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (attempts count from 0)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
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


def describe_transport_error(error: httpx.TransportError) -> str:
    """A short cause for a failed connection, without URLs or headers."""
    if isinstance(error, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(error, httpx.TimeoutException):
        return "timed out waiting for the registry"
    if isinstance(error, httpx.ConnectError):
        cause = str(error).split("]")[-1].strip() or "cannot connect"
        return f"cannot connect ({cause[:80]})"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the connection was closed in the middle of a response"
    if isinstance(error, httpx.ReadError | httpx.WriteError):
        return "the connection was dropped"
    return f"network error ({type(error).__name__})"


async def with_retries(
    policy: RetryPolicy,
    what: str,
    attempt: Callable[[int], Awaitable[T]],
    *,
    hint: str | None = None,
) -> T:
    """Run ``attempt(n)`` until it returns, retrying on TransientError.

    ``what`` names the operation for the final error: "GET manifest for x".
    """
    n = 0
    while True:
        try:
            return await attempt(n)
        except TransientError as error:
            if n >= policy.retries:
                tries = "once" if n == 0 else f"{n + 1} times"
                raise RegistryError(
                    f"{what} failed: {error.reason} (tried {tries})",
                    hint=hint or "the registry or the network is having trouble; try again later",
                ) from None
            await trio.sleep(policy.delay(n, error.retry_after))
            n += 1
