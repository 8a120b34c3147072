"""``Remote``: a REAPI v2 client over one gRPC channel (CAS, ByteStream, action cache,
Execute, Capabilities, and the Remote Workers API's Bots service for ``pybuild worker``).

Synchronous and thread-safe (gRPC's sync stubs): ``dag`` calls it from worker threads.
Every gRPC failure leaves here as a one-line ``RemoteError`` naming the server's URL
(``RemoteUnavailable`` when the server cannot be reached); blobs read are checked against
their digest before anyone sees them.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import grpc
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2_grpc as re_grpc
from buildgrid.common.protos.build.bazel.semver import semver_pb2
from buildgrid.common.protos.google.bytestream import bytestream_pb2, bytestream_pb2_grpc
from buildgrid.common.protos.google.devtools.remoteworkers.v1test2 import bots_pb2, bots_pb2_grpc
from buildgrid.common.protos.google.longrunning import operations_pb2

from ._digest import Digest
from ._endpoint import Endpoint
from ._errors import BotSessionClosed, RemoteBlobCorrupt, RemoteBlobMissing, RemoteError, RemoteUnavailable
from ._messages import ActionResult, BotSession, BotStatus, Capabilities, ExecuteResponse, Properties
from ._proto import (
    action_result_from_proto,
    action_result_to_proto,
    bot_session_from_proto,
    bot_session_to_proto,
    digest_from_proto,
    digest_to_proto,
)
from ._transport import code_name, one_line, open_channel, status_of, translate

_R = TypeVar("_R")

CHUNK = 1 << 20  # ByteStream message payload: well under gRPC's 4 MiB message limit
DEFAULT_MAX_BATCH = 4 * 1024 * 1024 - 1024  # when the server names no limit (and BuildGrid's own)
BATCH_OVERHEAD = 128  # protobuf framing per blob in a batch request, digest included
BATCH_COUNT = 500  # blobs per batch request (BuildGrid's own client's limit)
FIND_MISSING_CHUNK = 4096  # digests per FindMissingBlobs request (~400 KiB)
_SESSION_GONE = (grpc.StatusCode.DATA_LOSS, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
STAGES = {0: "UNKNOWN", 1: "CACHE_CHECK", 2: "QUEUED", 3: "EXECUTING", 4: "COMPLETED"}
# BuildGrid's scheduling hints (build.buildgrid.SchedulingMetadata, in the metadata of an
# Execute); its one field, locality_hint (1, a string), is written here: buildgrid-common
# does not ship that message
SCHEDULING_METADATA = "build.buildgrid.schedulingmetadata-bin"


class Remote:
    """A connection to a REAPI server (``Remote.connect``); close it when done."""

    def __init__(self, endpoint: Endpoint, channel: grpc.Channel, *, connect_timeout: float, timeout: float) -> None:
        self.endpoint = endpoint
        self._channel = channel
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._metadata = endpoint.headers
        self._cas = re_grpc.ContentAddressableStorageStub(channel)
        self._ac = re_grpc.ActionCacheStub(channel)
        self._exec = re_grpc.ExecutionStub(channel)
        self._caps = re_grpc.CapabilitiesStub(channel)
        self._bytestream = bytestream_pb2_grpc.ByteStreamStub(channel)
        self._bots = bots_pb2_grpc.BotsStub(channel)
        self._capabilities: Capabilities | None = None
        self._lock = threading.Lock()
        # One locality hint for every Execute of this client: a server that assigns by
        # locality (BuildGrid's !assign-by-locality) then gives a build's next step to a bot
        # that ran one of its steps and has room, where the layers it builds on are unpacked
        # already, instead of to any bot (which downloads and unpacks them first).
        hint: tuple[str, str | bytes] = (SCHEDULING_METADATA, _scheduling_metadata(uuid.uuid4().hex))
        self._execute_metadata: tuple[tuple[str, str | bytes], ...] = (*self._metadata, hint)

    @classmethod
    def connect(cls, endpoint: Endpoint, *, connect_timeout: float = 2.0, timeout: float = 60.0) -> Remote:
        """A client for ``endpoint``. Nothing is sent yet: ``capabilities()`` (which gives up
        after ``connect_timeout`` seconds) is the cheap first call that says whether the server
        answers. ``timeout`` bounds each CAS and action cache call."""
        return cls(endpoint, open_channel(endpoint), connect_timeout=connect_timeout, timeout=timeout)

    @property
    def url(self) -> str:
        return self.endpoint.url

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing ------------------------------------------------------------------------

    def _call(self, what: str, call: Callable[[], _R]) -> _R:
        try:
            return call()
        except grpc.RpcError as error:
            raise translate(self.url, what, error) from None

    def _resource(self, *parts: str) -> str:
        return "/".join(p for p in (self.endpoint.instance, *parts) if p)

    # --- capabilities --------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        """What the server offers; fails within the connect timeout when it does not answer."""
        return self._capabilities_within(self._connect_timeout)

    def _capabilities_within(self, timeout: float) -> Capabilities:
        request = re_pb2.GetCapabilitiesRequest(instance_name=self.endpoint.instance)
        reply = self._call(
            "GetCapabilities",
            lambda: self._caps.GetCapabilities(request, timeout=timeout, metadata=self._metadata),
        )
        cache = reply.cache_capabilities
        names = re_pb2.DigestFunction.Value.Name
        capabilities = Capabilities(
            digest_functions=tuple(names(f) for f in cache.digest_function)
            or ((names(reply.execution_capabilities.digest_function),) if reply.HasField("execution_capabilities") else ()),
            max_batch_total_size_bytes=cache.max_batch_total_size_bytes,
            action_cache_update_enabled=cache.action_cache_update_capabilities.update_enabled,
            exec_enabled=reply.execution_capabilities.exec_enabled,
            low_api_version=_semver(reply.low_api_version),
            high_api_version=_semver(reply.high_api_version),
        )
        with self._lock:
            self._capabilities = capabilities
        return capabilities

    def _batch_limit(self) -> int:
        """The bytes of blob data one batch request may carry (the server's limit, capped at
        gRPC's message limit), less framing."""
        with self._lock:
            known = self._capabilities
        if known is None:
            try:  # the CAS calls' deadline, not the connect one: a busy server is not a gone one
                known = self._capabilities_within(self._timeout)
            except RemoteError as error:
                if isinstance(error, RemoteUnavailable):
                    raise
                known = None
        limit = DEFAULT_MAX_BATCH
        if known is not None and known.max_batch_total_size_bytes > 0:
            limit = min(limit, known.max_batch_total_size_bytes)
        return limit - 1024

    # --- CAS -----------------------------------------------------------------------------

    def find_missing(self, digests: Iterable[Digest]) -> frozenset[Digest]:
        """The digests the CAS lacks."""
        wanted = sorted(set(digests))
        missing: set[Digest] = set()
        for start in range(0, len(wanted), FIND_MISSING_CHUNK):
            request = re_pb2.FindMissingBlobsRequest(
                instance_name=self.endpoint.instance,
                blob_digests=[digest_to_proto(d) for d in wanted[start : start + FIND_MISSING_CHUNK]],
            )
            reply = self._call(
                "FindMissingBlobs",
                lambda: self._cas.FindMissingBlobs(request, timeout=self._timeout, metadata=self._metadata),
            )
            missing.update(digest_from_proto(d) for d in reply.missing_blob_digests)
        return frozenset(missing)

    def upload(self, blobs: Mapping[Digest, bytes]) -> None:
        """Put blobs into the CAS: small ones batched, large ones through ByteStream.

        Each blob must match its digest (ValueError otherwise: the caller's mistake).
        """
        limit = self._batch_limit()
        batch: list[tuple[Digest, bytes]] = []
        size = 0
        for digest, data in blobs.items():
            if Digest.of(data) != digest:
                raise ValueError(f"blob does not match its digest {digest}")
            if digest.size_bytes + BATCH_OVERHEAD > limit:
                self._write(digest, _chunks_of(data))
                continue
            if size + digest.size_bytes + BATCH_OVERHEAD > limit or len(batch) >= BATCH_COUNT:
                self._batch_update(batch)
                batch, size = [], 0
            batch.append((digest, data))
            size += digest.size_bytes + BATCH_OVERHEAD
        if batch:
            self._batch_update(batch)

    def upload_file(self, digest: Digest, path: Path) -> None:
        """Put a file into the CAS under ``digest`` (streamed; the server checks the digest)."""
        if digest.size_bytes + BATCH_OVERHEAD <= self._batch_limit():
            self._batch_update([(digest, Path(path).read_bytes())])
            return
        with open(path, "rb") as file:
            self._write(digest, iter(lambda: file.read(CHUNK), b""))

    def _batch_update(self, blobs: list[tuple[Digest, bytes]]) -> None:
        request = re_pb2.BatchUpdateBlobsRequest(
            instance_name=self.endpoint.instance,
            requests=[re_pb2.BatchUpdateBlobsRequest.Request(digest=digest_to_proto(d), data=data) for d, data in blobs],
        )
        reply = self._call(
            "BatchUpdateBlobs",
            lambda: self._cas.BatchUpdateBlobs(request, timeout=self._timeout, metadata=self._metadata),
        )
        for response in reply.responses:
            if response.status.code != 0:
                raise RemoteError(
                    f"the remote CAS at {self.url} refused blob {response.digest.hash[:16]}…: "
                    f"{one_line(response.status.message)}"
                )

    def _write(self, digest: Digest, chunks: Iterator[bytes]) -> None:
        resource = self._resource("uploads", str(uuid.uuid4()), "blobs", digest.hash, str(digest.size_bytes))

        def requests() -> Iterator[bytestream_pb2.WriteRequest]:
            offset = 0
            pending = next(chunks, b"")
            while True:
                following = next(chunks, None)
                yield bytestream_pb2.WriteRequest(
                    resource_name=resource if offset == 0 else "",
                    write_offset=offset,
                    data=pending,
                    finish_write=following is None,
                )
                if following is None:
                    return
                offset += len(pending)
                pending = following

        reply = self._call(
            "ByteStream.Write",
            lambda: self._bytestream.Write(requests(), timeout=None, metadata=self._metadata),
        )
        if reply.committed_size not in (digest.size_bytes, -1):
            raise RemoteError(
                f"the remote CAS at {self.url} committed {reply.committed_size} bytes of {digest.size_bytes} for {digest.hash[:16]}…"
            )

    def read(self, digest: Digest) -> bytes:
        """A blob's bytes, checked against its digest."""
        if digest.size_bytes + BATCH_OVERHEAD <= self._batch_limit():
            data = self._batch_read(digest)
        else:
            data = b"".join(self._read_stream(digest))
        _verify(self.url, digest, hashlib.sha256(data), len(data))
        return data

    def read_blobs(self, digests: Sequence[Digest]) -> list[bytes]:
        """Several small blobs' bytes, in order, each checked against its digest: in one
        BatchReadBlobs call while their total fits one batch (more calls beyond, and a blob too
        big for any batch through ByteStream)."""
        limit = self._batch_limit()
        found: dict[Digest, bytes] = {}
        batch: list[Digest] = []
        size = 0
        for digest in dict.fromkeys(digests):
            if digest.size_bytes + BATCH_OVERHEAD > limit:
                found[digest] = self.read(digest)
                continue
            if size + digest.size_bytes + BATCH_OVERHEAD > limit or len(batch) >= BATCH_COUNT:
                found.update(self._batch_read_many(batch))
                batch, size = [], 0
            batch.append(digest)
            size += digest.size_bytes + BATCH_OVERHEAD
        if batch:
            found.update(self._batch_read_many(batch))
        return [found[d] for d in digests]

    def _batch_read_many(self, digests: list[Digest]) -> dict[Digest, bytes]:
        request = re_pb2.BatchReadBlobsRequest(instance_name=self.endpoint.instance, digests=[digest_to_proto(d) for d in digests])
        reply = self._call(
            "BatchReadBlobs",
            lambda: self._cas.BatchReadBlobs(request, timeout=self._timeout, metadata=self._metadata),
        )
        wanted = {d.hash: d for d in digests}
        found: dict[Digest, bytes] = {}
        for response in reply.responses:
            digest = wanted.get(response.digest.hash)
            if digest is None or digest in found:
                continue  # not asked for (or twice): ignored, never trusted
            if response.status.code == grpc.StatusCode.NOT_FOUND.value[0]:
                raise RemoteBlobMissing(f"the remote CAS at {self.url} has no blob {digest}")
            if response.status.code != 0:
                raise RemoteError(f"reading blob {digest} at {self.url} failed: {one_line(response.status.message)}")
            _verify(self.url, digest, hashlib.sha256(response.data), len(response.data))
            found[digest] = response.data
        for digest in digests:
            if digest not in found:
                raise RemoteError(f"the remote CAS at {self.url} did not answer for blob {digest}")
        return found

    def download(self, digest: Digest, path: Path) -> None:
        """Write a blob to ``path`` atomically (a temporary file beside it, renamed once checked)."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
        hashed = hashlib.sha256()
        size = 0
        try:
            with open(temporary, "xb") as file:
                small = digest.size_bytes + BATCH_OVERHEAD <= self._batch_limit()
                for chunk in [self._batch_read(digest)] if small else self._read_stream(digest):
                    hashed.update(chunk)
                    size += len(chunk)
                    file.write(chunk)
            _verify(self.url, digest, hashed, size)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def _batch_read(self, digest: Digest) -> bytes:
        request = re_pb2.BatchReadBlobsRequest(instance_name=self.endpoint.instance, digests=[digest_to_proto(digest)])
        reply = self._call(
            "BatchReadBlobs",
            lambda: self._cas.BatchReadBlobs(request, timeout=self._timeout, metadata=self._metadata),
        )
        for response in reply.responses:
            if response.digest.hash != digest.hash:
                continue
            if response.status.code == grpc.StatusCode.NOT_FOUND.value[0]:
                raise RemoteBlobMissing(f"the remote CAS at {self.url} has no blob {digest}")
            if response.status.code != 0:
                raise RemoteError(f"reading blob {digest} at {self.url} failed: {one_line(response.status.message)}")
            return response.data
        raise RemoteError(f"the remote CAS at {self.url} did not answer for blob {digest}")

    def _read_stream(self, digest: Digest) -> Iterator[bytes]:
        """The blob's chunks; never more bytes than the digest's size (a lying server is cut off)."""
        request = bytestream_pb2.ReadRequest(resource_name=self._resource("blobs", digest.hash, str(digest.size_bytes)))
        received = 0
        try:
            for reply in self._bytestream.Read(request, timeout=None, metadata=self._metadata):
                received += len(reply.data)
                if received > digest.size_bytes:
                    raise RemoteBlobCorrupt(f"the remote CAS at {self.url} sent more than {digest.size_bytes} bytes for blob {digest.hash[:16]}…")
                yield reply.data
        except grpc.RpcError as error:
            code, details = status_of(error)
            if code == grpc.StatusCode.NOT_FOUND:
                raise RemoteBlobMissing(f"the remote CAS at {self.url} has no blob {digest}") from None
            if code == grpc.StatusCode.DATA_LOSS:  # BuildGrid, for a blob shorter than its digest says
                raise RemoteBlobCorrupt(f"the remote CAS at {self.url} has a damaged blob {digest}: {details}") from None
            raise translate(self.url, "ByteStream.Read", error) from None

    # --- action cache --------------------------------------------------------------------

    def get_action_result(self, action: Digest) -> ActionResult | None:
        """The cached result of an Action, or None."""
        request = re_pb2.GetActionResultRequest(
            instance_name=self.endpoint.instance, action_digest=digest_to_proto(action), inline_stdout=True, inline_stderr=True
        )
        try:
            reply = self._ac.GetActionResult(request, timeout=self._timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            if status_of(error)[0] == grpc.StatusCode.NOT_FOUND:
                return None
            raise translate(self.url, "GetActionResult", error) from None
        return action_result_from_proto(reply)

    def update_action_result(self, action: Digest, result: ActionResult) -> None:
        request = re_pb2.UpdateActionResultRequest(
            instance_name=self.endpoint.instance, action_digest=digest_to_proto(action), action_result=action_result_to_proto(result)
        )
        self._call(
            "UpdateActionResult",
            lambda: self._ac.UpdateActionResult(request, timeout=self._timeout, metadata=self._metadata),
        )

    # --- execution -----------------------------------------------------------------------

    def execute(
        self,
        action: Digest,
        *,
        skip_cache_lookup: bool = False,
        on_update: Callable[[str], None] | None = None,
    ) -> ExecuteResponse:
        """Run an Action (already in the CAS with its Command and inputs) and wait for it.

        ``on_update`` hears each new stage (``CACHE_CHECK``, ``QUEUED``, ``EXECUTING``,
        ``COMPLETED``). A stream the server ends early is resumed with WaitExecution.
        """
        request = re_pb2.ExecuteRequest(
            instance_name=self.endpoint.instance, action_digest=digest_to_proto(action), skip_cache_lookup=skip_cache_lookup
        )
        stream: Iterable[operations_pb2.Operation] = self._exec.Execute(request, metadata=self._execute_metadata)
        name, stage = "", ""
        for _attempt in range(100):
            try:
                for operation in stream:
                    name = operation.name or name
                    new_stage = _stage(operation)
                    if new_stage != stage and on_update is not None:
                        on_update(new_stage)
                    stage = new_stage
                    if operation.done:
                        return self._finished(operation)
            except grpc.RpcError as error:
                raise translate(self.url, "Execute", error) from None
            if not name:
                break
            stream = self._exec.WaitExecution(re_pb2.WaitExecutionRequest(name=name), metadata=self._metadata)
        raise RemoteError(f"the remote executor at {self.url} ended the Execute stream without a result")

    def _finished(self, operation: operations_pb2.Operation) -> ExecuteResponse:
        if operation.HasField("error"):
            raise RemoteError(
                f"the remote executor at {self.url} could not run the action: "
                f"{code_name(operation.error.code)}: {one_line(operation.error.message)}"
            )
        response = re_pb2.ExecuteResponse()
        if not operation.response.Unpack(response):
            raise RemoteError(f"the remote executor at {self.url} answered Execute with {operation.response.type_url[:80]!r}")
        return ExecuteResponse(
            result=action_result_from_proto(response.result),
            cached=response.cached_result,
            status_code=response.status.code,
            message=one_line(response.status.message),
        )

    # --- bots (Remote Workers API) -------------------------------------------------------

    def create_bot_session(
        self,
        bot_id: str,
        properties: Mapping[str, str] | Properties,
        *,
        capacity: int = 1,
        timeout: float = 30.0,
        interrupt: threading.Event | None = None,
    ) -> BotSession:
        """Join the farm as ``bot_id`` with platform ``properties``, ready for ``capacity`` leases.

        BuildGrid holds the call until it has a lease for the bot or ~0.8 × ``timeout`` passed
        (``timeout`` must exceed ~4 s, or BuildGrid assigns nothing); ``interrupt`` ends the wait
        early (the session is then created without leases)."""
        pairs = tuple(sorted(properties.items() if isinstance(properties, Mapping) else properties))
        session = BotSession(name="", bot_id=bot_id, status=BotStatus.OK, properties=pairs, capacity=capacity)
        request = bots_pb2.CreateBotSessionRequest(parent=self.endpoint.instance, bot_session=bot_session_to_proto(session))
        reply = self._wait("CreateBotSession", self._bots.CreateBotSession.future(request, timeout=timeout, metadata=self._metadata), interrupt)
        if reply is None:
            raise RemoteError(f"creating a bot session at {self.url} was interrupted")
        return bot_session_from_proto(reply, session)

    def update_bot_session(
        self, session: BotSession, *, timeout: float = 30.0, interrupt: threading.Event | None = None
    ) -> BotSession:
        """Report the session's leases (ACTIVE ones running, COMPLETED ones done) and get the
        server's view back: the leases still active and any new ones.

        Like CreateBotSession this waits for new work up to ~0.8 × ``timeout``; when
        ``interrupt`` is set first (a lease finished) the call is cancelled and ``session`` is
        returned as it was sent: call again with the current leases (a COMPLETED lease the
        server saw already is skipped by it). ``BotSessionClosed`` means the server dropped the
        session (it missed its keepalive): create a new one.
        """
        request = bots_pb2.UpdateBotSessionRequest(name=session.name, bot_session=bot_session_to_proto(session))
        future = self._bots.UpdateBotSession.future(request, timeout=timeout, metadata=self._metadata)
        reply = self._wait("UpdateBotSession", future, interrupt)
        return session if reply is None else bot_session_from_proto(reply, session)

    def _wait(self, what: str, future: grpc.Future[bots_pb2.BotSession], interrupt: threading.Event | None) -> bots_pb2.BotSession | None:
        if interrupt is not None:
            finished = threading.Event()
            future.add_done_callback(lambda _: finished.set())
            while not finished.wait(0.02):
                if interrupt.is_set() and future.cancel():
                    return None
        try:
            return future.result()
        except grpc.FutureCancelledError:
            return None
        except grpc.RpcError as error:
            if status_of(error)[0] in _SESSION_GONE and what == "UpdateBotSession":
                raise BotSessionClosed(f"the remote executor at {self.url} closed the bot session: {status_of(error)[1]}") from None
            raise translate(self.url, what, error) from None


def _scheduling_metadata(locality_hint: str) -> bytes:
    """A SchedulingMetadata message naming ``locality_hint`` (field 1, length-delimited)."""
    data = locality_hint.encode()
    assert len(data) < 0x80, "a one-byte length"
    return bytes((0x0A, len(data))) + data


def _semver(version: semver_pb2.SemVer) -> str:
    return f"{version.major}.{version.minor}" if version.major or version.minor else ""


def _stage(operation: operations_pb2.Operation) -> str:
    metadata = re_pb2.ExecuteOperationMetadata()
    if operation.HasField("metadata") and operation.metadata.Unpack(metadata):
        return STAGES.get(metadata.stage, "UNKNOWN")
    return "UNKNOWN"


def _chunks_of(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    if not data:
        yield b""
    for start in range(0, len(data), CHUNK):
        yield bytes(view[start : start + CHUNK])


def _verify(url: str, digest: Digest, hashed: hashlib._Hash, size: int) -> None:
    if size != digest.size_bytes or hashed.hexdigest() != digest.hash:
        raise RemoteBlobCorrupt(
            f"the remote CAS at {url} sent a blob that does not match its digest {digest.hash[:16]}… "
            f"({size} bytes, sha256 {hashed.hexdigest()[:16]}…): refused"
        )
