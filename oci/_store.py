"""The local image store: images, tags, and the layers behind them.

An image is its config blob (the image ID is the config's digest, as in
Docker) plus a manifest blob, both in the content store; tags map a
normalized reference to an image ID in the cache index.  Layers are kept
twice, each form made on demand and then reused: as blobs (compressed, for
export and push) and as snapshots (unpacked trees, for building on top).
A layer's snapshot is named by its chain ID, so a layer shared by several
images is unpacked once; a built layer's snapshot is remembered under the
chain ID it gets when exported, so building ``FROM`` a local image reuses
the build's own snapshots.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pybuild.errors import ImageError, NotFound

from ._compression import Compression, compress_layer, layer_media_type
from ._formats import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_MANIFEST,
    canonical_json,
    rfc3339,
    sha256_digest,
)
from ._reference import Reference, parse_reference
from ._tar_apply import apply_layer

SNAPSHOT_RECORD = "snapshot:"  # cache-index records describing a snapshot's layer forms
CHAIN_RECORD = "chain:"  # cache-index records: chain ID -> snapshot


@dataclass(frozen=True)
class Layer:
    """One layer of an image: its diffID and one stored compressed form."""

    diff_id: str
    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class ResolvedImage:
    """What a build needs of a base image: the pinned digest and the config."""

    ref: str
    manifest_digest: str
    config: Mapping[str, Any]


@dataclass(frozen=True)
class StoredImage:
    id: str  # the config digest (Docker's image ID)
    manifest_digest: str
    config: Mapping[str, Any] = field(repr=False)
    layers: tuple[Layer, ...] = ()
    created: float = 0.0
    size: int = 0  # uncompressed bytes of all layers
    tags: tuple[str, ...] = ()

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append(sha256_digest(f"{out[-1]} {diff_id}".encode()))
    return out


class ImageStore:
    """Images and tags of one pybuild root.  Thread-safe."""

    def __init__(self, root: Any) -> None:  # cache.Root
        self.root = root
        self._unpack_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------ names

    @staticmethod
    def normalize(name: str) -> str:
        return str(parse_reference(name))

    def resolve_id(self, name_or_id: str) -> str:
        """The image ID a tag, ``name@digest``, full ID or unique ID prefix names."""
        text = name_or_id.strip()
        hex_part = text.removeprefix("sha256:")
        if 4 <= len(hex_part) <= 64 and all(c in "0123456789abcdef" for c in hex_part):
            matches = [r.digest for r in self.root.index.images() if r.digest.split(":", 1)[1].startswith(hex_part)]
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                raise ImageError(f"{text}: ambiguous image ID prefix ({len(matches)} images match)", hint="give more digits")
            if text.startswith("sha256:"):
                raise NotFound(f"no such image: {text}")
        try:
            ref = parse_reference(text)
        except ImageError:
            raise NotFound(f"no such image: {text}") from None
        if ref.digest is not None:
            for record in self.root.index.images():
                if record.meta.get("manifest") == ref.digest or ref.digest in record.meta.get("repo_digests", []):
                    return record.digest
            raise NotFound(f"no such image: {text}")
        image_id = self.root.index.get_tag(str(ref))
        if image_id is None:
            raise NotFound(f"no such image: {ref.familiar}", hint="pybuild images lists the local images")
        return image_id

    # ------------------------------------------------------------ reading

    def get(self, name_or_id: str) -> StoredImage:
        return self.by_id(self.resolve_id(name_or_id))

    def by_id(self, image_id: str) -> StoredImage:
        record = self.root.index.get_image(image_id)
        if record is None:
            raise NotFound(f"no such image: {image_id}")
        config = json.loads(self._read_blob(image_id, "image config"))
        layers = tuple(Layer(**layer) for layer in record.meta.get("layers", []))
        tags = tuple(t.name for t in self.root.index.tags() if t.digest == image_id)
        return StoredImage(image_id, record.meta["manifest"], config, layers, record.created, record.size, tags)

    def images(self) -> list[StoredImage]:
        by_image: dict[str, list[str]] = {}
        for tag in self.root.index.tags():
            by_image.setdefault(tag.digest, []).append(tag.name)
        out = []
        for record in self.root.index.images():
            layers = tuple(Layer(**layer) for layer in record.meta.get("layers", []))
            out.append(
                StoredImage(
                    record.digest, record.meta["manifest"], record.meta.get("config_summary", {}), layers,
                    record.created, record.size, tuple(sorted(by_image.get(record.digest, []))),
                )
            )
        return sorted(out, key=lambda image: image.created, reverse=True)

    def lookup(self, ref: str, platform: Any = None) -> ResolvedImage | None:
        """The image a normalized reference names, if it is in the store."""
        try:
            image = self.get(ref)
        except NotFound:
            return None
        return ResolvedImage(ref, image.manifest_digest, image.config)

    def image_by_manifest(self, manifest_digest: str) -> StoredImage:
        for record in self.root.index.images():
            if record.meta.get("manifest") == manifest_digest:
                return self.by_id(record.digest)
        raise NotFound(f"no image with manifest {manifest_digest}")

    def _read_blob(self, digest: str, what: str) -> bytes:
        if not self.root.blobs.has(digest):
            raise ImageError(f"{what} {digest} is missing from the store", hint="pull or build the image again")
        with self.root.blobs.open(digest, verify=True) as f:
            return f.read()

    # ------------------------------------------------------------ writing

    def add_image(self, config: Mapping[str, Any], layers: Sequence[Layer], tags: Iterable[str] = ()) -> StoredImage:
        """Store an image (config + OCI manifest) and point ``tags`` at it."""
        config_bytes = canonical_json(dict(config))
        image_id = self.root.blobs.put(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": image_id, "size": len(config_bytes)},
            "layers": [{"mediaType": l.media_type, "digest": l.digest, "size": l.size} for l in layers],
        }
        manifest_digest = self.root.blobs.put(canonical_json(manifest))
        return self.register(image_id, manifest_digest, config, layers, tags)

    def register(
        self, image_id: str, manifest_digest: str, config: Mapping[str, Any], layers: Sequence[Layer],
        tags: Iterable[str] = (), repo_digests: Iterable[str] = (),
    ) -> StoredImage:
        size = sum(self._uncompressed_size(l) for l in layers)
        existing = self.root.index.get_image(image_id)
        previous_digests = list(existing.meta.get("repo_digests", [])) if existing else []
        meta = {
            "manifest": manifest_digest,
            "layers": [vars(l) for l in layers],
            "config_summary": {"config": {"Labels": (config.get("config") or {}).get("Labels") or {}}, "created": config.get("created", "")},
            "repo_digests": sorted(set(previous_digests) | set(repo_digests)),
        }
        created = existing.created if existing else time.time()
        self.root.index.put_image(image_id, created=created, size=size, meta=meta)
        for tag in tags:
            self.tag(image_id, tag)
        return self.by_id(image_id)

    def _uncompressed_size(self, layer: Layer) -> int:
        record = self.root.index.lookup(CHAIN_RECORD + "size:" + layer.diff_id)
        if record is not None:
            return int(record.meta.get("size", 0))
        return layer.size

    def tag(self, image_id: str, name: str) -> str | None:
        """Point ``name`` at the image; returns the image the tag left (now maybe dangling)."""
        normalized = self.normalize(name)
        previous = self.root.index.set_tag(normalized, image_id)
        return previous if previous != image_id else None

    def untag(self, name: str) -> str | None:
        return self.root.index.delete_tag(self.normalize(name))

    def remove(self, image_id: str) -> None:
        """Forget an image record (its blobs and snapshots go at the next prune)."""
        for tag in self.root.index.tags():
            if tag.digest == image_id:
                self.root.index.delete_tag(tag.name)
        self.root.index.delete_image(image_id)

    def referenced(self) -> set[str]:
        """Digests and snapshot ids that stored images need (prune must keep them)."""
        keep: set[str] = set()
        for record in self.root.index.images():
            keep.add(record.digest)
            keep.add(record.meta.get("manifest", ""))
            diff_ids = []
            for layer in record.meta.get("layers", []):
                keep.add(layer["digest"])
                diff_ids.append(layer["diff_id"])
            for chain_id in chain_ids(diff_ids):
                snapshot = self._snapshot_of_chain(chain_id)
                if snapshot:
                    keep.add(snapshot)
        return keep

    # ------------------------------------------------------------ layers

    def layer_for_snapshot(
        self, snapshot_id: str, compression: str = "gzip", level: int | None = None, *, mtime: int | None = None
    ) -> Layer:
        """The compressed layer of one snapshot, made once per compression and reused."""
        kind = Compression.parse(compression)
        key = SNAPSHOT_RECORD + snapshot_id + (f":mtime={mtime}" if mtime is not None else "")
        record = self.root.index.lookup(key)
        if record is not None:
            blob = record.blobs.get(kind.value)
            if blob is not None and self.root.blobs.has(blob.digest) and record.diff_id:
                return Layer(record.diff_id, blob.digest, blob.size, blob.media_type)
        from pybuild.cache import BlobRef, CacheRecord

        tree = self.root.snapshots.tree(snapshot_id)
        with self.root.blobs.writer() as writer:
            blob = compress_layer(tree, kind, level, writer, mtime=mtime)
            writer.commit()
        if record is None:
            self.root.index.record(key, CacheRecord(snapshot_id=snapshot_id, diff_id=blob.diff_id))
        else:
            self.root.index.set_diff_id(key, blob.diff_id)
        self.root.index.add_blob(key, kind.value, BlobRef(blob.digest, blob.size, blob.media_type))
        self.root.index.record(
            CHAIN_RECORD + "size:" + blob.diff_id,
            CacheRecord(snapshot_id=None, meta={"size": str(blob.uncompressed_size)}),
        )
        return Layer(blob.diff_id, blob.digest, blob.size, blob.media_type)

    def remember_chain(self, diff_ids: Sequence[str], snapshots: Sequence[str]) -> None:
        """Record that these snapshots (bottom first) are the layers with these diffIDs."""
        from pybuild.cache import CacheRecord

        for chain_id, snapshot in zip(chain_ids(diff_ids), snapshots, strict=True):
            if self._snapshot_of_chain(chain_id) is None:
                self.root.index.record(CHAIN_RECORD + chain_id, CacheRecord(snapshot_id=snapshot))

    def _snapshot_of_chain(self, chain_id: str) -> str | None:
        record = self.root.index.lookup(CHAIN_RECORD + chain_id)
        if record is not None and record.snapshot_id and self.root.snapshots.exists(record.snapshot_id):
            return record.snapshot_id
        hex_id = chain_id.split(":", 1)[1]
        return hex_id if self.root.snapshots.exists(hex_id) else None

    def snapshots_for(self, image: StoredImage) -> tuple[str, ...]:
        """The image's layers as snapshots, top first, unpacking any that are missing."""
        diff_ids = [l.diff_id for l in image.layers]
        config_diff_ids = list((image.config.get("rootfs") or {}).get("diff_ids") or [])
        if config_diff_ids and config_diff_ids != diff_ids:
            raise ImageError(f"image {image.short_id}: layers and config diff_ids disagree", hint="pull the image again")
        chain: list[str] = []
        parent: str | None = None
        for layer, chain_id in zip(image.layers, chain_ids(diff_ids)):
            snapshot = self._snapshot_of_chain(chain_id)
            if snapshot is None:
                snapshot = self._unpack(layer, chain_id, parent)
            chain.append(snapshot)
            parent = snapshot
        return tuple(reversed(chain))

    def _unpack(self, layer: Layer, chain_id: str, parent: str | None) -> str:
        with self._locks_guard:
            lock = self._unpack_locks.setdefault(chain_id, threading.Lock())
        with lock:
            existing = self._snapshot_of_chain(chain_id)
            if existing is not None:
                return existing
            active = self.root.snapshots.new_active()
            try:
                with self.root.blobs.open(layer.digest, verify=True) as stream:
                    stats = apply_layer(stream, Path(active.upper))
                if stats.diff_id and stats.diff_id != layer.diff_id:
                    raise ImageError(
                        f"layer {layer.digest} unpacks to {stats.diff_id}, but the image config says {layer.diff_id}",
                        hint="the image is corrupt; pull it again",
                    )
            except BaseException:
                self.root.snapshots.discard(active)
                raise
            return self.root.snapshots.commit(active, parent, snapshot_id=chain_id.split(":", 1)[1])

    # ------------------------------------------------------------ import

    def import_tarball(self, stream: BinaryIO, tags: Iterable[str] = (), *, message: str = "Imported from -",
                       architecture: str = "amd64", os_name: str = "linux", changes: Mapping[str, Any] | None = None) -> StoredImage:
        """``docker import``: a root filesystem tar (any compression) becomes a one-layer image."""
        active = self.root.snapshots.new_active()
        try:
            apply_layer(stream, Path(active.upper))
        except BaseException:
            self.root.snapshots.discard(active)
            raise
        snapshot = self.root.snapshots.commit(active, None)
        layer = self.layer_for_snapshot(snapshot)
        self.remember_chain([layer.diff_id], [snapshot])
        now = rfc3339(time.time())
        config = {
            "architecture": architecture,
            "os": os_name,
            "comment": message,
            "config": dict(changes or {}),
            "created": now,
            "history": [{"created": now, "comment": message}],
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        }
        return self.add_image(config, [layer], tags)
