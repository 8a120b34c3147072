"""What a build asks of its runner, one Protocol per concern.

The solver needs only ``OpRunner`` (running ops).  A whole build also asks
the runner to prepare the export (bring remote-cache layers here, or leave
them in the registry the image goes to) and, for ``--cache-to`` and a broken
``--cache-from``, about the remote caches it used.  ``Worker`` is the one
real runner; a remote runner would satisfy the same Protocols.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ._solver import OpRunner

if TYPE_CHECKING:
    from pybuild.cache.remote import RemoteCache, RemoteRecord

    from ._layers import SnapshotLayerStore


class ExportPreparer(Protocol):
    async def ensure_local(self, chain: Sequence[str]) -> None:
        """Download and unpack the remote-cache layers of ``chain`` that are not here yet."""

    async def prepare_export(self, chain: Sequence[str], *, leave_in: frozenset[str] = frozenset()) -> None:
        """Fetch the blobs of ``chain``'s remote-cache layers, except those in a
        registry of ``leave_in``, which stay there (``SnapshotLayerStore.remote_only``)."""


class RemoteCacheRunner(Protocol):
    """What a cache export and a broken cache import need of the runner."""

    @property
    def keys(self) -> Mapping[str, str]:
        """Each solved op's cache key, by op digest."""

    @property
    def layers(self) -> SnapshotLayerStore:
        """The layer of each snapshot the runner made or adopted."""

    @property
    def pending_remote(self) -> Mapping[str, tuple[RemoteRecord, RemoteCache, str | None]]:
        """Layers known from a remote cache, not here yet: snapshot -> (record, cache, parent)."""

    @property
    def used_cache_mounts(self) -> Mapping[str, Path]:
        """The cache mounts the build used, by id."""

    async def adopt_remote_layer(self, layer: str) -> None:
        """Fetch a remote layer's blob (checked) and make it the snapshot's layer."""

    def drop_remote_cache(self, cache: RemoteCache) -> None:
        """Forget a cache that turned out broken; what came from it is built instead."""


class BuildRunner(OpRunner, ExportPreparer, RemoteCacheRunner, Protocol):
    """Everything ``build`` asks of a runner; ``close`` ends its lease."""

    def close(self) -> None:
        """Release what the build held (its lease on snapshots and blobs)."""
