"""What goes wrong talking to a remote executor, as pybuild errors (one line each)."""

from __future__ import annotations

from pybuild.errors import PybuildError


class RemoteError(PybuildError):
    """The remote executor or cache refused or failed a request, or answered something invalid."""

    reference = "remote-error"


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
