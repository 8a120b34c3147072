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

On top of that the store keeps what Docker's image commands show: repo
digests (``name@sha256:...`` references a pull or push pinned), the size
of each layer as Docker records it -- which depends on how the layer came:
one a build made (or a remote cache gave it) weighs its regular files'
bytes, hard links once, as BuildKit registers it; one unpacked from a tar
(pull, load, import, commit) also its symlinks' target lengths, as
overlay2's ApplyDiff sizes it -- and where a pulled layer came from (so a
push to another repository of that registry mounts it instead of
uploading it).  ``delete`` follows ``docker rmi``'s rules.

Several platforms under one tag are an image index (``StoredIndex``), kept
as containerd's image store keeps one: the index blob, a record naming each
platform's image (each an image of its own, untagged but kept by the index),
and the tag pointing at the index digest.  ``get``/``lookup`` resolve it to
a platform's image; ``delete`` of its last name removes it with the images
nothing else uses.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from pybuild._frozen import frozen
from pybuild.errors import CorruptContent, ImageError, NotFound, PybuildError, StoreError

from ._compression import ByteSink, Compression, compress_layer, compress_stream, layer_media_type, open_decompressed
from ._formats import (
    MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    Descriptor,
    canonical_json,
    index_document,
    rfc3339,
    sha256_digest,
)
from ._platforms import config_platform, host_platform, pick_platform, platform_key
from ._reference import Reference, parse_reference
from ._budget import unpack_limit
from ._tar_apply import apply_layer
from ._tar_format import REGULAR, TarReader

if TYPE_CHECKING:
    from pybuild.cache import ActiveSnapshot, BlobRef, CacheRecord, Lease, Root, Snapshotter

SNAPSHOT_RECORD = "snapshot:"  # cache-index records describing a snapshot's layer forms
CHAIN_RECORD = "chain:"  # cache-index records: chain ID -> snapshot
SIZE_RECORD = CHAIN_RECORD + "size:"  # diffID -> {"size": tar bytes, "content": Docker's size}
ORIGIN_RECORD = "origin:"  # blob digest -> {"repos": JSON list of registry/repository it came from}
INDEX_META = "index"  # the key that makes an image record an image index (its meta says which images)


@frozen
class Layer:
    """One layer of an image: its diffID and one stored compressed form."""

    diff_id: str
    digest: str
    size: int
    media_type: str


@frozen
class ResolvedImage:
    """What a build needs of a base image: the pinned digest and the config."""

    ref: str
    manifest_digest: str
    config: Mapping[str, Any]


@frozen
class StoredImage:
    """An image of the store.  In ``ImageStore.images()`` listings ``config``
    holds only a summary: ``created`` and ``config.Labels``."""

    id: str  # the config digest (Docker's image ID)
    manifest_digest: str
    config: Mapping[str, Any] = field(repr=False)
    layers: tuple[Layer, ...] = ()
    created: float = 0.0  # when the store got it
    size: int = 0  # Docker's size: the files of all layers, uncompressed
    tags: tuple[str, ...] = ()  # normalized references, sorted
    repo_digests: tuple[str, ...] = ()  # registry/repository@sha256:..., sorted
    last_tag_time: float = 0.0
    indexes: tuple[str, ...] = ()  # digests of the stored image indexes that list it

    @property
    def short_id(self) -> str:
        return self.id.split(":", 1)[1][:12]

    @property
    def platform(self) -> str:
        """What its config says it runs on: ``linux/arm64``."""
        return config_platform(self.config)

    @property
    def created_at(self) -> float:
        """When the image was made (its config's ``created``), else when it was stored."""
        return parse_rfc3339(str(self.config.get("created") or "")) or self.created

    @property
    def labels(self) -> Mapping[str, str]:
        return (self.config.get("config") or {}).get("Labels") or {}

    @property
    def dangling(self) -> bool:
        """Untagged (``<none>:<none>`` in ``images``), as Docker's ``dangling=true`` filter means it.
        An image an index lists is that index's, not dangling."""
        return not self.tags and not self.indexes


@frozen
class IndexEntry:
    """One platform's image in a stored index."""

    platform: str  # normalized: linux/amd64, linux/arm64, linux/arm/v7
    image: StoredImage
    manifest_digest: str


@frozen
class StoredIndex:
    """An OCI image index of the store: one image per platform under one tag.

    Like containerd's image store, the tag names the index (its digest is
    what ``images`` shows as the ID) and each platform's image is an image
    record of its own, untagged but kept while an index lists it.  A pulled
    index keeps the registry's index blob and lists the platforms pulled.
    """

    digest: str
    media_type: str
    manifests: tuple[IndexEntry, ...]
    tags: tuple[str, ...] = ()  # normalized references, sorted
    created: float = 0.0  # when the store got it
    repo_digests: tuple[str, ...] = ()
    source: str = ""  # registry/repository a pulled index came from; "" if made here

    @property
    def short_id(self) -> str:
        return self.digest.split(":", 1)[1][:12]

    @property
    def id(self) -> str:
        return self.digest

    @property
    def platforms(self) -> tuple[str, ...]:
        return tuple(entry.platform for entry in self.manifests)

    @property
    def created_at(self) -> float:
        """The newest of its images' ``created``, else when it was stored."""
        return max((entry.image.created_at for entry in self.manifests), default=self.created)

    @property
    def labels(self) -> Mapping[str, str]:
        """The labels of its host platform's image (else the first), as Docker's list shows them."""
        host = host_platform()
        entry = next((e for e in self.manifests if e.platform == host), self.manifests[0] if self.manifests else None)
        return entry.image.labels if entry is not None else {}

    @property
    def size(self) -> int:
        """Its images' sizes added up, as Docker's containerd store counts an index."""
        return sum(entry.image.size for entry in self.manifests)

    @property
    def dangling(self) -> bool:
        return not self.tags


@frozen
class Removal:
    """What ``ImageStore.delete`` did, in ``docker rmi``'s order: references
    untagged (familiar form), then the image ID and the chain IDs of layers
    no image uses any more."""

    untagged: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    reclaimed: int = 0  # Docker's size of the layers no image uses any more


def parse_rfc3339(text: str) -> float | None:
    """Seconds since the epoch of an image config time (``2024-01-01T00:00:00.5Z``); None if absent or bad."""
    import datetime
    import re

    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", text.strip())
    if match is None:
        return None
    base, fraction, zone = match.groups()
    try:
        moment = datetime.datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    except ValueError:
        return None
    return moment.timestamp() + (float(fraction) if fraction else 0.0)


class _Discard:
    """A sink that keeps nothing (the layer tar is only hashed)."""

    def write(self, data: bytes) -> int:
        return len(data)


def unpacked_layer_size(tree: Path) -> int:
    """Docker's size of a layer it unpacked (``docker load``, pull, import) into ``tree``.

    The layer store keeps what the graph driver's ApplyDiff returns; overlay2
    with native diff (the default where the kernel allows it) returns the
    applied directory's size (moby daemon/graphdriver/overlay2/overlay.go,
    pkg/directory/directory_unix.go Size): lstat sizes of everything but
    directories, an inode once.  So a symlink weighs its target's length and a
    whiteout (a 0/0 device) nothing.  A layer a build made is sized otherwise
    (``LayerStats.docker_size``).
    """
    linked: set[int] = set()
    total = 0
    stack = [os.fsencode(tree)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                    continue
                if st.st_nlink > 1:
                    if st.st_ino in linked:
                        continue
                    linked.add(st.st_ino)
                total += st.st_size
    return total


def tar_sizes(stream: BinaryIO, budget: int | None) -> tuple[int, int]:
    """A layer blob's plain tar length and its regular files' bytes (Docker's
    size of a layer it built, ``LayerStats.docker_size``), read through without
    unpacking anything."""
    reader = TarReader(open_decompressed(stream), byte_budget=budget)
    content = 0
    while (entry := reader.next()) is not None:
        if entry.typeflag == REGULAR:
            content += entry.size
    reader.drain()
    return reader.position, content


def compression_of(media_type: str) -> Compression:
    """The compression a layer media type says."""
    if media_type.endswith(("+gzip", ".tar.gzip")):
        return Compression.GZIP
    if media_type.endswith("+zstd"):
        return Compression.ZSTD
    if media_type.endswith((".tar", "v1.tar")):
        return Compression.NONE
    raise ImageError(f"unknown layer media type {media_type!r}", hint="pybuild handles tar, gzip and zstd layers")


def oci_media_type(media_type: str) -> str:
    """The OCI twin of a Docker layer media type (same bytes), for an OCI manifest."""
    if media_type.startswith("application/vnd.docker.image.rootfs.diff.tar"):
        return layer_media_type(compression_of(media_type))
    return media_type


class _CompleteSnapshots:
    """``Snapshotter.exists`` for the snapshots of one chain (bottom first): a snapshot is
    complete with its whole parent chain, so the first one of them asked about walks down
    from the top once, and its answer holds for every snapshot on the way (asking for each
    prefix of an n-layer chain walked it n times).  Any other snapshot is asked as before."""

    def __init__(self, snapshots: Snapshotter, chain: Sequence[str]) -> None:
        self.snapshots = snapshots
        self.members = set(chain)
        self.top = chain[-1] if chain else None
        self.known: set[str] = set()

    def __call__(self, snapshot_id: str) -> bool:
        if snapshot_id in self.known:
            return True
        if snapshot_id in self.members and self.top is not None:
            top, self.top = self.top, None  # walked once, complete or not
            if self._walk(top) and snapshot_id in self.known:
                return True
        return self._walk(snapshot_id)

    def _walk(self, snapshot_id: str) -> bool:
        try:
            self.known.update(self.snapshots.chain(snapshot_id))
        except StoreError:
            return False
        return True


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

    def __init__(self, root: Root) -> None:
        self.root = root
        self._unpack_locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    # ------------------------------------------------------------ names

    @staticmethod
    def normalize(name: str) -> str:
        return str(parse_reference(name))

    def resolve_id(self, name_or_id: str) -> str:
        """The image ID a tag, ``name@digest``, full ID or unique ID prefix names.

        As in Docker, a bare word of hex digits is looked up as a repository
        name first and as an ID prefix after; ``sha256:...`` and 64 hex
        digits are always IDs.
        """
        text = name_or_id.strip()
        hex_part = text.removeprefix("sha256:")
        is_hex = 4 <= len(hex_part) <= 64 and all(c in "0123456789abcdef" for c in hex_part)
        if is_hex and (text.startswith("sha256:") or len(hex_part) == 64):
            return self._by_prefix(hex_part, text)
        try:
            ref: Reference | None = parse_reference(text)
        except ImageError:
            if not is_hex:
                raise NotFound(f"no such image: {text}", hint="pybuild images lists the local images") from None
            ref = None
        if ref is not None:
            found = self._by_reference(ref)
            if found is not None:
                return found
        if is_hex:
            return self._by_prefix(hex_part, text)
        assert ref is not None
        raise NotFound(f"no such image: {ref.familiar}", hint="pybuild images lists the local images")

    def _by_prefix(self, hex_part: str, text: str) -> str:
        matches = [r.digest for r in self.root.index.images() if r.digest.split(":", 1)[1].startswith(hex_part)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ImageError(f"{text}: ambiguous image ID prefix ({len(matches)} images match)", hint="give more digits")
        raise NotFound(f"no such image: {text}", hint="pybuild images lists the local images")

    def _by_reference(self, ref: Reference) -> str | None:
        if ref.digest is None:
            return self.root.index.get_tag(str(ref))
        if self._index_record(ref.digest) is not None:
            return ref.digest  # name@digest of an index the store keeps
        # A digest names content, so any image with that manifest (or pulled
        # by that index digest) is the one, whatever name it is stored under.
        for record in self.root.index.images():
            if record.meta.get("manifest") == ref.digest:
                return record.digest
        for record in self.root.index.images():
            if any(d.endswith("@" + ref.digest) for d in record.meta.get("repo_digests", [])):
                return record.digest
        return None

    # ------------------------------------------------------------ reading

    def get(self, name_or_id: str, platform: str | None = None) -> StoredImage:
        """The image a name or ID names; an index's image for ``platform`` (None: the
        host's if the index has it, else the first it has).

        A plain image asked for another ``platform`` than its own is refused, as
        ``docker inspect --platform`` refuses it.
        """
        digest = self.resolve_id(name_or_id)
        record = self._index_record(digest)
        if record is not None:
            return self._platform_image(self._index_of(record), platform, name_or_id)
        image = self.by_id(digest)
        if platform is not None and image.config.get("architecture") and not _serves(image.platform, platform):
            raise ImageError(
                f"image {name_or_id.strip()} was found but its platform ({image.platform}) does not match the specified platform ({platform})",
                hint="leave out --platform, or build or pull the image for that platform",
            )
        return image

    def by_id(self, image_id: str) -> StoredImage:
        record = self.root.index.get_image(image_id)
        if record is None:
            raise NotFound(f"no such image: {image_id}")
        if INDEX_META in record.meta:
            index = self._index_of(record)
            raise ImageError(
                f"{index.short_id} is an image index ({', '.join(index.platforms)}), not one image",
                hint="name one platform's image with --platform",
            )
        tags = [t for t in self.root.index.tags() if t.digest == image_id]
        if not self.root.blobs.has(image_id):
            summary = self._image(record, record.meta.get("config_summary", {}), tags, {})
            raise _damaged(summary, f"its config blob {image_id} is missing from the store")
        config = json.loads(self._read_blob(image_id, "image config"))
        return self._image(record, config, tags, {})

    def images(self) -> list[StoredImage]:
        """Every image, newest first; ``config`` is the summary kept with the record."""
        by_image: dict[str, list[Any]] = {}
        for tag in self.root.index.tags():
            by_image.setdefault(tag.digest, []).append(tag)
        sizes: dict[str, int] = {}
        out = [
            self._image(record, record.meta.get("config_summary", {}), by_image.get(record.digest, []), sizes)
            for record in self.root.index.images()
            if INDEX_META not in record.meta
        ]
        return sorted(out, key=lambda image: (image.created_at, image.created, image.id), reverse=True)

    def _image(self, record: Any, config: Mapping[str, Any], tags: Sequence[Any], sizes: dict[str, int]) -> StoredImage:
        layers = tuple(Layer(**layer) for layer in record.meta.get("layers", []))
        size = sum(self._layer_size(layer, sizes) for layer in layers)
        return StoredImage(
            record.digest, record.meta["manifest"], config, layers, record.created, size,
            tuple(sorted(t.name for t in tags)), tuple(sorted(record.meta.get("repo_digests", []))),
            max((t.updated for t in tags), default=0.0), tuple(record.meta.get("indexes", [])),
        )

    def lookup(self, ref: str, platform: object = None) -> ResolvedImage | None:
        """The image a normalized reference names, if it is in the store: for an
        index, its image for ``platform`` (``linux/arm64``, or anything whose
        str() is that; None: the host's if it has it, else the first).

        A pulled index without that platform is None (the build pulls it and
        the pull adds it to the index); one made here names the platforms it has.
        A plain image is used whatever its platform, as BuildKit uses a
        single-platform base (the caller may warn).
        """
        try:
            digest = self.resolve_id(ref)
        except NotFound:
            return None
        record = self._index_record(digest)
        if record is None:
            image = self.by_id(digest)
        else:
            index = self._index_of(record)
            wanted = str(platform) if platform is not None else None
            if index.source and self._pick(index, wanted) is None:
                return None
            image = self._platform_image(index, wanted, ref)
        return ResolvedImage(ref, image.manifest_digest, image.config)

    def image_by_manifest(self, manifest_digest: str) -> StoredImage:
        for record in self.root.index.images():
            if record.meta.get("manifest") == manifest_digest:
                return self.by_id(record.digest)
        raise NotFound(f"no image with manifest {manifest_digest}")

    def manifest_bytes(self, image: StoredImage) -> bytes:
        return self._read_blob(image.manifest_digest, "image manifest")

    def config_bytes(self, image: StoredImage) -> bytes:
        return self._read_blob(image.id, "image config")

    def _read_blob(self, digest: str, what: str) -> bytes:
        if not self.root.blobs.has(digest):
            raise ImageError(f"{what} {digest} is missing from the store", hint="pull or build the image again")
        with self.root.blobs.open(digest, verify=True) as f:
            return f.read()

    # ------------------------------------------------------------ sizes

    def layer_sizes(self, image: StoredImage) -> list[int]:
        """Each layer's size as Docker reports it (bottom first)."""
        sizes: dict[str, int] = {}
        return [self._layer_size(layer, sizes) for layer in image.layers]

    def _layer_size(self, layer: Layer, cache: dict[str, int]) -> int:
        if layer.diff_id not in cache:
            record = self.root.index.lookup(SIZE_RECORD + layer.diff_id)
            meta = record.meta if record is not None else {}
            # Docker's measure if known, else the tar's length, else the blob's.
            cache[layer.diff_id] = int(meta.get("content") or meta.get("size") or layer.size)
        return cache[layer.diff_id]

    def size_as_built(self, layer: Layer) -> None:
        """Remember Docker's size of a stored blob that stands for a build step's
        result (a remote cache's layer, adopted without unpacking it): as
        BuildKit sizes a layer it built, no symlink targets.  One read of the
        blob, only while its diffID has no size; a blob that is not a readable
        tar keeps none (the blob's length stands in, as before)."""
        if self.root.index.lookup(SIZE_RECORD + layer.diff_id) is not None:
            return
        try:
            with self.root.blobs.open(layer.digest, verify=False) as raw:  # the fetch checked its digest
                tar_size, content = tar_sizes(raw, unpack_limit(layer.size))
        except (PybuildError, OSError):
            return
        self._remember_size(layer.diff_id, tar_size, content)

    def _remember_size(self, diff_id: str, tar_size: int, content_size: int) -> None:
        from pybuild.cache import CacheRecord

        meta = {"size": str(tar_size), "content": str(content_size)}
        self.root.index.record(SIZE_RECORD + diff_id, CacheRecord(snapshot_id=None, meta=meta))

    # ------------------------------------------------------------ writing

    def add_image(self, config: Mapping[str, Any], layers: Sequence[Layer], tags: Iterable[str] = ()) -> StoredImage:
        """Store an image (config + OCI manifest) and point ``tags`` at it."""
        layers = [replace(l, media_type=oci_media_type(l.media_type)) for l in layers]
        config_bytes = canonical_json(dict(config))
        image_id = sha256_digest(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_OCI_MANIFEST,
            "config": {"mediaType": MEDIA_TYPE_OCI_CONFIG, "digest": image_id, "size": len(config_bytes)},
            "layers": [{"mediaType": l.media_type, "digest": l.digest, "size": l.size} for l in layers],
        }
        manifest_bytes = canonical_json(manifest)
        # leased before they are stored: a prune between storing and registering keeps them
        with self.root.index.lease([image_id, sha256_digest(manifest_bytes), *(l.digest for l in layers)]):
            self.root.blobs.put(config_bytes)
            manifest_digest = self.root.blobs.put(manifest_bytes)
            return self.register(image_id, manifest_digest, config, layers, tags)

    def relink(self, image_ids: Iterable[str]) -> None:
        """Link the layers of images restored from their records (a rebuilt index)
        to the snapshots they had, where those are still whole."""
        for image_id in image_ids:
            record = self.root.index.get_image(image_id)
            if record is None:
                continue
            diff_ids = [layer["diff_id"] for layer in record.meta.get("layers", [])]
            snapshots = record.meta.get("snapshots") or []
            for chain_id, snapshot in zip(chain_ids(diff_ids), snapshots):
                if snapshot and self._snapshot_of_chain(chain_id) is None and self.root.snapshots.exists(snapshot):
                    from pybuild.cache import CacheRecord

                    self.root.index.record(CHAIN_RECORD + chain_id, CacheRecord(snapshot_id=snapshot))

    RECOVERABLE_MANIFEST_SIZE = 1 << 20

    def recover_from_blobs(self) -> tuple[list[StoredImage], int]:
        """Register again, untagged, every image whose manifest, config and layer
        blobs are all in the content store (for an index rebuilt with no image
        records to restore from).  Returns those images and how many manifests
        named blobs that are gone."""
        found: list[StoredImage] = []
        incomplete = 0
        for digest, size in list(self.root.blobs.list()):
            if size > self.RECOVERABLE_MANIFEST_SIZE:
                continue
            manifest = self._manifest_blob(digest)
            if manifest is None:
                continue
            config_digest = manifest["config"]["digest"]
            layers = manifest["layers"]
            if not all(self.root.blobs.has(d) for d in (config_digest, *(l["digest"] for l in layers))):
                incomplete += 1
                continue
            try:
                config = json.loads(self._read_blob(config_digest, "image config"))
                diff_ids = list(config["rootfs"]["diff_ids"])
                stored = [Layer(d, l["digest"], l["size"], l["mediaType"]) for d, l in zip(diff_ids, layers, strict=True)]
            except (ValueError, KeyError, TypeError, CorruptContent):
                incomplete += 1
                continue
            if self.root.index.get_image(config_digest) is None:
                found.append(self.register(config_digest, digest, config, stored))
        return found, incomplete

    def _manifest_blob(self, digest: str) -> dict[str, Any] | None:
        """The blob as an image manifest, if it is one."""
        from ._formats import MANIFEST_MEDIA_TYPES

        try:
            with self.root.blobs.open(digest) as f:
                head = f.read(1)
                if head != b"{":
                    return None
                value = json.loads(head + f.read())
        except (OSError, ValueError, NotFound):
            return None
        if not isinstance(value, dict) or value.get("schemaVersion") != 2:
            return None
        config, layers = value.get("config"), value.get("layers")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str) or not isinstance(layers, list):
            return None
        if value.get("mediaType", MEDIA_TYPE_OCI_MANIFEST) not in MANIFEST_MEDIA_TYPES or "manifests" in value:
            return None
        if not all(isinstance(l, dict) and isinstance(l.get("digest"), str) for l in layers):
            return None
        return value

    def damaged(self) -> list[tuple[StoredImage, list[str]]]:
        """Images whose config, manifest or layers are neither stored as blobs nor as snapshots."""
        out = []
        for image in self.images():
            missing = self.missing_blobs(image)
            if missing:
                out.append((image, missing))
        return out

    def missing_blobs(self, image: StoredImage) -> list[str]:
        """The image's config, manifest and layer blobs that are not stored.

        Layers stored only as snapshots (built ones, named by reference) count
        as present: a blob is made from the snapshot when one is needed.
        """
        missing = [d for d in (image.id, image.manifest_digest) if not self.root.blobs.has(d)]
        for layer, chain_id in zip(image.layers, chain_ids([l.diff_id for l in image.layers])):
            if not self.root.blobs.has(layer.digest) and self._snapshot_of_chain(chain_id) is None:
                missing.append(layer.digest)
        return missing

    def register(
        self, image_id: str, manifest_digest: str, config: Mapping[str, Any], layers: Sequence[Layer],
        tags: Iterable[str] = (), repo_digests: Iterable[str] = (),
    ) -> StoredImage:
        """Record an image whose config and manifest blobs are stored; tag it."""
        sizes: dict[str, int] = {}
        size = sum(self._layer_size(l, sizes) for l in layers)
        existing = self.root.index.get_image(image_id)
        previous_digests = list(existing.meta.get("repo_digests", [])) if existing else []
        meta: dict[str, Any] = {
            "manifest": manifest_digest,
            "layers": [vars(l) for l in layers],
            "config_summary": {"config": {"Labels": (config.get("config") or {}).get("Labels") or {}}, "created": config.get("created", "")},
            "repo_digests": sorted(set(previous_digests) | set(repo_digests)),
            # the layers' snapshots, so an index rebuilt from the image records finds them (relink)
            "snapshots": [self._snapshot_of_chain(c) for c in chain_ids([l.diff_id for l in layers])],
        }
        if existing is not None and existing.meta.get("indexes"):
            meta["indexes"] = existing.meta["indexes"]  # registered again, still listed by its indexes
        created = existing.created if existing else time.time()
        self.root.index.put_image(image_id, created=created, size=size, meta=meta)
        for tag in tags:
            self.tag(image_id, tag)
        return self.by_id(image_id)

    def tag(self, image_id: str, name: str) -> str | None:
        """Point ``name`` at the image; returns the image the tag left (now maybe dangling)."""
        ref = parse_reference(name)
        if ref.digest is not None:
            raise ImageError(f"refusing to create a tag with a digest reference: {name}", hint="tags look like NAME[:TAG]")
        previous = self.root.index.set_tag(str(ref), image_id)
        return previous if previous != image_id else None

    def untag(self, name: str) -> str | None:
        return self.root.index.delete_tag(self.normalize(name))

    def add_repo_digest(self, image_id: str, reference: str) -> None:
        """Remember that ``registry/repository@digest`` names this image (after a pull or push)."""
        self._edit_meta(image_id, lambda meta: meta.update(repo_digests=sorted(set(meta.get("repo_digests", [])) | {reference})))

    def _remove_repo_digest(self, image_id: str, reference: str) -> None:
        self._edit_meta(image_id, lambda meta: meta.update(repo_digests=[d for d in meta.get("repo_digests", []) if d != reference]))

    def _edit_meta(self, image_id: str, change: Any) -> None:
        record = self.root.index.get_image(image_id)
        if record is None:
            raise NotFound(f"no such image: {image_id}")
        meta = dict(record.meta)
        change(meta)
        self.root.index.put_image(image_id, created=record.created, size=record.size, meta=meta)

    def remove(self, image_id: str) -> None:
        """Forget an image record (its blobs and snapshots go at the next prune)."""
        for tag in self.root.index.tags():
            if tag.digest == image_id:
                self.root.index.delete_tag(tag.name)
        self.root.index.delete_image(image_id)

    def delete(self, name_or_id: str, *, force: bool = False, users: Mapping[str, Sequence[tuple[str, bool]]] | None = None) -> Removal:
        """``docker rmi``: untag a name, and delete the image when nothing names it any more.

        A name removes that reference only (and, when it was the repository's
        last tag, the repository's digest references).  An ID (or prefix)
        deletes the image with its references if they are one tag (plus
        digests of that repository); more need ``force``.  Layers that other
        images use stay; the chain IDs of those that no image uses are
        reported as deleted (their data stays as build cache until prune).

        ``users`` (image ID -> (container ID, running?)) are the containers
        made from images, as Docker counts them: an image a running container
        uses is never deleted (its last name goes only with ``force``), one a
        stopped container uses only with ``force``.
        """
        image_id = self.resolve_id(name_or_id)
        text = name_or_id.strip()
        by_id = image_id.startswith(text) or image_id.startswith("sha256:" + text)
        index_record = self._index_record(image_id)
        if index_record is not None:
            return self._delete_index(self._index_of(index_record), text, by_id, force, users or {})
        image = self.by_id(image_id)
        if by_id and image.indexes and not image.tags and not force:
            raise ImageError(
                f"conflict: unable to delete {image.short_id} (must be forced) - it is the {image.platform} image of index {image.indexes[0].split(':', 1)[1][:12]}",
                hint="remove the index (pybuild rmi NAME), or use -f",
            )
        untagged: list[str] = []
        tags = [parse_reference(t) for t in image.tags]
        digests = [parse_reference(d) for d in image.repo_digests]
        containers = list((users or {}).get(image_id, ()))
        running = next((cid for cid, alive in containers if alive), None)
        if by_id and running is not None:
            raise ImageError(
                f"conflict: unable to delete {image.short_id} (cannot be forced) - image is being used by running container {running[:12]}",
                hint="stop and remove the container first",
            )
        if by_id and containers and not force:
            raise ImageError(
                f"conflict: unable to delete {image.short_id} (must be forced) - image is being used by stopped container {containers[0][0][:12]}",
                hint="remove the container first, or use -f",
            )
        if not by_id and containers and self._last_reference(text, tags, digests):
            if not force:
                raise ImageError(
                    f'conflict: unable to remove repository reference "{text}" (must force) - container {containers[0][0][:12]} is using its referenced image {image.short_id}',
                    hint="remove the container first, or use -f",
                )
            if running is not None:  # untagged, but kept for the running container
                self.root.index.delete_tag(str(parse_reference(text)))
                return Removal((parse_reference(text).familiar,))
        if not by_id:
            ref = parse_reference(text)
            if ref.digest is not None:
                exact = f"{ref.name}@{ref.digest}"
                if exact in image.repo_digests:
                    self._remove_repo_digest(image_id, exact)
                    untagged.append(ref.with_tag(None).familiar)
                    digests = [d for d in digests if str(d) != exact]
                else:
                    by_id = True  # named by its manifest digest: like an ID
            else:
                self.root.index.delete_tag(str(ref))
                untagged.append(ref.familiar)
                tags = [t for t in tags if str(t) != str(ref)]
                if not any(t.name == ref.name for t in tags):
                    for digest in [d for d in digests if d.name == ref.name]:
                        self._remove_repo_digest(image_id, str(digest))
                        untagged.append(digest.familiar)
                    digests = [d for d in digests if d.name != ref.name]
            if not by_id and (tags or digests):
                return Removal(tuple(untagged))
        if by_id and not _single_reference(tags, digests) and (tags or digests) and not force:
            raise ImageError(
                f"conflict: unable to delete {image.short_id} (must be forced) - image is referenced in multiple repositories",
                hint="remove the tags one by one, or use -f",
            )
        for ref in tags:
            self.root.index.delete_tag(str(ref))
            untagged.append(ref.familiar)
        untagged += [d.familiar for d in digests]
        still_used: set[str] = set()
        for record in self.root.index.images():
            if record.digest != image_id:
                still_used.update(chain_ids([l["diff_id"] for l in record.meta.get("layers", [])]))
        self.root.index.delete_image(image_id)
        sizes: dict[str, int] = {}
        gone = [
            (chain_id, layer)
            for chain_id, layer in zip(chain_ids([l.diff_id for l in image.layers]), image.layers)
            if chain_id not in still_used
        ]
        gone.reverse()  # Docker releases the top layer first
        return Removal(
            tuple(untagged),
            (image_id, *(chain_id for chain_id, _ in gone)),
            sum(self._layer_size(layer, sizes) for chain_id, layer in {c: l for c, l in gone}.items()),
        )

    # ------------------------------------------------------------ indexes

    def add_index(self, images: Sequence[StoredImage], tags: Iterable[str] = ()) -> StoredIndex:
        """Store an OCI image index of ``images`` (one per platform, in the order
        given, each platform from its config) and point ``tags`` at it.

        The images stay as they are (untagged, kept while the index lists them);
        the index is a blob like a manifest, so pushing and exporting it send
        exactly these bytes.
        """
        entries: list[tuple[str, str, str]] = []
        descriptors: list[tuple[str, Descriptor]] = []
        for image in images:
            if not image.config.get("os") or not image.config.get("architecture"):
                raise ImageError(f"image {image.short_id} has no os/architecture in its config", hint="an index names each image's platform")
            platform = image.platform
            if any(platform == other for other, _, _ in entries):
                raise ImageError(f"two images for {platform} in one index", hint="give each platform one image")
            manifest = self.manifest_bytes(image)
            media_type = json.loads(manifest).get("mediaType") or MEDIA_TYPE_OCI_MANIFEST
            descriptors.append((platform, Descriptor(media_type, image.manifest_digest, len(manifest))))
            entries.append((platform, image.id, image.manifest_digest))
        if not entries:
            raise ImageError("an image index needs at least one image")
        data = index_document(descriptors)
        with self.root.index.lease([sha256_digest(data)]):
            digest = self.root.blobs.put(data)
            return self.register_index(digest, MEDIA_TYPE_OCI_INDEX, entries, tags)

    def register_index(
        self, digest: str, media_type: str, entries: Sequence[tuple[str, str, str]], tags: Iterable[str] = (),
        *, source: str = "", repo_digests: Iterable[str] = (),
    ) -> StoredIndex:
        """Record an index whose blob is stored: ``entries`` are (platform, image ID,
        manifest digest) of the images it has here.  A pulled one (``source``, the
        registry/repository) adds to the platforms it had."""
        existing = self._index_record(digest)
        listed: dict[str, tuple[str, str]] = {}
        if existing is not None:
            listed = {e["platform"]: (e["image"], e["manifest"]) for e in existing.meta[INDEX_META]["manifests"]}
        for platform, image_id, manifest_digest in entries:
            listed[platform] = (image_id, manifest_digest)
        previous_digests = list(existing.meta.get("repo_digests", [])) if existing is not None else []
        meta = {
            INDEX_META: {
                "media_type": media_type,
                "manifests": [{"platform": p, "image": i, "manifest": m} for p, (i, m) in listed.items()],
                "source": source or (existing.meta[INDEX_META].get("source", "") if existing is not None else ""),
            },
            "repo_digests": sorted(set(previous_digests) | set(repo_digests)),
        }
        for image_id, _ in listed.values():
            self._edit_meta(image_id, lambda m: m.update(indexes=sorted(set(m.get("indexes", [])) | {digest})))
        created = existing.created if existing is not None else time.time()
        self.root.index.put_image(digest, created=created, size=0, meta=meta)
        for tag in tags:
            self.tag(digest, tag)
        record = self._index_record(digest)
        assert record is not None
        return self._index_of(record)

    def index_has(self, digest: str, manifest_digest: str) -> bool:
        """Whether the stored index ``digest`` has the image of that manifest here."""
        record = self._index_record(digest)
        return record is not None and any(e["manifest"] == manifest_digest for e in record.meta[INDEX_META]["manifests"])

    def index(self, name_or_id: str) -> StoredIndex | None:
        """The index a name or digest names; None when it names a plain image."""
        record = self._index_record(self.resolve_id(name_or_id))
        return self._index_of(record) if record is not None else None

    def indexes(self) -> list[StoredIndex]:
        """Every stored index, newest first."""
        out = [self._index_of(record) for record in self.root.index.images() if INDEX_META in record.meta]
        return sorted(out, key=lambda index: (index.created_at, index.created, index.digest), reverse=True)

    def index_bytes(self, index: StoredIndex) -> bytes:
        return self._read_blob(index.digest, "image index")

    def _index_record(self, digest: str) -> Any:
        record = self.root.index.get_image(digest)
        return record if record is not None and INDEX_META in record.meta else None

    def _index_of(self, record: Any) -> StoredIndex:
        meta = record.meta[INDEX_META]
        tags = sorted(t.name for t in self.root.index.tags() if t.digest == record.digest)
        entries = []
        for entry in meta["manifests"]:
            try:
                image = self.by_id(entry["image"])
            except NotFound:
                continue  # removed on its own (rmi -f of its ID): the other platforms stay usable
            entries.append(IndexEntry(entry["platform"], image, entry["manifest"]))
        return StoredIndex(
            record.digest, meta["media_type"], tuple(entries), tuple(tags), record.created,
            tuple(sorted(record.meta.get("repo_digests", []))), meta.get("source", ""),
        )

    @staticmethod
    def _pick(index: StoredIndex, platform: str | None) -> IndexEntry | None:
        chosen = pick_platform([platform_key(p) for p in index.platforms], platform_key(platform or host_platform()))
        return index.manifests[chosen] if chosen is not None else None

    def _platform_image(self, index: StoredIndex, platform: str | None, name: str) -> StoredImage:
        """The index's image for ``platform``, or an error naming the platforms it has.

        None prefers the host's platform but takes any the store has, as Docker's
        containerd image store does when no platform is asked
        (moby daemon/containerd/platform_matchers.go, matchAllWithPreference).
        """
        entry = self._pick(index, platform)
        if entry is None and platform is None and index.manifests:
            entry = index.manifests[0]
        if entry is not None:
            return entry.image
        has = ", ".join(index.platforms) or "no platform stored"
        raise ImageError(f"{name.strip()} has no image for {platform or host_platform()}: it has {has}", hint="choose one of those with --platform")

    def delete_platform(
        self, name_or_id: str, platform: str, *, force: bool = False, users: Mapping[str, Sequence[tuple[str, bool]]] | None = None,
    ) -> Removal:
        """``docker rmi --platform``: drop one platform's image from an index (the image goes
        too unless something else names it); the index goes with its last platform.  A plain
        image of that platform is removed as ``delete`` removes it."""
        digest = self.resolve_id(name_or_id)
        record = self._index_record(digest)
        if record is None:
            self.get(name_or_id, platform)  # refused when it is another platform's
            return self.delete(name_or_id, force=force, users=users)
        index = self._index_of(record)
        entry = self._pick(index, platform)
        if entry is None:
            raise ImageError(f"{name_or_id.strip()} has no image for {platform}: it has {', '.join(index.platforms)}",
                             hint="choose one of those with --platform")
        if len(index.manifests) == 1:
            return self._delete_index(index, index.digest, True, True, users or {})
        image = entry.image
        containers = list((users or {}).get(image.id, ()))
        if containers and (any(alive for _, alive in containers) or not force):
            raise ImageError(
                f"conflict: unable to remove {platform} of {index.short_id} - image is being used by container {containers[0][0][:12]}",
                hint="remove the container first" + ("" if any(alive for _, alive in containers) else ", or use -f"),
            )
        meta = dict(record.meta)
        meta[INDEX_META] = {**meta[INDEX_META], "manifests": [e for e in meta[INDEX_META]["manifests"] if e["image"] != image.id]}
        self.root.index.put_image(index.digest, created=record.created, size=record.size, meta=meta)
        self._edit_meta(image.id, lambda m: m.update(indexes=[d for d in m.get("indexes", []) if d != index.digest]))
        if self.by_id(image.id).indexes or image.tags:
            return Removal()
        return self.delete(image.id, force=True)

    def _delete_index(
        self, index: StoredIndex, text: str, by_id: bool, force: bool, users: Mapping[str, Sequence[tuple[str, bool]]],
    ) -> Removal:
        """``rmi`` of an index: a name untags it; when no name is left (or by ID)
        the index goes, with each platform's image nothing else names or lists."""
        untagged: list[str] = []
        tags = [parse_reference(t) for t in index.tags]
        if not by_id:
            ref = parse_reference(text)
            if ref.digest is None:
                self.root.index.delete_tag(str(ref))
                untagged.append(ref.familiar)
                tags = [t for t in tags if str(t) != str(ref)]
                if tags:
                    return Removal(tuple(untagged))
        elif len(tags) > 1 and not force:
            raise ImageError(
                f"conflict: unable to delete {index.short_id} (must be forced) - image is referenced in multiple repositories",
                hint="remove the tags one by one, or use -f",
            )
        containers = [c for entry in index.manifests for c in users.get(entry.image.id, ())]
        running = next((cid for cid, alive in containers if alive), None)
        if running is not None or (containers and not force):
            if not by_id and running is not None and force:
                return Removal(tuple(untagged))  # untagged, kept for the running container
            how = "cannot be forced" if running is not None else "must be forced"
            raise ImageError(
                f"conflict: unable to delete {index.short_id} ({how}) - image is being used by "
                f"{'running' if running is not None else 'stopped'} container {(running or containers[0][0])[:12]}",
                hint="stop and remove the container first" + ("" if running is not None else ", or use -f"),
            )
        for ref in tags:
            self.root.index.delete_tag(str(ref))
            untagged.append(ref.familiar)
        untagged += [parse_reference(d).familiar for d in index.repo_digests]
        self.root.index.delete_image(index.digest)
        deleted: list[str] = [index.digest]
        reclaimed = 0
        for entry in index.manifests:
            self._edit_meta(entry.image.id, lambda m: m.update(indexes=[d for d in m.get("indexes", []) if d != index.digest]))
            image = self.by_id(entry.image.id)
            if image.tags or image.indexes:
                continue  # named or listed elsewhere: it stays
            removal = self.delete(image.id, force=True)
            deleted += removal.deleted
            reclaimed += removal.reclaimed
        return Removal(tuple(untagged), tuple(deleted), reclaimed)

    @staticmethod
    def _last_reference(text: str, tags: Sequence[Reference], digests: Sequence[Reference]) -> bool:
        """Whether removing the name ``text`` leaves the image without any name."""
        ref = parse_reference(text)
        if ref.digest is not None:
            return not tags and all(f"{d.name}@{d.digest}" == f"{ref.name}@{ref.digest}" for d in digests)
        others = [t for t in tags if str(t) != str(ref)]
        return not others and all(d.name == ref.name for d in digests)

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

    # ------------------------------------------------------------ origins

    def remember_origin(self, digests: Iterable[str], repository: str) -> None:
        """Blobs that ``repository`` (``registry/path``) has: a later push to
        another repository of that registry can mount them from there."""
        from pybuild.cache import CacheRecord

        for digest in set(digests):
            repos = list(self.origins(digest))
            if repository in repos:
                continue
            repos = [repository, *repos][:8]  # the most recent few are enough
            self.root.index.record(ORIGIN_RECORD + digest, CacheRecord(snapshot_id=None, meta={"repos": json.dumps(repos)}))

    def origins(self, digest: str) -> tuple[str, ...]:
        record = self.root.index.lookup(ORIGIN_RECORD + digest)
        if record is None:
            return ()
        try:
            repos = json.loads(record.meta.get("repos", "[]"))
        except ValueError:
            return ()
        return tuple(r for r in repos if isinstance(r, str))

    # ------------------------------------------------------------ layers

    def layer_for_snapshot(
        self,
        snapshot_id: str,
        compression: str = "gzip",
        level: int | None = None,
        *,
        mtime: int | None = None,
        tee: ByteSink | None = None,
        sized_as_unpacked: bool = False,
    ) -> Layer:
        """The compressed layer of one snapshot, made once per compression and reused.

        A snapshot unpacked from a pulled or loaded layer is never archived
        again: its layer is that blob, so an image built on a base shares the
        base's layers -- same diffIDs, same blobs -- as BuildKit's images do.
        Like BuildKit, such a layer keeps its compression (an export can
        force another); only a plain one is compressed as asked.  A blob made
        here is also written into ``tee`` as it is stored; one found made
        before is not.

        A new layer is sized as BuildKit sizes one it built (no symlink
        targets), or with ``sized_as_unpacked`` as Docker sizes a layer it
        registers from a tar -- ``docker import`` and ``docker commit`` go
        through the layer store's Register and the graph driver's ApplyDiff
        (moby daemon/images/image_import.go, image_commit.go).
        """
        kind = Compression.parse(compression)
        key = SNAPSHOT_RECORD + snapshot_id + (f":mtime={mtime}" if mtime is not None else "")
        record = self._snapshot_record(key, snapshot_id)
        if record is not None:
            stored = record.blobs.get(kind.value)
            # a damaged blob (truncated, bytes changed) is removed here and made again below
            if stored is not None and record.diff_id and self.root.blob_intact(stored.digest, stored.size):
                return Layer(record.diff_id, stored.digest, stored.size, stored.media_type)
        from pybuild.cache import BlobRef, CacheRecord

        if mtime is None and record is not None and record.diff_id:
            original = self._stored_blob(record)
            if original is not None:
                layer = Layer(record.diff_id, original.digest, original.size, original.media_type)
                if record.meta.get("source") == "blob" and compression_of(original.media_type) is not Compression.NONE:
                    return layer  # a base layer keeps its compression (BuildKit's rule; exports may force)
                # recompressing a stored blob costs no walk of the tree and no per-file work
                layer = self.recompress(layer, kind, level, tee=tee)
                self.root.index.add_blob(key, kind.value, BlobRef(layer.digest, layer.size, layer.media_type))
                return layer
        tree = self.root.snapshots.tree(snapshot_id)
        with self.root.blobs.writer() as writer:
            blob = compress_layer(tree, kind, level, writer, mtime=mtime, tee=tee)
            writer.commit()
        if record is None:
            self.root.index.record(key, CacheRecord(snapshot_id=snapshot_id, diff_id=blob.diff_id))
        else:
            self.root.index.set_diff_id(key, blob.diff_id)
        self.root.index.add_blob(key, kind.value, BlobRef(blob.digest, blob.size, blob.media_type))
        assert blob.stats is not None
        size = blob.stats.unpacked_size if sized_as_unpacked else blob.stats.docker_size
        self._remember_size(blob.diff_id, blob.uncompressed_size, size)
        return Layer(blob.diff_id, blob.digest, blob.size, blob.media_type)

    def _snapshot_record(self, key: str, snapshot_id: str) -> CacheRecord | None:
        """The record of a snapshot's layer forms, unless it is older than the snapshot:
        a snapshot lost and made again under its id (its cache key) has a new tar."""
        record = self.root.index.lookup(key)
        if record is None or not record.created:
            return record
        made = self.root.snapshots.created(snapshot_id)
        if made is not None and made > record.created:
            self.root.index.delete_record(key)
            return None
        return record

    def layer_by_reference(self, snapshot_id: str) -> Layer:
        """The snapshot's layer as its plain tar, named by its diffID, without storing a blob.

        A local image needs its layers' diffIDs (its ID is its config's digest)
        and its snapshots; a blob is made when an export or a push asks for
        one (``export_manifest``).  Building then writes a new layer once, into
        its snapshot, as Docker's own image store does -- not a second time as
        a compressed blob.  A layer that already has a blob (a base image's, or
        a gzip blob made by an import, push or cache export) keeps it.
        """
        key = SNAPSHOT_RECORD + snapshot_id
        record = self._snapshot_record(key, snapshot_id)
        if record is not None and record.diff_id:
            if record.meta.get("source") == "blob":
                original = self._stored_blob(record)
                if original is not None:
                    return Layer(record.diff_id, original.digest, original.size, original.media_type)
            else:
                # a layer made before (an import, a push, a cache export) keeps its gzip blob
                made = record.blobs.get(Compression.GZIP.value)
                if made is not None and self.root.blob_intact(made.digest, made.size):
                    return Layer(record.diff_id, made.digest, made.size, made.media_type)
                tar_size = self._tar_size(record.diff_id)
                if tar_size is not None:
                    return Layer(record.diff_id, record.diff_id, tar_size, layer_media_type(Compression.NONE))
        from pybuild.cache import CacheRecord

        tree = self.root.snapshots.tree(snapshot_id)
        blob = compress_layer(tree, Compression.NONE, None, _Discard())
        if record is None:
            self.root.index.record(key, CacheRecord(snapshot_id=snapshot_id, diff_id=blob.diff_id))
        else:
            self.root.index.set_diff_id(key, blob.diff_id)
        assert blob.stats is not None
        self._remember_size(blob.diff_id, blob.uncompressed_size, blob.stats.docker_size)
        return Layer(blob.diff_id, blob.diff_id, blob.uncompressed_size, blob.media_type)

    def _tar_size(self, diff_id: str) -> int | None:
        record = self.root.index.lookup(SIZE_RECORD + diff_id)
        try:
            return int(record.meta["size"]) if record is not None else None
        except (KeyError, ValueError):
            return None

    def materialize(self, layer: Layer, chain_id: str, *, tee: ByteSink | None = None) -> None:
        """Make sure the layer's blob is stored, written into ``tee`` if it is made now.

        Made from the layer's snapshot: a plain blob named by reference
        (``layer_by_reference``), and a blob pybuild compressed from that
        snapshot that is now missing or damaged (``blob_intact`` removes a
        damaged one) -- compressing the same tree again gives the same
        bytes.  A pulled blob cannot be made again; its copy reports it.
        """
        if self.root.blob_intact(layer.digest, layer.size):
            return
        snapshot = self.snapshot_of_chain(chain_id)
        kind = compression_of(layer.media_type)
        plain = layer.digest == layer.diff_id
        if not plain and (snapshot is None or not self._compressed_from(snapshot, layer, kind)):
            return
        if snapshot is None:
            raise ImageError(
                f"layer {layer.diff_id} has neither a blob nor a snapshot in the store",
                hint="build or pull the image again",
            )
        made = self.layer_for_snapshot(snapshot, kind.value, tee=tee)
        if made.digest != layer.digest:
            raise CorruptContent(
                f"layer blob {layer.digest} is missing or damaged, and its snapshot now archives to {made.digest}",
                hint="the snapshot changed or the blob was made at another compression level: build the image again",
            )

    def _compressed_from(self, snapshot_id: str, layer: Layer, kind: Compression) -> bool:
        """Whether pybuild wrote ``layer``'s blob by compressing this snapshot."""
        record = self._snapshot_record(SNAPSHOT_RECORD + snapshot_id, snapshot_id)
        if record is None or record.diff_id != layer.diff_id or record.meta.get("source") == "blob":
            return False
        made = record.blobs.get(kind.value)
        return made is not None and made.digest == layer.digest

    def _stored_blob(self, record: CacheRecord) -> BlobRef | None:
        """An intact blob of the record's layer, a plain one first (cheapest to recompress)."""
        blobs = sorted(record.blobs.values(), key=lambda b: compression_of(b.media_type) is not Compression.NONE)
        return next((b for b in blobs if self.root.blob_intact(b.digest, b.size)), None)

    def recompress(self, layer: Layer, kind: Compression, level: int | None, *, tee: ByteSink | None = None) -> Layer:
        """The same layer tar (same diffID) as a blob compressed with ``kind`` (written into ``tee`` too)."""
        # a plain blob's digest is its diffID: once the blob is verified (blob_intact
        # hashes it once per version of its file) its bytes need no hashing here
        plain = layer.digest == layer.diff_id
        known = layer.diff_id if plain and self.root.blob_intact(layer.digest, layer.size) else None
        with self.root.blobs.open(layer.digest, verify=not plain) as source, self.root.blobs.writer() as writer:
            made = compress_stream(source, kind, level, writer, known_diff_id=known, tee=tee)
            if made.diff_id != layer.diff_id:
                raise CorruptContent(
                    f"layer {layer.digest} decompresses to {made.diff_id}, but the image says {layer.diff_id}",
                    hint="the stored image is damaged; pull or build it again",
                )
            writer.commit()
        return Layer(layer.diff_id, made.digest, made.size, made.media_type)

    def snapshot_layer_diff_id(self, snapshot_id: str) -> str | None:
        """The diffID this snapshot's layer tar has when pybuild writes it (None if never written)."""
        record = self.root.index.lookup(SNAPSHOT_RECORD + snapshot_id)
        return record.diff_id if record is not None else None

    def remember_chain(self, diff_ids: Sequence[str], snapshots: Sequence[str]) -> None:
        """Record that these snapshots (bottom first) are the layers with these diffIDs."""
        from pybuild.cache import CacheRecord

        complete = _CompleteSnapshots(self.root.snapshots, snapshots)
        for chain_id, snapshot in zip(chain_ids(diff_ids), snapshots, strict=True):
            if self._snapshot_of_chain(chain_id, complete) is None:
                self.root.index.record(CHAIN_RECORD + chain_id, CacheRecord(snapshot_id=snapshot))

    def snapshot_of_chain(self, chain_id: str) -> str | None:
        """The snapshot holding the top layer of this chain, if there is one."""
        return self._snapshot_of_chain(chain_id)

    def _snapshot_of_chain(self, chain_id: str, exists: Callable[[str], bool] | None = None) -> str | None:
        exists = exists or self.root.snapshots.exists
        record = self.root.index.lookup(CHAIN_RECORD + chain_id)
        if record is not None and record.snapshot_id and exists(record.snapshot_id):
            return record.snapshot_id
        hex_id = chain_id.split(":", 1)[1]
        return hex_id if exists(hex_id) else None

    def snapshots_for(self, image: StoredImage) -> tuple[str, ...]:
        """The image's layers as snapshots, top first, unpacking any that are missing."""
        diff_ids = [l.diff_id for l in image.layers]
        config_diff_ids = list((image.config.get("rootfs") or {}).get("diff_ids") or [])
        if config_diff_ids and config_diff_ids != diff_ids:
            raise ImageError(f"image {image.short_id}: layers and config diff_ids disagree", hint="pull the image again")
        chain: list[str] = []
        parent: str | None = None
        ids = chain_ids(diff_ids)
        recorded = [r.snapshot_id for r in (self.root.index.lookup(CHAIN_RECORD + c) for c in ids) if r is not None and r.snapshot_id]
        complete = _CompleteSnapshots(self.root.snapshots, recorded)  # the image's chain walked once, from its top
        for layer, chain_id in zip(image.layers, ids):
            snapshot = self._snapshot_of_chain(chain_id, complete)
            if snapshot is None:
                if not self.root.blobs.has(layer.digest):
                    raise _damaged(image, f"layer {layer.digest} has neither a blob nor a snapshot in the store")
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
                    # the verifying reader hides the file's size: the budget is given the blob's
                    stats = apply_layer(stream, Path(active.upper), size_budget=unpack_limit(layer.size))
                if stats.diff_id and stats.diff_id != layer.diff_id:
                    raise ImageError(
                        f"layer {layer.digest} unpacks to {stats.diff_id}, but the image config says {layer.diff_id}",
                        hint="the image is corrupt; pull it again",
                    )
                self._remember_size(layer.diff_id, stats.tar_bytes, unpacked_layer_size(Path(active.upper)))
            except BaseException:
                self.root.snapshots.discard(active)
                raise
            snapshot = self.root.snapshots.commit(active, parent, snapshot_id=chain_id.split(":", 1)[1])
            self.adopt_blob(snapshot, layer)  # builds on top reuse the blob as is
            return snapshot

    def adopt_blob(self, snapshot_id: str, layer: Layer) -> None:
        """The snapshot's layer is this (stored) blob: exported and pushed as is,
        never archived from the snapshot again -- which need not even exist."""
        from pybuild.cache import BlobRef, CacheRecord

        blob = BlobRef(layer.digest, layer.size, layer.media_type)
        self.root.index.record(
            SNAPSHOT_RECORD + snapshot_id,
            CacheRecord(snapshot_id=snapshot_id, diff_id=layer.diff_id, blobs={compression_of(layer.media_type).value: blob}, meta={"source": "blob"}),
        )

    # ------------------------------------------------------------ import

    def import_tarball(self, stream: BinaryIO, tags: Iterable[str] = (), *, message: str = "Imported from -",
                       architecture: str = "amd64", os_name: str = "linux", changes: Mapping[str, Any] | None = None,
                       variant: str = "") -> StoredImage:
        """``docker import``: a root filesystem tar (any compression) becomes a one-layer image
        (``variant`` in its config only when given, so an import without one keeps its ID)."""
        active = self.root.snapshots.new_active()
        try:
            apply_layer(stream, Path(active.upper))
        except BaseException:
            self.root.snapshots.discard(active)
            raise
        with self.root.index.lease() as lease:  # until the image is registered, prune keeps its layer
            snapshot = self.commit_leased(active, None, lease)
            return self._import_image(snapshot, message, architecture, os_name, changes, tags, variant)

    def commit_leased(self, active: ActiveSnapshot, parent: str | None, lease: Lease) -> str:
        """Commit a new snapshot leased before it exists, so a prune before it is
        registered (by a record or an image) leaves it alone."""
        snapshot_id = secrets.token_hex(16)
        lease.add([snapshot_id])
        return self.root.snapshots.commit(active, parent, snapshot_id=snapshot_id)

    def _import_image(self, snapshot: str, message: str, architecture: str, os_name: str,
                      changes: Mapping[str, Any] | None, tags: Iterable[str], variant: str = "") -> StoredImage:
        layer = self.layer_for_snapshot(snapshot, sized_as_unpacked=True)
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
        if variant:
            config["variant"] = variant
        return self.add_image(config, [layer], tags)


def _serves(have: str, want: str) -> bool:
    """Whether an image of platform ``have`` is what ``want`` asks for."""
    return pick_platform([platform_key(have)], platform_key(want)) is not None


def _damaged(image: StoredImage, what: str) -> ImageError:
    """A stored image whose data is gone: named, so the user knows which to bring back."""
    names = ", ".join(parse_reference(t).familiar for t in image.tags) or image.short_id
    return ImageError(f"image {names} is damaged: {what}", hint="pull, load or build it again (`pybuild prune --repair` lists damaged images)")


def _single_reference(tags: Sequence[Reference], digests: Sequence[Reference]) -> bool:
    """Docker's ``isSingleReference``: at most one tag, and digests only of that tag's repository."""
    if len(tags) + len(digests) <= 1:
        return len(tags) + len(digests) == 1
    if len(tags) > 1:
        return False
    names = {d.name for d in digests}
    single = tags[0] if tags else digests[0]
    return len(names) == 1 and single.name in names
