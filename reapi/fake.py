"""``MemoryRemote``: the in-memory fake of ``RemoteApi`` (CAS, action cache, Execute through
an injected callable), for tests of code built on ``reapi`` that need no server."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ._digest import Digest
from ._errors import RemoteBlobCorrupt, RemoteBlobMissing, RemoteError, RemoteUnavailable
from ._messages import Action, ActionResult, Capabilities, ExecuteResponse
from ._proto import parse_action


class MemoryRemote:
    """A REAPI server in a dict. ``blobs`` and ``action_results`` are open for tests to look
    at (and to tamper with); ``executed`` lists the Actions run; ``unavailable`` makes every
    call fail as an unreachable server does."""

    def __init__(
        self,
        executor: Callable[[Action], ActionResult] | None = None,
        *,
        url: str = "grpc://memory:0",
        max_batch_total_size_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self._executor = executor
        self._url = url
        self._max_batch = max_batch_total_size_bytes
        self.blobs: dict[Digest, bytes] = {}
        self.action_results: dict[Digest, ActionResult] = {}
        self.executed: list[Digest] = []
        self.unavailable = False
        self.batch_reads = 0  # read_blobs calls (one round trip each on a real server)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self._url

    def _check_reachable(self) -> None:
        if self.unavailable:
            raise RemoteUnavailable(f"cannot reach the remote executor at {self._url}: connection refused")

    def capabilities(self) -> Capabilities:
        self._check_reachable()
        return Capabilities(
            digest_functions=("SHA256",),
            max_batch_total_size_bytes=self._max_batch,
            action_cache_update_enabled=True,
            exec_enabled=self._executor is not None,
            low_api_version="2.0",
            high_api_version="2.3",
        )

    def find_missing(self, digests: Iterable[Digest]) -> frozenset[Digest]:
        self._check_reachable()
        with self._lock:
            return frozenset(d for d in digests if d not in self.blobs)

    def upload(self, blobs: Mapping[Digest, bytes]) -> None:
        self._check_reachable()
        for digest, data in blobs.items():
            if Digest.of(data) != digest:
                raise ValueError(f"blob does not match its digest {digest}")
        with self._lock:
            self.blobs.update(blobs)

    def upload_file(self, digest: Digest, path: Path) -> None:
        data = Path(path).read_bytes()
        if Digest.of(data) != digest:
            raise RemoteError(f"ByteStream.Write at {self._url} failed: INVALID_ARGUMENT: the data does not match {digest}")
        self.upload({digest: data})

    def read(self, digest: Digest) -> bytes:
        self._check_reachable()
        with self._lock:
            data = self.blobs.get(digest)
        if data is None:
            raise RemoteBlobMissing(f"the remote CAS at {self._url} has no blob {digest}")
        if Digest.of(data) != digest:
            raise RemoteBlobCorrupt(f"the remote CAS at {self._url} sent a blob that does not match its digest {digest.hash[:16]}…: refused")
        return data

    def read_blobs(self, digests: Sequence[Digest]) -> list[bytes]:
        self.batch_reads += 1
        return [self.read(d) for d in digests]

    def download(self, digest: Digest, path: Path) -> None:
        data = self.read(digest)
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.part")
        try:
            temporary.write_bytes(data)
            os.replace(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)

    def get_action_result(self, action: Digest) -> ActionResult | None:
        self._check_reachable()
        with self._lock:
            return self.action_results.get(action)

    def update_action_result(self, action: Digest, result: ActionResult) -> None:
        self._check_reachable()
        with self._lock:
            self.action_results[action] = result

    def execute(
        self,
        action: Digest,
        *,
        skip_cache_lookup: bool = False,
        on_update: Callable[[str], None] | None = None,
    ) -> ExecuteResponse:
        report = on_update or (lambda stage: None)
        self._check_reachable()
        report("CACHE_CHECK")
        cached = None if skip_cache_lookup else self.get_action_result(action)
        if cached is not None:
            report("COMPLETED")
            return ExecuteResponse(result=cached, cached=True)
        if self._executor is None:
            raise RemoteError(f"the remote executor at {self._url} could not run the action: UNIMPLEMENTED: no workers")
        decoded = parse_action(self.read(action))
        missing = self.find_missing([decoded.command_digest, decoded.input_root_digest])
        if missing:
            raise RemoteError(
                f"the remote executor at {self._url} could not run the action: FAILED_PRECONDITION: "
                f"missing blobs {', '.join(sorted(str(d) for d in missing))}"
            )
        report("QUEUED")
        report("EXECUTING")
        result = self._executor(decoded)
        with self._lock:
            self.executed.append(action)
        if result.exit_code == 0 and not decoded.do_not_cache:
            self.update_action_result(action, result)
        report("COMPLETED")
        return ExecuteResponse(result=result, cached=False)

    def close(self) -> None:
        pass


if TYPE_CHECKING:  # both sides of the seam satisfy it (mypy checks this; nothing runs it)
    from ._api import RemoteApi
    from ._client import Remote

    def _satisfy(fake: MemoryRemote, real: Remote) -> tuple[RemoteApi, RemoteApi]:
        return fake, real
