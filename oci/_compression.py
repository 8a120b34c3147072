"""Layer compression: gzip (isal), zstd (zstandard), none; decompression by magic.

Writing a layer computes, in one pass over the tar, the uncompressed digest
(the diffID, for the image config) and the compressed digest and size (the
descriptor, for the manifest) while the compressed bytes go to the caller's
sink.

Determinism: the input is cut into fixed ``BLOCK`` pieces before it reaches
the compressor, so the output depends only on the bytes, the kind and the
level -- not on how the caller chunked its writes, nor on the number of CPUs:

- gzip: ``isal.igzip_threaded`` compresses each block on a worker thread
  with the previous block's last 32 KiB as dictionary (pigz's scheme).  One
  gzip member; the header has no name, mtime 0 and OS 255.  Levels 0-9 map
  onto isal's four: 0 → 0, 1-3 → 1, 4-6 → 2 (the default, like gzip's 6),
  7-9 → 3.
- zstd: ``zstandard`` in multi-threaded mode (``threads=-1``); zstd's
  multi-threaded output is the same for every worker count.  Level 3 by
  default, 1-22.
"""

from __future__ import annotations

import bz2
import contextlib
import enum
import hashlib
import io
import lzma
import mmap
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Protocol

import zstandard
from isal import igzip, igzip_threaded, isal_zlib

from pybuild.cache import BlobWriter
from pybuild._frozen import frozen
from pybuild.errors import ImageError, UsageError

from ._formats import (
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER,
    MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_ZSTD,
)
from ._layers import LayerStats, write_layer

BLOCK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
XZ_MEMORY_LIMIT = 1 << 30


class Compression(enum.Enum):
    """How a layer blob is compressed."""

    GZIP = "gzip"
    ZSTD = "zstd"
    NONE = "none"
    # Read only: found in pulled images and ADD archives.
    BZIP2 = "bzip2"
    XZ = "xz"

    @classmethod
    def parse(cls, text: str) -> Compression:
        """``gzip``, ``zstd``, ``none`` (or ``uncompressed``) as a user writes them."""
        value = text.strip().lower()
        if value == "uncompressed":
            return cls.NONE
        if value in ("gzip", "zstd", "none"):
            return cls(value)
        raise UsageError(
            f"unknown compression {text!r}",
            hint="use one of: gzip, zstd, uncompressed",
        )


_LEVELS = {Compression.GZIP: (0, 9, 6), Compression.ZSTD: (1, 22, 3), Compression.NONE: (0, 0, 0)}


def compression_level(kind: Compression, level: int | None) -> int:
    """The effective level for ``kind``: the default for None, else checked."""
    low, high, default = _LEVELS.get(kind, (0, 0, 0))
    if level is None:
        return default
    if kind is Compression.NONE:
        return 0
    if not low <= level <= high:
        raise UsageError(
            f"compression level {level} is out of range for {kind.value}",
            hint=f"{kind.value} levels are {low}-{high}",
        )
    return level


def isal_level(gzip_level: int) -> int:
    """gzip's 0-9 onto isal's 0-3 (fast, fast, default, best)."""
    if gzip_level <= 0:
        return 0
    if gzip_level <= 3:
        return 1
    if gzip_level <= 6:
        return 2
    return 3


def layer_media_type(kind: Compression, *, docker: bool = False) -> str:
    """The layer media type; ``docker=True`` for schema 2 / docker-archive.

    Docker has no zstd layer type; BuildKit uses the OCI one there too.
    """
    if kind is Compression.GZIP:
        return MEDIA_TYPE_DOCKER_LAYER_GZIP if docker else MEDIA_TYPE_OCI_LAYER_GZIP
    if kind is Compression.ZSTD:
        return MEDIA_TYPE_OCI_LAYER_ZSTD
    if kind is Compression.NONE:
        return MEDIA_TYPE_DOCKER_LAYER if docker else MEDIA_TYPE_OCI_LAYER
    raise UsageError(f"cannot write {kind.value} layers", hint="use gzip, zstd or uncompressed")


@frozen
class LayerBlob:
    """A written layer: its diffID, the blob's digest, size and media type."""

    diff_id: str
    digest: str
    size: int
    media_type: str
    compression: Compression
    uncompressed_size: int = 0
    stats: LayerStats | None = None


class ByteSink(Protocol):
    """Where bytes go: a file, a content-store writer, an archive member."""

    def write(self, data: bytes, /) -> object: ...


_Sink = ByteSink


class ByteSource(Protocol):
    """Where bytes come from: a file, a blob hashed on its way, a section of an archive."""

    def read(self, size: int = -1, /) -> bytes: ...


class _HashingSink:
    """Counts and hashes the compressed bytes on their way to the caller's sink.

    A content-store writer hashes what it is given anyway; its digest is
    taken instead of hashing every byte twice.  ``tee`` gets the same bytes
    too (an archive member written while the blob is stored).
    """

    def __init__(self, sink: _Sink, *, hashing: bool = True, tee: _Sink | None = None) -> None:
        self._sink = sink
        self._tee = tee
        self._store_writer = sink if isinstance(sink, BlobWriter) else None
        self._hash = hashlib.sha256() if hashing and self._store_writer is None else None
        self.size = 0

    def write(self, data: bytes) -> int:
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        self._sink.write(data)
        if self._tee is not None:
            self._tee.write(data)
        return len(data)

    def digest(self) -> str:
        if self._store_writer is not None:
            return self._store_writer.written_digest()
        assert self._hash is not None
        return "sha256:" + self._hash.hexdigest()

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass


class LayerBlobWriter:
    """Write an uncompressed tar into it; ``close()`` gives the ``LayerBlob``.

    ``threads`` is for tests (to show the output does not depend on it);
    ``tee`` receives the compressed bytes as ``sink`` does.
    """

    def __init__(
        self,
        kind: Compression | str,
        level: int | None,
        sink: _Sink,
        *,
        docker_media_types: bool = False,
        threads: int = -1,
        known_diff_id: str | None = None,
        tee: _Sink | None = None,
    ) -> None:
        self.kind = Compression.parse(kind) if isinstance(kind, str) else kind
        self.media_type = layer_media_type(self.kind, docker=docker_media_types)
        level = compression_level(self.kind, level)
        # a caller that feeds an already verified plain tar knows its diffID
        self._known_diff_id = known_diff_id
        self._diff = hashlib.sha256() if known_diff_id is None else None
        self._size = 0
        self._pending = bytearray()
        # a plain tar's digest is its diffID, hashed below anyway
        self._blob = _HashingSink(sink, hashing=self.kind is not Compression.NONE, tee=tee)
        self._encoder: BinaryIO | _HashingSink
        if self.kind is Compression.GZIP:
            self._encoder = igzip_threaded.open(  # type: ignore[no-untyped-call]  # isal leaves it unannotated
                self._blob, "wb", compresslevel=isal_level(level), threads=threads, block_size=BLOCK
            )
        elif self.kind is Compression.ZSTD:
            compressor = zstandard.ZstdCompressor(level=level, threads=threads)
            # zstandard asks for IO[bytes]; it calls only write() (and flush() if there is one)
            self._encoder = compressor.stream_writer(self._blob, closefd=False, write_return_read=True)  # type: ignore[arg-type]
        else:
            self._encoder = self._blob
        self._closed = False

    def write(self, data: bytes) -> int:
        if self._diff is not None:
            self._diff.update(data)
        self._size += len(data)
        if self._encoder is self._blob:
            self._blob.write(data)
            return len(data)
        pending = self._pending
        if not pending and len(data) == BLOCK:
            self._encoder.write(data)
            return BLOCK
        pending += data
        if len(pending) >= BLOCK:
            view = memoryview(pending)
            start = 0
            while len(pending) - start >= BLOCK:
                self._encoder.write(bytes(view[start : start + BLOCK]))
                start += BLOCK
            view.release()
            del pending[:start]
        return len(data)

    def close(self) -> LayerBlob:
        if self._closed:
            raise ValueError("layer writer already closed")
        self._closed = True
        if self._encoder is not self._blob:
            try:
                if self._pending:
                    self._encoder.write(bytes(self._pending))
                    self._pending.clear()
            finally:
                self._encoder.close()  # type: ignore[union-attr]  # not the blob sink: an encoder
        diff_id = self._known_diff_id or "sha256:" + self._diff.hexdigest()  # type: ignore[union-attr]  # _diff is made whenever no diffID was given
        return LayerBlob(
            diff_id=diff_id,
            digest=diff_id if self.kind is Compression.NONE else self._blob.digest(),
            size=self._blob.size,
            media_type=self.media_type,
            compression=self.kind,
            uncompressed_size=self._size,
        )

    def abort(self) -> None:
        """Stop worker threads after a failure; the sink's content is garbage."""
        if not self._closed:
            self._closed = True
            if self._encoder is not self._blob:
                try:
                    self._encoder.close()  # type: ignore[union-attr]  # not the blob sink: an encoder
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass


def compress_layer(
    tree: Path,
    kind: Compression | str,
    level: int | None,
    sink: _Sink,
    *,
    mtime: int | None = None,
    docker_media_types: bool = False,
    tee: _Sink | None = None,
) -> LayerBlob:
    """Archive the layer tree ``tree``, compress it into ``sink`` (and ``tee``), and describe the blob."""
    writer = LayerBlobWriter(kind, level, sink, docker_media_types=docker_media_types, tee=tee)
    try:
        stats = write_layer(tree, writer, mtime=mtime)  # type: ignore[arg-type]  # it only writes to it
    except BaseException:
        writer.abort()
        raise
    blob = writer.close()
    return LayerBlob(
        diff_id=blob.diff_id,
        digest=blob.digest,
        size=blob.size,
        media_type=blob.media_type,
        compression=blob.compression,
        uncompressed_size=blob.uncompressed_size,
        stats=stats,
    )


def compress_stream(
    source: BinaryIO,
    kind: Compression | str,
    level: int | None,
    sink: _Sink,
    *,
    docker_media_types: bool = False,
    known_diff_id: str | None = None,
    tee: _Sink | None = None,
) -> LayerBlob:
    """Recompress a layer: ``source`` (any compression) → ``kind`` into ``sink`` (and ``tee``).

    ``known_diff_id``: the source is a plain tar already verified to have it;
    a file is then fed to the compressor straight from a read-only mapping.
    """
    writer = LayerBlobWriter(kind, level, sink, docker_media_types=docker_media_types, known_diff_id=known_diff_id, tee=tee)
    try:
        with _mapped(source) if known_diff_id is not None else contextlib.nullcontext() as whole:
            if whole is not None:
                for start in range(0, len(whole), BLOCK):
                    writer.write(whole[start : start + BLOCK])  # type: ignore[arg-type]  # a slice of an mmap is bytes
            else:
                plain = open_decompressed(source)
                while chunk := plain.read(BLOCK):
                    writer.write(chunk)
            # inside the mapping: gzip's worker threads may still hold slices of it
            return writer.close()
    except BaseException:
        writer.abort()
        raise


@contextlib.contextmanager
def _mapped(source: BinaryIO) -> Iterator[memoryview | None]:
    """The file behind ``source`` (read from its start) as a read-only mapping,
    or None (a stream, an empty file, a file already partly read).

    The compressor reads the page cache directly: no copy of the whole tar
    into Python bytes first.  Content-store blobs are replaced by rename,
    never rewritten in place, so the mapping cannot shrink under the reader.
    """
    try:
        if source.tell() != 0:
            raise ValueError("not at the start")
        mapped = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        yield None
        return
    view = memoryview(mapped)
    try:
        yield view
    finally:
        view.release()
        try:
            mapped.close()
        except BufferError:
            pass  # a slice is still referenced: the mapping goes with it


# --- reading ---------------------------------------------------------------


def detect_compression(prefix: bytes) -> Compression:
    """The compression whose magic bytes start ``prefix`` (NONE if none does)."""
    if prefix.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if prefix.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    if prefix.startswith(XZ_MAGIC):
        return Compression.XZ
    if prefix.startswith(BZIP2_MAGIC) and len(prefix) > 3 and 0x31 <= prefix[3] <= 0x39:
        return Compression.BZIP2
    return Compression.NONE


class _Prefixed(io.RawIOBase):
    """``prefix`` then the rest of ``stream``: magic bytes peeked without seeking."""

    def __init__(self, prefix: bytes, stream: ByteSource) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                data, self._prefix = self._prefix + self._stream.read(), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._stream.read(size)


class _Decoder(Protocol):
    """What bz2's and lzma's decompressors have in common."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def needs_input(self) -> bool: ...
    def decompress(self, data: bytes, max_length: int = -1, /) -> bytes: ...


class _StreamDecompressor(io.RawIOBase):
    """Multi-stream bzip2/xz decoding with bounded output per read."""

    def __init__(self, source: _Prefixed, factory: Callable[[], _Decoder]) -> None:
        self._source = source
        self._factory = factory
        self._decoder = factory()
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(BLOCK), b""))
        decoder = self._decoder
        while not self._eof:
            if decoder.eof:
                rest = decoder.unused_data
                if not rest:
                    rest = self._source.read(BLOCK)
                if not rest:
                    self._eof = True
                    break
                decoder = self._decoder = self._factory()
                data = decoder.decompress(rest, size)
            elif decoder.needs_input:
                chunk = self._source.read(BLOCK)
                if not chunk:
                    raise EOFError("compressed stream ends before its end marker")
                data = decoder.decompress(chunk, size)
            else:
                data = decoder.decompress(b"", size)
            if data:
                return data
        return b""


class _ZstdFrames:
    """Follows zstd's frame structure (RFC 8878) over the compressed bytes.

    zstandard's stream reader ends quietly when its input stops inside a
    frame; knowing where frames end turns that truncation into an error.
    Only headers are looked at; block contents are skipped by their sizes.
    """

    def __init__(self) -> None:
        self._state = "magic"
        self._need = 4
        self._buffer = b""
        self._skip = 0
        self._last_block = False
        self._checksum = 0
        self.unknown = False  # not zstd after all: the decoder reports that

    @property
    def at_boundary(self) -> bool:
        return self.unknown or (self._state == "magic" and not self._buffer and not self._skip)

    def feed(self, data: bytes) -> None:
        pos, end = 0, len(data)
        while pos < end and not self.unknown:
            if self._skip:
                step = min(self._skip, end - pos)
                self._skip -= step
                pos += step
                if not self._skip:
                    self._after_payload()
                continue
            take = min(self._need - len(self._buffer), end - pos)
            self._buffer += data[pos : pos + take]
            pos += take
            if len(self._buffer) == self._need:
                field, self._buffer = self._buffer, b""
                self._advance(field)

    def _expect(self, state: str, need: int) -> None:
        self._state, self._need = state, need

    def _payload(self, size: int) -> None:
        self._state = "payload"
        self._skip = size
        if not size:
            self._after_payload()

    def _after_payload(self) -> None:
        if self._state == "skippable":
            self._expect("magic", 4)
        elif self._last_block:
            if self._checksum:
                self._expect("checksum", 4)
            else:
                self._expect("magic", 4)
        else:
            self._expect("block", 3)

    def _advance(self, field: bytes) -> None:
        state = self._state
        if state == "magic":
            magic = int.from_bytes(field, "little")
            if field == ZSTD_MAGIC:
                self._expect("descriptor", 1)
            elif magic & 0xFFFFFFF0 == 0x184D2A50:
                self._expect("skippable-size", 4)
            else:
                self.unknown = True
        elif state == "skippable-size":
            self._state = "skippable"
            self._skip = int.from_bytes(field, "little")
            if not self._skip:
                self._after_payload()
        elif state == "descriptor":
            descriptor = field[0]
            single_segment = descriptor >> 5 & 1
            fcs = (0 if not single_segment else 1, 2, 4, 8)[descriptor >> 6]
            rest = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 3] + fcs
            self._checksum = descriptor >> 2 & 1
            self._last_block = False
            if rest:
                self._expect("header", rest)
            else:
                self._expect("block", 3)
        elif state == "header":
            self._expect("block", 3)
        elif state == "block":
            header = int.from_bytes(field, "little")
            self._last_block = bool(header & 1)
            block_type = header >> 1 & 3
            size = header >> 3
            if block_type == 3:
                self.unknown = True  # reserved: the decoder reports corruption
                return
            self._payload(1 if block_type == 1 else size)
        elif state == "checksum":
            self._expect("magic", 4)


class _ZstdSource:
    """The compressed input of a zstd reader, checked to end on a frame boundary."""

    def __init__(self, source: _Prefixed) -> None:
        self._source = source
        self._frames = _ZstdFrames()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        if data:
            self._frames.feed(data)
        elif not self._frames.at_boundary:
            raise EOFError("zstd data ends inside a frame (truncated)")
        return data


_DECODE_ERRORS = (OSError, EOFError, zstandard.ZstdError, isal_zlib.error, lzma.LZMAError, ValueError)


class _Decompressed(io.RawIOBase):
    """A decompressing reader whose codec errors become ``ImageError``."""

    def __init__(self, reader: BinaryIO, kind: Compression) -> None:
        self._reader = reader
        self.compression = kind

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        try:
            return self._reader.read(size)
        except _DECODE_ERRORS as e:  # type: ignore[misc]  # isal's stub makes isal_zlib.error an instance
            raise ImageError(
                f"cannot decompress {self.compression.value} data: {e}",
                hint="the blob or archive is damaged or truncated",
            ) from None

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        try:
            self._reader.close()
        finally:
            super().close()


def open_decompressed(stream: ByteSource) -> BinaryIO:
    """A reader of ``stream``'s content, decompressed by its magic bytes.

    gzip (multi-member), zstd (multi-frame), bzip2, xz or plain.  The result
    reads forward only; errors in the compressed data raise ``ImageError``.
    Closing it does not close ``stream``.
    """
    prefix = b""
    while len(prefix) < 6:
        chunk = stream.read(6 - len(prefix))
        if not chunk:
            break
        prefix += chunk
    kind = detect_compression(prefix)
    source = _Prefixed(prefix, stream)
    reader: BinaryIO
    if kind is Compression.NONE:
        return source  # type: ignore[return-value]  # a forward reader (read, close) stands for a file
    if kind is Compression.GZIP:
        reader = igzip.GzipFile(fileobj=source, mode="rb")  # type: ignore[assignment, no-untyped-call]  # isal leaves it unannotated
    elif kind is Compression.ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(
            _ZstdSource(source), read_across_frames=True, closefd=False  # type: ignore[arg-type]  # it calls only read()
        )
    elif kind is Compression.BZIP2:
        reader = _StreamDecompressor(source, bz2.BZ2Decompressor)  # type: ignore[assignment]  # a forward reader (read, close) stands for a file
    else:
        reader = _StreamDecompressor(source, lambda: lzma.LZMADecompressor(memlimit=XZ_MEMORY_LIMIT))  # type: ignore[assignment]  # a forward reader (read, close) stands for a file
    return _Decompressed(reader, kind)  # type: ignore[return-value]  # a forward reader (read, close) stands for a file
