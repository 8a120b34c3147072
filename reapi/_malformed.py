"""A lease the server sent that cannot be read: kept as a lease so the bot can report it."""

from __future__ import annotations

from dataclasses import dataclass

from ._messages import Lease


@dataclass(frozen=True)
class MalformedLease(Lease):
    """A lease whose payload, state or result does not decode (an unknown payload type, a
    malformed digest, a state no version of the API has). Nothing in it may be run:
    ``action_digest`` is ``EMPTY`` and ``action`` None. ``reason`` is the one-line, escaped
    error; the bot reports the lease failed with it at once (INVALID_ARGUMENT), so one bad
    lease neither stalls the session nor is re-queued for another bot to choke on."""

    reason: str = ""
