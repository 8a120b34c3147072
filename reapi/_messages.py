"""REAPI v2 messages as frozen dataclasses: what crosses from ``reapi`` into ``dag``.

Only the fields pybuild uses are kept.  ``_proto`` turns them into protobuf bytes and back;
nothing here imports protobuf, so code that only builds or reads these values stays cheap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from ._digest import Digest
from ._errors import printable

Properties = tuple[tuple[str, str], ...]
"""Platform properties (name, value), kept sorted as REAPI requires."""


def sorted_properties(properties: Properties) -> Properties:
    return tuple(sorted(properties))


@dataclass(frozen=True)
class Command:
    """What a worker runs. ``output_paths`` go out as both v2.1's ``output_paths`` and the older
    ``output_files`` (every output pybuild names is a file)."""

    arguments: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    output_paths: tuple[str, ...] = ()
    platform: Properties = ()
    working_directory: str = ""


@dataclass(frozen=True)
class Action:
    command_digest: Digest
    input_root_digest: Digest
    timeout_seconds: float | None = None
    do_not_cache: bool = False
    platform: Properties = ()


@dataclass(frozen=True)
class FileNode:
    name: str
    digest: Digest
    is_executable: bool = False


@dataclass(frozen=True)
class DirectoryNode:
    name: str
    digest: Digest


@dataclass(frozen=True)
class Directory:
    """One directory of an input root; entries sorted by name, as REAPI requires."""

    files: tuple[FileNode, ...] = ()
    directories: tuple[DirectoryNode, ...] = ()


@dataclass(frozen=True)
class OutputFile:
    path: str
    digest: Digest
    is_executable: bool = False


@dataclass(frozen=True)
class ActionResult:
    """The outcome of an Action. Stdout/stderr come inline (``*_raw``) or by digest, or both."""

    exit_code: int = 0
    output_files: tuple[OutputFile, ...] = ()
    stdout_digest: Digest | None = None
    stderr_digest: Digest | None = None
    stdout_raw: bytes = field(default=b"", repr=False)
    stderr_raw: bytes = field(default=b"", repr=False)
    worker: str = ""

    def output(self, path: str) -> OutputFile | None:
        """The output file at ``path``, if the result has one."""
        return next((o for o in self.output_files if o.path == path), None)


@dataclass(frozen=True)
class ExecuteResponse:
    """The end of an Execute call. ``status_code`` is a google.rpc code (0 = OK): a non-zero
    one means the server could not run the Action (``result`` then says little); a command
    that ran and failed is ``status_code == 0`` with ``result.exit_code != 0``."""

    result: ActionResult
    cached: bool
    status_code: int = 0
    message: str = ""

    def __post_init__(self) -> None:
        # the server's words, shown in the build's error: kept printable, whoever makes this value
        object.__setattr__(self, "message", printable(self.message))


@dataclass(frozen=True)
class Capabilities:
    digest_functions: tuple[str, ...]
    max_batch_total_size_bytes: int
    action_cache_update_enabled: bool
    exec_enabled: bool
    low_api_version: str = ""
    high_api_version: str = ""


class LeaseState(enum.Enum):
    """The Remote Workers API's lease states (values are the protobuf enum's)."""

    UNSPECIFIED = 0
    PENDING = 1
    ACTIVE = 2
    COMPLETED = 4
    CANCELLED = 5


class BotStatus(enum.Enum):
    """The Remote Workers API's bot states; BuildGrid gives leases only to ``OK`` bots."""

    UNSPECIFIED = 0
    OK = 1
    UNHEALTHY = 2
    HOST_REBOOTING = 3
    BOT_TERMINATING = 4


@dataclass(frozen=True)
class Lease:
    """A piece of work the server gave a bot: one Action.

    ``action`` is set when the server sent the Action itself (BuildGrid 0.4.4 does), and
    ``action_digest`` is then the digest of its deterministic serialization (the one
    ``serialize`` gives, so the client's digest when the client was pybuild); when the server
    sent only the digest, ``action`` is None and the bot reads the Action from the CAS.
    """

    id: str
    action_digest: Digest
    state: LeaseState
    action: Action | None = None
    result: ActionResult | None = None
    status_code: int = 0
    status_message: str = ""

    def completed(self, result: ActionResult) -> Lease:
        """This lease as the bot reports it done: the command ran (whatever its exit code)."""
        return replace(self, state=LeaseState.COMPLETED, result=result, status_code=0, status_message="")

    def failed(self, status_code: int, message: str) -> Lease:
        """This lease as the bot reports it could not run the Action (a google.rpc code).

        BuildGrid re-queues the Action on INTERNAL (13) or UNAVAILABLE (14), up to its
        ``max-job-attempts``; any other code ends the Execute call with that status.
        """
        return replace(self, state=LeaseState.COMPLETED, result=None, status_code=status_code, status_message=message)


@dataclass(frozen=True)
class BotSession:
    """A bot's session with the server. Send it back with the leases as the bot sees them:
    the ACTIVE ones it is running and the COMPLETED ones it finished; the server answers with
    the ones still active and any new ones."""

    name: str
    bot_id: str
    status: BotStatus
    leases: tuple[Lease, ...] = ()
    properties: Properties = ()
    capacity: int = 1
    version: str = ""
    expire_time: float = 0.0

    def with_leases(self, leases: tuple[Lease, ...]) -> BotSession:
        return replace(self, leases=leases)
