"""The dataclasses of ``_messages`` to and from REAPI protobuf messages.

Serialization is deterministic (``SerializeToString(deterministic=True)``, platform
properties and directory entries sorted), so the same value always has the same digest.
What comes from another machine is checked as it is decoded: digests are SHA-256 hex with a
size, directory entry names are single path components; anything else is a ``RemoteError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, Union

from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid.common.protos.google.devtools.remoteworkers.v1test2 import bots_pb2
from google.protobuf.message import DecodeError, Message

from ._digest import EMPTY, Digest, is_sha256_hex
from ._errors import RemoteError
from ._malformed import MalformedLease
from ._messages import (
    Action,
    ActionResult,
    BotSession,
    BotStatus,
    Command,
    Directory,
    DirectoryNode,
    FileNode,
    Lease,
    LeaseState,
    OutputFile,
    Properties,
)

_M = TypeVar("_M", bound=Message)

Serializable = Union[Command, Action, Directory, ActionResult]


# --- digests -------------------------------------------------------------------------------


def digest_to_proto(digest: Digest) -> re_pb2.Digest:
    return re_pb2.Digest(hash=digest.hash, size_bytes=digest.size_bytes)


def digest_from_proto(message: re_pb2.Digest, what: str = "digest") -> Digest:
    if not is_sha256_hex(message.hash) or message.size_bytes < 0:
        raise RemoteError(f"the remote sent a malformed {what}: {message.hash[:80]!r}/{message.size_bytes}")
    return Digest(message.hash, message.size_bytes)


def optional_digest(message: re_pb2.Digest, present: bool, what: str) -> Digest | None:
    return digest_from_proto(message, what) if present else None


# --- messages to protobuf ------------------------------------------------------------------


def _platform(properties: Properties) -> re_pb2.Platform:
    return re_pb2.Platform(
        properties=[re_pb2.Platform.Property(name=n, value=v) for n, v in sorted(properties)]
    )


def command_to_proto(command: Command) -> re_pb2.Command:
    message = re_pb2.Command(
        arguments=list(command.arguments),
        environment_variables=[
            re_pb2.Command.EnvironmentVariable(name=n, value=v) for n, v in sorted(command.env)
        ],
        output_paths=sorted(command.output_paths),
        output_files=sorted(command.output_paths),
        working_directory=command.working_directory,
    )
    if command.platform:
        message.platform.CopyFrom(_platform(command.platform))
    return message


def action_to_proto(action: Action) -> re_pb2.Action:
    message = re_pb2.Action(
        command_digest=digest_to_proto(action.command_digest),
        input_root_digest=digest_to_proto(action.input_root_digest),
        do_not_cache=action.do_not_cache,
    )
    if action.timeout_seconds is not None:
        seconds = int(action.timeout_seconds)
        message.timeout.seconds = seconds
        message.timeout.nanos = int(round((action.timeout_seconds - seconds) * 1e9))
    if action.platform:
        message.platform.CopyFrom(_platform(action.platform))
    return message


def directory_to_proto(directory: Directory) -> re_pb2.Directory:
    return re_pb2.Directory(
        files=[
            re_pb2.FileNode(name=f.name, digest=digest_to_proto(f.digest), is_executable=f.is_executable)
            for f in sorted(directory.files, key=lambda f: f.name)
        ],
        directories=[
            re_pb2.DirectoryNode(name=d.name, digest=digest_to_proto(d.digest))
            for d in sorted(directory.directories, key=lambda d: d.name)
        ],
    )


def action_result_to_proto(result: ActionResult) -> re_pb2.ActionResult:
    message = re_pb2.ActionResult(
        exit_code=result.exit_code,
        output_files=[
            re_pb2.OutputFile(path=o.path, digest=digest_to_proto(o.digest), is_executable=o.is_executable)
            for o in sorted(result.output_files, key=lambda o: o.path)
        ],
        stdout_raw=result.stdout_raw,
        stderr_raw=result.stderr_raw,
    )
    if result.stdout_digest is not None:
        message.stdout_digest.CopyFrom(digest_to_proto(result.stdout_digest))
    if result.stderr_digest is not None:
        message.stderr_digest.CopyFrom(digest_to_proto(result.stderr_digest))
    if result.worker:
        message.execution_metadata.worker = result.worker
    return message


def to_proto(message: Serializable) -> Message:
    if isinstance(message, Command):
        return command_to_proto(message)
    if isinstance(message, Action):
        return action_to_proto(message)
    if isinstance(message, Directory):
        return directory_to_proto(message)
    return action_result_to_proto(message)


def serialize(message: Serializable) -> bytes:
    """The deterministic protobuf bytes of a Command, Action, Directory or ActionResult."""
    return to_proto(message).SerializeToString(deterministic=True)


def serialize_proto(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


# --- protobuf to messages ------------------------------------------------------------------


def _parse(kind: type[_M], data: bytes, what: str) -> _M:
    message = kind()
    try:
        message.ParseFromString(data)
    except DecodeError as error:
        raise RemoteError(f"the remote sent a {what} that does not decode: {error}") from None
    return message


def _properties(platform: re_pb2.Platform) -> Properties:
    return tuple(sorted((p.name, p.value) for p in platform.properties))


def command_from_proto(message: re_pb2.Command) -> Command:
    return Command(
        arguments=tuple(message.arguments),
        env=tuple((e.name, e.value) for e in message.environment_variables),
        output_paths=tuple(message.output_paths) or tuple(message.output_files),
        platform=_properties(message.platform),
        working_directory=message.working_directory,
    )


def action_from_proto(message: re_pb2.Action) -> Action:
    timeout = None
    if message.HasField("timeout"):
        timeout = message.timeout.seconds + message.timeout.nanos / 1e9
    return Action(
        command_digest=digest_from_proto(message.command_digest, "command digest"),
        input_root_digest=digest_from_proto(message.input_root_digest, "input root digest"),
        timeout_seconds=timeout,
        do_not_cache=message.do_not_cache,
        platform=_properties(message.platform),
    )


def _entry_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise RemoteError(f"the remote sent a directory entry named {name[:80]!r}")
    return name


def directory_from_proto(message: re_pb2.Directory) -> Directory:
    if message.symlinks:
        raise RemoteError("the remote sent an input directory with symlinks (pybuild sends none)")
    return Directory(
        files=tuple(
            FileNode(_entry_name(f.name), digest_from_proto(f.digest, "file digest"), f.is_executable)
            for f in message.files
        ),
        directories=tuple(
            DirectoryNode(_entry_name(d.name), digest_from_proto(d.digest, "directory digest"))
            for d in message.directories
        ),
    )


def _output_path(path: str) -> str:
    """An output's path as another machine named it: relative, inside the working directory."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise RemoteError(f"the remote sent an output path {path[:80]!r}")
    return path


def action_result_from_proto(message: re_pb2.ActionResult) -> ActionResult:
    return ActionResult(
        exit_code=message.exit_code,
        output_files=tuple(
            OutputFile(_output_path(o.path), digest_from_proto(o.digest, f"digest of output {o.path[:80]!r}"), o.is_executable)
            for o in message.output_files
        ),
        stdout_digest=optional_digest(message.stdout_digest, message.HasField("stdout_digest"), "stdout digest"),
        stderr_digest=optional_digest(message.stderr_digest, message.HasField("stderr_digest"), "stderr digest"),
        stdout_raw=message.stdout_raw,
        stderr_raw=message.stderr_raw,
        worker=message.execution_metadata.worker,
    )


def parse_command(data: bytes) -> Command:
    return command_from_proto(_parse(re_pb2.Command, data, "Command"))


def parse_action(data: bytes) -> Action:
    return action_from_proto(_parse(re_pb2.Action, data, "Action"))


def parse_directory(data: bytes) -> Directory:
    return directory_from_proto(_parse(re_pb2.Directory, data, "Directory"))


def parse_action_result(data: bytes) -> ActionResult:
    return action_result_from_proto(_parse(re_pb2.ActionResult, data, "ActionResult"))


# --- bots ----------------------------------------------------------------------------------


def lease_from_proto(message: bots_pb2.Lease) -> Lease:
    """A lease as BuildGrid sends it: the payload is an Action (0.4.4) or an Action's Digest."""
    action: Action | None = None
    if message.payload.Is(re_pb2.Action.DESCRIPTOR):
        proto_action = re_pb2.Action()
        message.payload.Unpack(proto_action)
        action = action_from_proto(proto_action)
        digest = Digest.of(serialize_proto(proto_action))
    elif message.payload.Is(re_pb2.Digest.DESCRIPTOR):
        proto_digest = re_pb2.Digest()
        message.payload.Unpack(proto_digest)
        digest = digest_from_proto(proto_digest, "lease's action digest")
    else:
        raise RemoteError(f"the remote sent lease {message.id[:80]!r} with a payload of type {message.payload.type_url[:80]!r}")
    try:
        state = LeaseState(message.state)
    except ValueError:
        raise RemoteError(f"the remote sent lease {message.id[:80]!r} in an unknown state {message.state}") from None
    result = None
    if message.result.Is(re_pb2.ActionResult.DESCRIPTOR):
        proto_result = re_pb2.ActionResult()
        message.result.Unpack(proto_result)
        result = action_result_from_proto(proto_result)
    return Lease(
        id=message.id,
        action_digest=digest,
        state=state,
        action=action,
        result=result,
        status_code=message.status.code,
        status_message=message.status.message,
    )


def lease_to_proto(lease: Lease) -> bots_pb2.Lease:
    message = bots_pb2.Lease(id=lease.id, state=lease.state.value)  # type: ignore[arg-type]  # our enum holds the protobuf's values
    if lease.action is not None:
        message.payload.Pack(action_to_proto(lease.action))
    else:
        message.payload.Pack(digest_to_proto(lease.action_digest))
    if lease.result is not None:
        message.result.Pack(action_result_to_proto(lease.result))
    if lease.status_code or lease.status_message:
        message.status.code = lease.status_code
        message.status.message = lease.status_message
    return message


CAPACITY_KEY = "capacity"  # BuildGrid reads a bot's capacity from worker.configs["capacity"]


def bot_session_to_proto(session: BotSession) -> bots_pb2.BotSession:
    message = bots_pb2.BotSession(
        name=session.name,
        bot_id=session.bot_id,
        status=session.status.value,  # type: ignore[arg-type]  # our enum holds the protobuf's values
        leases=[lease_to_proto(lease) for lease in session.leases],
        version=session.version,
    )
    device = message.worker.devices.add()
    device.handle = session.bot_id
    for name, value in sorted(session.properties):
        device.properties.add(key=name, value=value)
    message.worker.configs.add(key=CAPACITY_KEY, value=str(session.capacity))
    return message


def bot_session_from_proto(message: bots_pb2.BotSession, sent: BotSession) -> BotSession:
    """The server's answer; what the server does not echo (properties, capacity) is the sent one."""
    try:
        status = BotStatus(message.status)
    except ValueError:
        status = sent.status
    return BotSession(
        name=message.name,
        bot_id=message.bot_id or sent.bot_id,
        status=status,
        leases=tuple(_session_lease(lease) for lease in message.leases),
        properties=sent.properties,
        capacity=sent.capacity,
        version=message.version,
        expire_time=message.expire_time.seconds + message.expire_time.nanos / 1e9,
    )


def _session_lease(message: bots_pb2.Lease) -> Lease:
    """A lease of the server's answer; one that does not decode is a ``MalformedLease`` (in its
    state when that is a known one, else ACTIVE: the bot reports it), never an error of the
    whole answer: that would fail every update, and the bot would retry forever."""
    try:
        return lease_from_proto(message)
    except RemoteError as error:
        reason = str(error)
    except DecodeError as error:  # an Any whose bytes are not the message its type names
        reason = str(RemoteError(f"the remote sent lease {message.id[:80]!r} whose payload does not decode: {error}"))
    try:
        state = LeaseState(message.state)
    except ValueError:
        state = LeaseState.ACTIVE
    return MalformedLease(id=message.id, action_digest=EMPTY, state=state, reason=reason)


def input_root(files: Mapping[str, Digest]) -> tuple[Digest, dict[Digest, bytes]]:
    """The Directory messages of a tree of files named by relative path (``layers/x.tar``).

    Returns the root's digest and every Directory's bytes by digest (upload them with the
    files). Paths are relative, ``/``-separated, without ``.``/``..`` or empty components;
    a path both a file and a directory is refused (ValueError: the caller's mistake).
    """
    tree: dict[str, object] = {}
    for path, digest in files.items():
        parts = path.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"not a relative path inside an input root: {path!r}")
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"{path!r}: {part!r} is a file")
            node = child
        if parts[-1] in node:
            raise ValueError(f"{path!r} is named twice, or is a directory")
        node[parts[-1]] = digest
    blobs: dict[Digest, bytes] = {}
    return _store_directory(tree, blobs), blobs


def _store_directory(tree: Mapping[str, object], blobs: dict[Digest, bytes]) -> Digest:
    files: list[FileNode] = []
    directories: list[DirectoryNode] = []
    for name, value in sorted(tree.items()):
        if isinstance(value, Digest):
            files.append(FileNode(name, value))
        else:
            assert isinstance(value, dict)
            directories.append(DirectoryNode(name, _store_directory(value, blobs)))
    data = serialize(Directory(tuple(files), tuple(directories)))
    digest = Digest.of(data)
    blobs[digest] = data
    return digest
