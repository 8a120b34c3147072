"""Image archives: the OCI image layout as a tar, and docker-archive (``docker save``).

Writing takes blobs from a ``BlobSource`` (the content store; ``MemoryBlobSource``
in tests) and the images to put in, by their manifest or index descriptor:

- ``write_oci_archive`` (``OciArchiveWriter``): ``blobs/sha256/<hex>`` for
  every reachable blob, stored as-is (layers first), then ``index.json``
  (one entry per image name, annotated with
  ``org.opencontainers.image.ref.name`` = the tag and
  ``io.containerd.image.name`` = the full name) and ``oci-layout``.  With
  ``docker_compatible`` (the default) it also holds Docker's
  ``manifest.json`` pointing into ``blobs/``,
  so one file loads with ``docker load`` (also before Docker 25, which reads
  only ``manifest.json``), ``skopeo``'s ``oci-archive:`` and ``umoci``.
- ``write_docker_archive``: what ``docker save`` writes and ``docker load``
  and ``skopeo``'s ``docker-archive:`` read -- ``manifest.json`` (Config,
  RepoTags, Layers), ``repositories``, the config as ``<hex>.json`` and each
  layer uncompressed as ``<diffID hex>.tar`` (a compressed blob is
  decompressed through a temporary file and checked against its diffID).
  The legacy per-layer ``VERSION``/``json`` files are not written.

Both are deterministic: entries in a fixed order, mode 0644/0755, owner 0,
mtime 0.  Every blob copied is checked against its descriptor's digest and
size; a mismatch raises ``CorruptContent`` (the caller writes to a temporary
file and renames it only on success).

Reading (``read_archive``) accepts either format (plain or compressed),
indexes the members without extracting anything to disk, verifies every
blob's digest, parses the documents and returns the images with a
``BlobSource`` over the archive.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol, runtime_checkable

from pybuild.errors import CorruptContent, ImageError, NotFound

from ._compression import ByteSource, Compression, detect_compression, layer_media_type, open_decompressed
from ._copy_range import copy_range
from ._formats import (
    ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_REF_NAME,
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    Descriptor,
    ImageConfig,
    ImagePlatform,
    Index,
    Manifest,
    canonical_json,
    check_digest,
    digest_hex,
    parse_image_document,
    sha256_digest,
)
from ._reference import Reference, parse_reference
from ._tar_format import BLOCK, DIRECTORY, END_OF_ARCHIVE, HARDLINK, REGULAR, SYMLINK, TarReader, encode_header, padding

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_BLOB_DIR = "blobs/sha256/"
MAX_DOCUMENT_BYTES = 64 << 20
_COPY_CHUNK = 1 << 20
_SPOOL_BYTES = 64 << 20


# --- blob sources ----------------------------------------------------------


class BlobSource(Protocol):
    """Where archive writers read blobs from (the content store satisfies it)."""

    def open(self, digest: str) -> BinaryIO:
        """A reader of the blob's bytes; ``NotFound`` if there is no such blob."""
        ...


@runtime_checkable
class VerifiedBlobFiles(Protocol):
    """A ``BlobSource`` that can name the file of a blob it has already verified.

    Such a blob is copied by the kernel (``copy_file_range``; an ordinary
    copy across filesystems) instead of being read, hashed and written
    again by Python.
    """

    def verified_path(self, digest: str, size: int) -> str | None:
        """The file holding the blob, if it is known to match ``digest`` and ``size``."""
        ...


class MemoryBlobSource:
    """A dict-backed ``BlobSource`` for tests and small synthesized blobs."""

    def __init__(self, blobs: Mapping[str, bytes] | None = None) -> None:
        self.blobs: dict[str, bytes] = dict(blobs or {})

    def add(self, data: bytes) -> str:
        digest = sha256_digest(data)
        self.blobs[digest] = data
        return digest

    def open(self, digest: str) -> BinaryIO:
        try:
            return io.BytesIO(self.blobs[digest])
        except KeyError:
            raise NotFound(f"blob {digest} not found", hint="the image refers to content that is not stored") from None


def check_blob_source(source: BlobSource, present: Mapping[str, bytes], missing: str) -> None:
    """Conformance check for a ``BlobSource``: ``present`` blobs read back exactly,
    ``missing`` raises ``NotFound``.  Run against the real store and the fake."""
    for digest, data in present.items():
        with source.open(digest) as reader:
            assert reader.read() == data, f"blob {digest} reads back different bytes"
    try:
        source.open(missing)
    except NotFound:
        pass
    else:
        raise AssertionError(f"opening missing blob {missing} did not raise NotFound")


# --- writing ---------------------------------------------------------------


@dataclass(frozen=True)
class ArchiveImage:
    """An image to archive: its manifest or index descriptor and its names
    (references such as ``app:1`` or ``localhost:5000/app:1``)."""

    descriptor: Descriptor
    names: tuple[str, ...] = ()


class _TarOut:
    """Deterministic tar members into ``out``."""

    def __init__(self, out: BinaryIO, mtime: int) -> None:
        self._out = out
        self._mtime = mtime
        self._dirs: set[str] = set()

    def parents(self, name: str) -> None:
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in self._dirs:
                self._dirs.add(directory)
                self._out.write(encode_header(directory.encode() + b"/", DIRECTORY, mode=0o755, mtime=self._mtime))

    def header(self, name: str, size: int) -> bytes:
        return encode_header(name.encode(), REGULAR, mode=0o644, size=size, mtime=self._mtime)

    def file(self, name: str, data: bytes) -> None:
        self.parents(name)
        self._out.write(self.header(name, len(data)))
        self._out.write(data)
        self._out.write(b"\0" * padding(len(data)))

    def stream(self, name: str, reader: BinaryIO, size: int, digest: str | None) -> None:
        """Copy exactly ``size`` bytes; check them against ``digest`` if given."""
        self.parents(name)
        self._out.write(self.header(name, size))
        hasher = hashlib.sha256()
        left = size
        while left:
            chunk = reader.read(min(left, _COPY_CHUNK))
            if not chunk:
                break
            hasher.update(chunk)
            self._out.write(chunk)
            left -= len(chunk)
        if left or reader.read(1):
            raise CorruptContent(
                f"blob {digest or name} is not {size} bytes long",
                hint="the content store is damaged; remove the image and pull or build it again",
            )
        if digest is not None and "sha256:" + hasher.hexdigest() != digest:
            raise CorruptContent(
                f"blob {digest} does not match its digest",
                hint="the content store is damaged; remove the image and pull or build it again",
            )
        self._out.write(b"\0" * padding(size))

    def copy_verified(self, name: str, path: str, size: int) -> bool:
        """Copy a verified blob file in the kernel; False (nothing written) if ``out`` is not a file."""
        out = self._out
        try:
            out_fd = out.fileno()
            regular = stat.S_ISREG(os.fstat(out_fd).st_mode) and out.seekable()
        except (OSError, AttributeError, io.UnsupportedOperation):
            regular = False
        if not regular:
            return False
        self.parents(name)
        out.write(self.header(name, size))
        out.flush()
        start = out.tell()
        with open(path, "rb", buffering=0) as blob:
            if os.fstat(blob.fileno()).st_size != size:
                raise CorruptContent(
                    f"blob {name} is not {size} bytes long",
                    hint="the content store is damaged; remove the image and pull or build it again",
                )
            if copy_range(blob.fileno(), out_fd, size, 0, start) < size:
                raise CorruptContent(
                    f"blob {name} ended early",
                    hint="the content store is damaged; remove the image and pull or build it again",
                )
        out.seek(start + size)
        out.write(b"\0" * padding(size))
        return True

    def close(self) -> None:
        self._out.write(END_OF_ARCHIVE)


def _read_document(source: BlobSource, descriptor: Descriptor) -> bytes:
    if descriptor.size > MAX_DOCUMENT_BYTES:
        raise ImageError(f"{descriptor.media_type} {descriptor.digest} is too large ({descriptor.size} bytes)")
    with source.open(descriptor.digest) as reader:
        data = reader.read(descriptor.size + 1)
    if len(data) != descriptor.size or sha256_digest(data) != descriptor.digest:
        raise CorruptContent(
            f"blob {descriptor.digest} does not match its descriptor",
            hint="the content store is damaged; remove the image and pull or build it again",
        )
    return data


def _pick_manifest(index: Index, digest: str, platform: ImagePlatform | None) -> Descriptor:
    candidates = [d for d in index.manifests if d.media_type in MANIFEST_MEDIA_TYPES]
    if platform is not None:
        candidates = [
            d
            for d in candidates
            if d.platform is not None
            and (d.platform.os, d.platform.architecture) == (platform.os, platform.architecture)
            and (not platform.variant or d.platform.variant == platform.variant)
        ]
    if not candidates:
        raise NotFound(
            f"image index {digest} has no manifest" + (f" for {platform}" if platform else ""),
            hint="choose a platform the image was built for",
        )
    return candidates[0]


def _resolve(
    source: BlobSource, descriptor: Descriptor, platform: ImagePlatform | None
) -> tuple[Descriptor, Manifest, bytes, ImageConfig]:
    """The single-platform manifest, its bytes' config, for an image descriptor."""
    if descriptor.media_type in INDEX_MEDIA_TYPES:
        index = Index.from_json(_read_document(source, descriptor), descriptor.media_type)
        descriptor = _pick_manifest(index, descriptor.digest, platform)
    manifest = Manifest.from_json(_read_document(source, descriptor), descriptor.media_type)
    config_bytes = _read_document(source, manifest.config)
    return descriptor, manifest, config_bytes, ImageConfig.from_json(config_bytes)


def _blob_closure(source: BlobSource, descriptor: Descriptor) -> tuple[list[Descriptor], list[Descriptor]]:
    """Every blob an image descriptor reaches: its documents (indexes,
    manifests, configs; parents first) and its layers, in manifest order."""
    documents = [descriptor]
    layers: list[Descriptor] = []
    if descriptor.media_type in INDEX_MEDIA_TYPES:
        index = Index.from_json(_read_document(source, descriptor), descriptor.media_type)
        for child in index.manifests:
            if child.media_type in INDEX_MEDIA_TYPES or child.media_type in MANIFEST_MEDIA_TYPES:
                child_documents, child_layers = _blob_closure(source, child)
                documents += child_documents
                layers += child_layers
    elif descriptor.media_type in MANIFEST_MEDIA_TYPES:
        manifest = Manifest.from_json(_read_document(source, descriptor), descriptor.media_type)
        documents.append(manifest.config)
        layers += manifest.layers
    return documents, layers


def _names(image: ArchiveImage) -> list[Reference]:
    return [parse_reference(name) for name in image.names]


class PendingBlob:
    """An archive member whose bytes come before its name and size are known.

    A zeroed header block is written first; ``OciArchiveWriter.add_blob``
    fills it in once the blob's digest is known (the blob is being made
    while it is written here), or removes the member.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.header_at = out.tell()
        self.size = 0
        out.write(b"\0" * BLOCK)

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.size += len(data)
        return len(data)

    def restart(self) -> None:
        """Forget the bytes written so far."""
        self._truncate_at(self.header_at + BLOCK)
        self.size = 0

    def remove(self) -> None:
        """Take the member, placeholder and all, out of the archive."""
        self._truncate_at(self.header_at)

    def _truncate_at(self, offset: int) -> None:
        self._out.seek(offset)
        self._out.truncate()


class OciArchiveWriter:
    """An OCI image layout tar, written blobs first.

    Order: every layer blob (image by image, in manifest order), the
    documents (indexes, manifests, configs), then ``index.json``,
    ``manifest.json`` and ``oci-layout`` -- blobs before those files, as in
    containerd's exporter (whose entries sort by name).  Layers come first so that an
    export can write a layer into the archive while it is compressing and
    storing it (``pending_blob``), instead of copying it afterwards; an
    archive written either way has the same bytes.
    """

    def __init__(self, out: BinaryIO, *, mtime: int = 0, can_seek_back: bool = False) -> None:
        """``can_seek_back``: ``out`` is a file this writer may seek in and truncate."""
        self._out = out
        self._tar = _TarOut(out, mtime)
        self._can_seek_back = can_seek_back
        self._written: set[str] = set()
        self._pending: PendingBlob | None = None

    def pending_blob(self) -> PendingBlob | None:
        """A member to write the next blob into before its digest is known
        (None when ``out`` cannot be patched).  ``add_blob`` ends it."""
        if self._pending is not None:
            raise RuntimeError("a pending blob is already open")
        if not self._can_seek_back:
            return None
        self._tar.parents(_BLOB_DIR)
        self._pending = PendingBlob(self._out)
        return self._pending

    def add_blob(self, source: BlobSource, blob: Descriptor) -> None:
        """The next blob: the pending member, if it received ``blob.size``
        bytes (the caller vouches they are ``blob``'s), else a copy from ``source``."""
        pending, self._pending = self._pending, None
        if blob.digest in self._written:
            if pending is not None:
                pending.remove()
            return
        self._written.add(blob.digest)
        name = _BLOB_DIR + digest_hex(blob.digest)
        if pending is not None:
            if pending.size == blob.size and pending.size and self._fill_in(pending, name):
                return
            pending.remove()
        path = source.verified_path(blob.digest, blob.size) if isinstance(source, VerifiedBlobFiles) else None
        if path is not None and self._tar.copy_verified(name, path, blob.size):
            return
        with source.open(blob.digest) as reader:
            self._tar.stream(name, reader, blob.size, blob.digest)

    def _fill_in(self, pending: PendingBlob, name: str) -> bool:
        header = self._tar.header(name, pending.size)
        if len(header) != BLOCK:
            return False  # a PAX header (a blob of 8 GiB or more) does not fit the placeholder
        out = self._out
        end = out.tell()
        out.seek(pending.header_at)
        out.write(header)
        out.seek(end)
        out.write(b"\0" * padding(pending.size))
        return True

    def finish(
        self,
        source: BlobSource,
        images: Sequence[ArchiveImage],
        *,
        docker_compatible: bool = True,
        platform: ImagePlatform | None = None,
    ) -> Index:
        """The images' remaining blobs, ``index.json``, ``manifest.json`` and
        ``oci-layout``; returns the index."""
        if self._pending is not None:
            raise RuntimeError("a pending blob was never added")
        closures = [_blob_closure(source, image.descriptor) for image in images]
        for _documents, layers in closures:
            for blob in layers:
                self.add_blob(source, blob)
        for documents, _layers in closures:
            for blob in documents:
                self.add_blob(source, blob)
        index, docker_entries = _index_entries(source, images, docker_compatible, platform)
        self._tar.file("index.json", index.to_json())
        if docker_compatible:
            self._tar.file("manifest.json", canonical_json(docker_entries))
        self._tar.file("oci-layout", OCI_LAYOUT)
        self._tar.close()
        return index


def _index_entries(
    source: BlobSource, images: Sequence[ArchiveImage], docker_compatible: bool, platform: ImagePlatform | None
) -> tuple[Index, list[dict[str, Any]]]:  # Any: entries of Docker's manifest.json
    """``index.json`` (one entry per image name) and Docker's ``manifest.json`` entries."""
    entries: list[Descriptor] = []
    docker_entries: list[dict[str, Any]] = []
    for image in images:
        references = _names(image)
        named: Sequence[Reference | None] = references or [None]
        for ref in named:
            annotations: dict[str, str] = {}
            if ref is not None:
                annotations[ANNOTATION_CONTAINERD_NAME] = str(ref)
                if ref.tag:
                    annotations[ANNOTATION_REF_NAME] = ref.tag
            entries.append(
                Descriptor(
                    image.descriptor.media_type,
                    image.descriptor.digest,
                    image.descriptor.size,
                    annotations=tuple(sorted(annotations.items())),
                    platform=image.descriptor.platform,
                )
            )
        if docker_compatible:
            _, manifest, _, _ = _resolve(source, image.descriptor, platform)
            docker_entries.append(
                {
                    "Config": _BLOB_DIR + digest_hex(manifest.config.digest),
                    "RepoTags": [r.familiar for r in references if r.tag and not r.digest],
                    "Layers": [_BLOB_DIR + digest_hex(layer.digest) for layer in manifest.layers],
                }
            )
    return Index(manifests=tuple(entries), media_type=MEDIA_TYPE_OCI_INDEX), docker_entries


def write_oci_archive(
    out: BinaryIO,
    source: BlobSource,
    images: Sequence[ArchiveImage],
    *,
    docker_compatible: bool = True,
    platform: ImagePlatform | None = None,
    mtime: int = 0,
) -> Index:
    """Write an OCI image layout tar of ``images`` into ``out``; returns its ``index.json``.

    ``platform`` chooses which manifest of a multi-platform image Docker's
    ``manifest.json`` names (default: the first); the OCI index keeps all.
    """
    return OciArchiveWriter(out, mtime=mtime).finish(source, images, docker_compatible=docker_compatible, platform=platform)


def write_docker_archive(
    out: BinaryIO,
    source: BlobSource,
    images: Sequence[ArchiveImage],
    *,
    platform: ImagePlatform | None = None,
    tmp_dir: Path | None = None,
    mtime: int = 0,
) -> list[dict[str, Any]]:  # Any: entries of Docker's manifest.json
    """Write a docker-archive (``docker save`` format) of ``images`` into ``out``.

    Layers are stored uncompressed; compressed blobs are decompressed through
    a temporary file in ``tmp_dir`` and checked against the config's diffIDs.
    Returns the ``manifest.json`` entries.
    """
    tar = _TarOut(out, mtime)
    manifest_json: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: set[str] = set()
    for image in images:
        _, manifest, config_bytes, config = _resolve(source, image.descriptor, platform)
        if len(config.diff_ids) != len(manifest.layers):
            raise ImageError(
                f"image {image.descriptor.digest}: config lists {len(config.diff_ids)} layers, manifest {len(manifest.layers)}",
                hint="the image is inconsistent",
            )
        config_name = digest_hex(manifest.config.digest) + ".json"
        if config_name not in written:
            written.add(config_name)
            tar.file(config_name, config_bytes)
        layer_names = []
        for layer, diff_id in zip(manifest.layers, config.diff_ids):
            name = digest_hex(diff_id) + ".tar"
            layer_names.append(name)
            if name in written:
                continue
            written.add(name)
            _write_uncompressed_layer(tar, source, layer, diff_id, name, tmp_dir)
        references = _names(image)
        tags = [(r, r.tag) for r in references if r.tag and not r.digest]
        manifest_json.append({"Config": config_name, "RepoTags": [r.familiar for r, _ in tags], "Layers": layer_names})
        if tags and config.diff_ids:
            top = digest_hex(config.diff_ids[-1])
            for ref, tag in tags:
                repositories.setdefault(ref.familiar_name, {})[tag] = top
    tar.file("manifest.json", canonical_json(manifest_json))
    if repositories:
        tar.file("repositories", canonical_json(repositories))
    tar.close()
    return manifest_json


def _write_uncompressed_layer(
    tar: _TarOut, source: BlobSource, layer: Descriptor, diff_id: str, name: str, tmp_dir: Path | None
) -> None:
    with source.open(layer.digest) as raw:
        blob_hash = _HashingReader(raw)
        plain = open_decompressed(blob_hash)
        with tempfile.TemporaryFile(dir=tmp_dir) as spool:
            diff_hash = hashlib.sha256()
            size = 0
            try:
                while chunk := plain.read(_COPY_CHUNK):
                    diff_hash.update(chunk)
                    spool.write(chunk)
                    size += len(chunk)
            except ImageError as e:  # the stored blob does not decompress: the store is damaged
                raise CorruptContent(
                    f"layer blob {layer.digest}: {e.message}",
                    hint="the content store is damaged; remove the image and pull or build it again",
                ) from None
            blob_hash.drain()
            if blob_hash.digest() != layer.digest or blob_hash.size != layer.size:
                raise CorruptContent(
                    f"layer blob {layer.digest} does not match its descriptor",
                    hint="the content store is damaged; remove the image and pull or build it again",
                )
            if "sha256:" + diff_hash.hexdigest() != diff_id:
                raise CorruptContent(
                    f"layer {layer.digest} does not uncompress to its diffID {diff_id}",
                    hint="the image is damaged; pull or build it again",
                )
            spool.seek(0)
            tar.stream(name, spool, size, None)


class _HashingReader:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


# --- reading ---------------------------------------------------------------


@dataclass(frozen=True)
class LoadedImage:
    """One image found in an archive.

    ``descriptor`` is the manifest's; ``top`` the entry that named it (the
    same, or an index in an OCI layout).  For a docker-archive the manifest
    is synthesized (Docker schema 2) and readable from the archive's blobs.
    """

    names: tuple[str, ...]
    descriptor: Descriptor
    manifest: Manifest
    config: ImageConfig
    top: Descriptor


class _Section(io.RawIOBase):
    """``size`` bytes of a file from ``offset``, read with pread."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        self._fd = fd
        self._offset = offset
        self._left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > self._left:
            n = self._left
        if not n:
            return b""
        data = os.pread(self._fd, n, self._offset)
        self._offset += len(data)
        self._left -= len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class Archive:
    """An opened image archive: its images and a ``BlobSource`` over its blobs.

    Use as a context manager; blobs read from the archive file until closed.
    """

    def __init__(
        self,
        kind: Literal["oci", "docker"],
        images: tuple[LoadedImage, ...],
        file: BinaryIO,
        members: dict[str, tuple[int, int]],
        blobs: dict[str, str | bytes],
        index: Index | None,
    ) -> None:
        self.format = kind
        self.images = images
        self.index = index
        self._file = file
        self._members = members
        self._blobs = blobs  # digest -> member name, or synthesized bytes

    def open(self, digest: str) -> BinaryIO:
        where = self._blobs.get(digest)
        if where is None:
            raise NotFound(f"blob {digest} is not in the archive", hint="the archive is incomplete")
        if isinstance(where, bytes):
            return io.BytesIO(where)
        offset, size = self._members[where]
        return _Section(self._file.fileno(), offset, size)  # type: ignore[return-value]  # a forward reader (read, close) stands for a file

    @property
    def digests(self) -> frozenset[str]:
        return frozenset(self._blobs)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _member_key(name: bytes) -> str | None:
    text = os.fsdecode(name).lstrip("/")
    parts = [p for p in text.split("/") if p and p != "."]
    if ".." in parts:
        return None
    return "/".join(parts)


def _index_members(file: BinaryIO) -> dict[str, tuple[int, int]]:
    """Regular members by normalized name → (offset, size); links resolved inside the archive."""
    reader = TarReader(file, seekable=True)
    members: dict[str, tuple[int, int]] = {}
    links: dict[str, tuple[bytes, str]] = {}
    while (entry := reader.next()) is not None:
        key = _member_key(entry.name)
        if key is None:
            continue
        if entry.typeflag == REGULAR:
            members[key] = (entry.offset, entry.size)
        elif entry.typeflag in (SYMLINK, HARDLINK):
            links[key] = (entry.typeflag, os.fsdecode(entry.linkname))
    for key, (kind, target) in links.items():
        resolved = key
        for _ in range(16):  # bounded: loops and long chains simply do not resolve
            base = posixpath.dirname(resolved) if kind == SYMLINK else ""
            if target.startswith("/"):
                base = ""
            candidate = _member_key(posixpath.normpath(posixpath.join(base, target)).encode())
            if candidate is None:
                break
            if candidate in members:
                members[key] = members[candidate]
                break
            if candidate not in links:
                break
            resolved = candidate
            kind, target = links[candidate]
    return members


class _Reader:
    def __init__(self, file: BinaryIO, members: dict[str, tuple[int, int]]) -> None:
        self.file = file
        self.members = members

    def section(self, name: str, what: str) -> _Section:
        key = _member_key(name.encode())
        if key is None or key not in self.members:
            raise ImageError(f"archive has no {what} {name!r}", hint="the archive is incomplete or not an image archive")
        offset, size = self.members[key]
        return _Section(self.file.fileno(), offset, size)

    def document(self, name: str, what: str) -> bytes:
        key = _member_key(name.encode())
        if key is not None and key in self.members and self.members[key][1] > MAX_DOCUMENT_BYTES:
            raise ImageError(f"archive {what} {name!r} is too large", hint="the archive is damaged or hostile")
        return self.section(name, what).read()

    def digest_of(self, name: str, what: str) -> tuple[str, int, Compression]:
        section = self.section(name, what)
        first = section.read(_COPY_CHUNK)
        hasher = hashlib.sha256(first)
        size = len(first)
        while chunk := section.read(_COPY_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
        return "sha256:" + hasher.hexdigest(), size, detect_compression(first[:6])


def _blob_name(digest: str) -> str:
    algorithm, _, encoded = check_digest(digest).partition(":")
    return f"blobs/{algorithm}/{encoded}"


def _verify_blob(reader: _Reader, descriptor: Descriptor, verified: dict[str, int]) -> str:
    """The member name of a descriptor's blob, checked (hashed once) against digest and size."""
    name = _blob_name(descriptor.digest)
    size = verified.get(descriptor.digest)
    if size is None:
        digest, size, _ = reader.digest_of(name, "blob")
        if digest != descriptor.digest:
            raise ImageError(
                f"archive blob {name} does not match its digest (got {digest})", hint="the archive is damaged"
            )
        verified[descriptor.digest] = size
    if size != descriptor.size:
        raise ImageError(
            f"archive blob {name} is {size} bytes, its descriptor says {descriptor.size}", hint="the archive is damaged"
        )
    return name


def _read_oci(reader: _Reader) -> tuple[tuple[LoadedImage, ...], dict[str, str | bytes], Index]:
    parse_image_layout(reader.document("oci-layout", "oci-layout file"))
    index = Index.from_json(reader.document("index.json", "index.json"), MEDIA_TYPE_OCI_INDEX, "index.json")
    blobs: dict[str, str | bytes] = {}
    verified: dict[str, int] = {}  # digest -> size of blobs already hashed
    # Every blob file must match its name, referenced or not.
    for key in reader.members:
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "blobs" and parts[1] == "sha256":
            digest = f"sha256:{parts[2]}"
            check_digest(digest, f"archive member {key}")
            actual, size, _ = reader.digest_of(key, "blob")
            if actual != digest:
                raise ImageError(f"archive blob {key} does not match its digest", hint="the archive is damaged")
            blobs[digest] = key
            verified[digest] = size
    images: list[LoadedImage] = []

    def load(descriptor: Descriptor, top: Descriptor, names: tuple[str, ...], depth: int) -> None:
        blobs[descriptor.digest] = _verify_blob(reader, descriptor, verified)
        data = reader.document(_blob_name(descriptor.digest), "manifest")
        document = parse_image_document(data, descriptor.media_type, f"manifest {descriptor.digest}")
        if isinstance(document, Index):
            if depth > 4:
                raise ImageError("archive indexes nest too deeply", hint="the archive is damaged or hostile")
            for child in document.manifests:
                if child.media_type in MANIFEST_MEDIA_TYPES or child.media_type in INDEX_MEDIA_TYPES:
                    load(child, top, names, depth + 1)
            return
        blobs[document.config.digest] = _verify_blob(reader, document.config, verified)
        config_bytes = reader.document(_blob_name(document.config.digest), "config")
        for layer in document.layers:
            blobs[layer.digest] = _verify_blob(reader, layer, verified)
        config = ImageConfig.from_json(config_bytes, f"config {document.config.digest}")
        images.append(LoadedImage(names, descriptor, document, config, top))

    for entry in index.manifests:
        names = tuple(
            value
            for value in (entry.annotation(ANNOTATION_CONTAINERD_NAME) or entry.annotation(ANNOTATION_REF_NAME),)
            if value
        )
        if entry.media_type in MANIFEST_MEDIA_TYPES or entry.media_type in INDEX_MEDIA_TYPES:
            load(entry, entry, names, 0)
    return tuple(images), blobs, index


def _read_docker(reader: _Reader) -> tuple[tuple[LoadedImage, ...], dict[str, str | bytes]]:
    entries = _load_json_list(reader.document("manifest.json", "manifest.json"))
    blobs: dict[str, str | bytes] = {}
    images: list[LoadedImage] = []
    for position, entry in enumerate(entries):
        what = f"manifest.json entry {position}"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageError(f"{what} has no Config", hint="the archive is damaged")
        layers = entry.get("Layers") or []
        tags = entry.get("RepoTags") or []
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ImageError(f"{what}: Layers must be a list of paths", hint="the archive is damaged")
        if not isinstance(tags, list) or not all(isinstance(x, str) for x in tags):
            raise ImageError(f"{what}: RepoTags must be a list of names", hint="the archive is damaged")
        config_bytes = reader.document(entry["Config"], "config")
        config = ImageConfig.from_json(config_bytes, f"config {entry['Config']}")
        config_descriptor = Descriptor.of(MEDIA_TYPE_DOCKER_CONFIG, config_bytes)
        blobs[config_descriptor.digest] = config_bytes
        if len(layers) != len(config.diff_ids):
            raise ImageError(
                f"{what} lists {len(layers)} layers, its config {len(config.diff_ids)}", hint="the archive is damaged"
            )
        layer_descriptors = []
        for path, diff_id in zip(layers, config.diff_ids):
            digest, size, compression = reader.digest_of(path, "layer")
            if compression is Compression.NONE:
                actual_diff = digest
            else:
                actual_diff = _uncompressed_digest(reader.section(path, "layer"), size)
            if actual_diff != diff_id:
                raise ImageError(
                    f"archive layer {path!r} does not match its diffID {diff_id}", hint="the archive is damaged"
                )
            key = _member_key(path.encode())
            assert key is not None
            blobs[digest] = key
            if compression not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
                raise ImageError(
                    f"archive layer {path!r} is compressed with {compression.value}",
                    hint="image layers may be plain, gzip or zstd tars; re-save the image",
                )
            media_type = layer_media_type(compression, docker=True)
            layer_descriptors.append(Descriptor(media_type, digest, size))
        manifest = Manifest(config_descriptor, tuple(layer_descriptors), media_type=MEDIA_TYPE_DOCKER_MANIFEST)
        manifest_bytes = manifest.to_json()
        descriptor = Descriptor.of(MEDIA_TYPE_DOCKER_MANIFEST, manifest_bytes, platform=config.platform)
        blobs[descriptor.digest] = manifest_bytes
        images.append(LoadedImage(tuple(tags), descriptor, manifest, config, descriptor))
    return tuple(images), blobs


def _uncompressed_digest(section: ByteSource, size: int) -> str:
    from ._budget import UnpackBudget, unpack_limit

    plain = UnpackBudget(unpack_limit(size), "a layer of the archive").reader(open_decompressed(section))
    hasher = hashlib.sha256()
    while chunk := plain.read(_COPY_CHUNK):
        hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


def _load_json_list(data: bytes) -> list[Any]:  # Any: parsed JSON, checked by the caller
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"manifest.json is not valid JSON: {e}", hint="the archive is damaged") from None
    if not isinstance(value, list):
        raise ImageError("manifest.json is not a JSON list", hint="the archive is damaged")
    return value


def parse_image_layout(data: bytes) -> str:
    """The ``imageLayoutVersion`` of an ``oci-layout`` file (only 1.x is read)."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        doc = None
    version = doc.get("imageLayoutVersion") if isinstance(doc, dict) else None
    if not isinstance(version, str) or not version.startswith("1."):
        raise ImageError(
            f"unsupported oci-layout {data[:80]!r}", hint="only OCI image layout version 1.x is supported"
        )
    return version


def read_archive(path: Path, *, tmp_dir: Path | None = None) -> Archive:
    """Open an OCI layout tar or a docker-archive (plain or compressed) and verify it.

    A compressed archive is decompressed into a temporary file in ``tmp_dir``
    first.  Raises ``ImageError`` if it is neither format, is damaged, or any
    blob does not match its digest.
    """
    try:
        file: BinaryIO = open(path, "rb")
    except OSError as e:
        raise ImageError(f"cannot open archive {path}: {e.strerror}", hint="check the path") from None
    try:
        if detect_compression(file.read(6)) is not Compression.NONE:
            file.seek(0)
            spool = tempfile.TemporaryFile(dir=tmp_dir)
            from ._budget import UnpackBudget, unpack_limit

            budget = UnpackBudget(unpack_limit(os.fstat(file.fileno()).st_size), "the archive")
            with open_decompressed(file) as plain:
                shutil.copyfileobj(budget.reader(plain), spool, _COPY_CHUNK)
            file.close()
            file = spool
        file.seek(0)
        members = _index_members(file)
        reader = _Reader(file, members)
        if "oci-layout" in members and "index.json" in members:
            images, blobs, index = _read_oci(reader)
            return Archive("oci", images, file, members, blobs, index)
        if "manifest.json" in members:
            docker_images, docker_blobs = _read_docker(reader)
            return Archive("docker", docker_images, file, members, docker_blobs, None)
        raise ImageError(
            f"{path} is not an image archive (no oci-layout/index.json or manifest.json)",
            hint="expected a file written by docker save, pybuild or an OCI layout tar",
        )
    except OSError as e:
        file.close()
        raise ImageError(f"cannot read archive {path}: {e.strerror}", hint="the file is damaged") from None
    except BaseException:
        file.close()
        raise

