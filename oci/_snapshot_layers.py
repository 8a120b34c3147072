"""The layer of each snapshot: the one owner of the ``snapshot: -> layer`` records.

A snapshot (an unpacked layer tree in the cache) becomes a layer blob when an
image needs one: archived from its tree, or -- for a snapshot unpacked from a
pulled layer or known from a remote cache -- the very blob it came from.  The
image store keeps which blobs a snapshot has in cache-index records whose
layout is private to ``oci``; everything above asks this class instead.

One ``SnapshotLayers`` serves one build: it also holds the layers the build
leaves in a registry (known from a remote cache, pushed to that registry
again), which have no blob here at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ._compression import Compression
from ._export_layers import LayerSettings
from ._store import ImageStore, Layer


class SnapshotLayers:
    """Answers a snapshot's diffID and its ``Layer`` in a compression, adopts a
    fetched blob as a snapshot's layer, and knows which layers stay remote."""

    def __init__(self, store: ImageStore) -> None:
        self._store = store
        self._remote: dict[str, Layer] = {}

    def diff_id(self, snapshot: str) -> str | None:
        """The diffID of the snapshot's layer, if its tar was ever written or adopted."""
        return self._store.snapshot_layer_diff_id(snapshot)

    def adopt(self, snapshot: str, layer: Layer) -> None:
        """Make ``layer`` (its blob already stored and checked) *the* layer of ``snapshot``.

        The store then exports or pushes that blob as is (same digest as on the
        machine that made it) instead of archiving the snapshot again -- and the
        snapshot itself need not exist for that.
        """
        self._store.adopt_blob(snapshot, layer)
        self._store.size_as_built(layer)  # what the step made, as BuildKit sizes it
        self._remote.pop(snapshot, None)  # its blob is here now

    def layer(self, snapshot: str, compression: str | None, level: int | None = None, *, mtime: int | None = None) -> Layer:
        """The snapshot's layer: a remote one as it is, else made in ``compression``
        (None: the plain tar, named by reference, no blob stored)."""
        remote = self._remote.get(snapshot)
        if remote is not None:
            return remote
        if compression is None:
            return self._store.layer_by_reference(snapshot)
        return self._store.layer_for_snapshot(snapshot, compression, level, mtime=mtime)

    def leave_remote(self, snapshot: str, layer: Layer, repository: str) -> None:
        """The snapshot's layer stays in ``repository`` (``registry/path``): a push to
        that registry mounts the blob from there instead of uploading it."""
        self._store.remember_origin([layer.digest], repository)
        self._remote[snapshot] = layer

    def remote_only(self) -> Mapping[str, Layer]:
        """The layers left in a registry, by snapshot."""
        return MappingProxyType(dict(self._remote))


def layer_compression(
    requested: LayerSettings,
    *,
    outputs: Sequence[LayerSettings] = (),
    output_type: str | None = None,
    cache_export: bool = False,
    inline_cache: bool = False,
    rewrite_timestamp: bool = False,
) -> LayerSettings:
    """The one rule for how layers are compressed; every place that decides calls it.

    - For a build (``outputs`` given): an output that asks for a compression
      gets the new layers made that way once, not twice; else ``requested``
      (``--compression``).
    - For one output (``output_type``): an OCI archive gzips plain layers by
      default, as BuildKit's OCI exporter does.
    - For the image store: ``compression`` None keeps new layers by reference
      (plain tars, blobs made when exported) -- unless a cache export makes
      the blobs anyway (the image names the same blobs, so a runner importing
      the cache assembles the same manifest), an inline cache names the blobs
      a push sends, rewritten times need their own tar, or a level is asked
      for; those get gzip.
    """
    from dataclasses import replace

    settings = requested
    wanted = next((o for o in outputs if o.compression), None)
    if wanted is not None:
        level = wanted.level if wanted.level is not None else requested.level
        settings = replace(requested, compression=wanted.compression, level=level)
    if output_type == "oci" and settings.compression is None:
        settings = replace(settings, compress_plain=True)
    needs_blob = cache_export or inline_cache or rewrite_timestamp or settings.level is not None
    if output_type is None and settings.compression is None and needs_blob:
        settings = replace(settings, compression=Compression.GZIP.value)
    return settings

