"""What goes wrong talking to a remote executor, as pybuild errors (one line each).

A message may quote what the server said (a status message, a lease id, a name): it is
shown one line long with every unprintable character escaped, so nothing another machine
sends can move the cursor, recolour or rewrite the user's terminal or a worker's log.
"""

from __future__ import annotations

from pybuild.errors import PybuildError

MESSAGE_LIMIT = 2000  # characters: a server's essay is cut in its middle
_SECRETS: set[str] = set()  # header values (tokens) this process sends: never in a message
_SHORTEST_SECRET = 6  # a shorter value would blank ordinary text out of messages
_SHORTEST_WORD = 12  # a word of a value ("Bearer", "Basic" are not secrets; a token is long)


def never_shown(value: str) -> None:
    """Keep ``value`` (a ``--remote-header`` value) out of every RemoteError from now on,
    whole and word by word: a server may echo a token back ("invalid token abc..."),
    or only the part after ``Bearer``."""
    if len(value) >= _SHORTEST_SECRET:
        _SECRETS.add(value)
    _SECRETS.update(word for word in value.split() if len(word) >= _SHORTEST_WORD)


def printable(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """``text`` as one line of a terminal: control and unprintable characters escaped
    (``\\x1b``, ``\\n``, ``\\u202e``), cut in its middle beyond ``limit`` characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text)
    if len(text) > limit:
        tail = limit // 4
        text = f"{text[: limit - tail - 1]}…{text[-tail:]}"
    return text


class RemoteError(PybuildError):
    """The remote executor or cache refused or failed a request, or answered something invalid."""

    reference = "remote-error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        for secret in sorted(_SECRETS, key=len, reverse=True):  # the whole value before its words
            message = message.replace(secret, "…")
        super().__init__(printable(message), hint=hint)


class RemoteUnavailable(RemoteError):
    """The remote executor cannot be reached (refused, unresolvable, timed out, TLS failure)."""

    reference = "remote-unavailable"


class RemoteBlobMissing(RemoteError):
    """A blob asked for is not in the remote CAS."""

    reference = "remote-blob-missing"


class RemoteBlobCorrupt(RemoteError):
    """A blob read from the remote CAS does not match its digest (refused, never used)."""

    reference = "remote-blob-corrupt"


class BotSessionClosed(RemoteError):
    """The server no longer knows the bot session (expired, or replaced): create a new one."""

    reference = "remote-bot-session-closed"
