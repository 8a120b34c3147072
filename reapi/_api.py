"""The seam between ``dag`` and a REAPI server: what a build asks of the CAS, the action cache
and the execution service. ``Remote`` (gRPC) and ``MemoryRemote`` (the fake) both satisfy
it; ``check_remote`` is the conformance check run against both."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

from ._digest import Digest
from ._messages import ActionResult, Capabilities, ExecuteResponse


class RemoteApi(Protocol):
    """CAS, action cache and Execute. Every method is synchronous and thread-safe."""

    @property
    def url(self) -> str: ...

    def capabilities(self) -> Capabilities: ...

    def find_missing(self, digests: Iterable[Digest]) -> frozenset[Digest]: ...

    def upload(self, blobs: Mapping[Digest, bytes]) -> None: ...

    def upload_file(self, digest: Digest, path: Path) -> None: ...

    def read(self, digest: Digest) -> bytes: ...

    def read_blobs(self, digests: Sequence[Digest]) -> list[bytes]:
        """Small blobs' bytes in order, each checked by digest, in as few calls as fit."""

    def download(self, digest: Digest, path: Path) -> None: ...

    def get_action_result(self, action: Digest) -> ActionResult | None: ...

    def update_action_result(self, action: Digest, result: ActionResult) -> None: ...

    def execute(
        self,
        action: Digest,
        *,
        skip_cache_lookup: bool = False,
        on_update: Callable[[str], None] | None = None,
    ) -> ExecuteResponse: ...

    def close(self) -> None: ...
