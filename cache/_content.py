"""The content store: immutable blobs addressed by their sha256 digest.

A blob is written to a temp file in the writer's process temp area, hashed
while it is written, fsynced, checked against the digest and size the caller
expected, and only then renamed to ``blobs/sha256/<hex>``.  A file under that
name is therefore always complete; two writers of the same blob both rename
identical bytes into place, which is harmless.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from pybuild.errors import CorruptContent, NotFound

from ._util import digest_hex, fsync_dir, store_error
from ._writeback import open_with_writeback


@runtime_checkable
class BlobWriter(Protocol):
    """Receives one blob's bytes; a context manager that discards unless committed."""

    def write(self, data: bytes) -> int:
        """Append bytes; CorruptContent as soon as more than the expected size arrives."""

    def written_digest(self) -> str:
        """The digest of the bytes written so far (what ``commit`` will store them as)."""

    def commit(self) -> str:
        """Verify and store what was written; returns its digest.

        Raises CorruptContent (and keeps nothing) if the digest or size
        differs from what the writer was told to expect.
        """

    def __enter__(self) -> BlobWriter: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class ContentStore(Protocol):
    """Blobs by ``sha256:<hex>`` digest.  All methods are thread-safe."""

    def has(self, digest: str) -> bool:
        """Is the blob stored?"""

    def size(self, digest: str) -> int | None:
        """Its size in bytes, or None if it is not stored."""

    def open(self, digest: str, *, verify: bool = False) -> BinaryIO:
        """Read a blob (NotFound if absent).  With ``verify``, reading to the end
        raises CorruptContent if the bytes do not match the digest."""

    def path(self, digest: str) -> Path | None:
        """The file holding the blob (None for stores without files, or if absent)."""

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> BlobWriter:
        """A writer for a new blob."""

    def put(self, data: bytes) -> str:
        """Store bytes; returns their digest."""

    def verify(self, digest: str) -> bool:
        """Re-hash a stored blob: True if it matches its digest (False if absent)."""

    def delete(self, digest: str) -> bool:
        """Remove a blob; returns whether it was there."""

    def list(self) -> Iterator[tuple[str, int]]:
        """Every stored blob as (digest, size)."""


class _VerifyingReader(io.RawIOBase):
    """Hashes what passes through; raises CorruptContent at end of file on mismatch."""

    def __init__(self, raw: io.RawIOBase | io.BufferedIOBase, digest: str) -> None:
        self._raw = raw
        self._digest = digest
        self._hash = hashlib.sha256()
        self._checked = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]  # io passes only these
        n = self._raw.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer)[:n])
            return n
        if not self._checked:
            self._checked = True
            actual = "sha256:" + self._hash.hexdigest()
            if actual != self._digest:
                raise CorruptContent(
                    f"blob {self._digest} is corrupt: its content hashes to {actual}",
                    hint="remove it with `pybuild prune` or pull/build it again",
                )
        return 0

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


def _verify_expectations(digest: str, size: int, expected_digest: str | None, expected_size: int | None) -> None:
    if expected_size is not None and size != expected_size:
        raise CorruptContent(
            f"blob {expected_digest or digest} has {size} bytes, expected {expected_size}",
            hint="the source sent incomplete or wrong data; try again",
        )
    if expected_digest is not None and digest != expected_digest:
        raise CorruptContent(
            f"content does not match its digest: expected {expected_digest}, got {digest}",
            hint="the source sent wrong data; try again",
        )


# A small blob already stored (an image config or manifest written again by every export)
# is checked by reading it back, which is cheaper than an fsync and a rename over it.
_CHECKED_IN_PLACE = 1 << 20


def _holds(path: Path, digest: str) -> bool:
    """Whether ``path`` is a regular file whose bytes have ``digest`` (a damaged one is replaced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as f:
        data = f.read(_CHECKED_IN_PLACE + 1)
    return len(data) <= _CHECKED_IN_PLACE and "sha256:" + hashlib.sha256(data).hexdigest() == digest


class _FileBlobWriter:
    def __init__(self, store: FileContentStore, expected_digest: str | None, expected_size: int | None) -> None:
        self._store = store
        self._expected_digest = expected_digest
        self._expected_size = expected_size
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False
        try:
            fd, self._temp = store._new_temp()
        except OSError as error:
            raise store_error("cannot create a temp file for a blob", error) from None
        self._file = open_with_writeback(fd)

    def write(self, data: bytes) -> int:
        if self._done:
            raise ValueError("write to a finished blob writer")
        n = len(data)
        if self._expected_size is not None and self._size + n > self._expected_size:
            self.discard()
            raise CorruptContent(
                f"blob {self._expected_digest or '(new)'} is larger than the expected {self._expected_size} bytes",
                hint="the source sent wrong data; try again",
            )
        self._hash.update(data)
        try:
            self._file.write(data)
        except OSError as error:
            self.discard()
            raise store_error("cannot write a blob", error) from None
        self._size += n
        return n

    def written_digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def commit(self) -> str:
        if self._done:
            raise ValueError("commit of a finished blob writer")
        digest = self.written_digest()
        try:
            _verify_expectations(digest, self._size, self._expected_digest, self._expected_size)
            final = self._store._blob_path(digest)
            if self._size <= _CHECKED_IN_PLACE and _holds(final, digest):
                self.discard()  # keep the stored copy's inode: records of it (the fast path's) stay true
                self._done = True
                return digest
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.rename(self._temp, final)
            fsync_dir(final.parent)
            if self._store.on_commit is not None:
                self._store.on_commit(final, digest, self._size)
        except OSError as error:
            self.discard()
            raise store_error(f"cannot store blob {digest}", error) from None
        except BaseException:
            self.discard()
            raise
        self._done = True
        return digest

    def discard(self) -> None:
        if self._done:
            return
        self._done = True
        self._file.close()
        try:
            os.unlink(self._temp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> _FileBlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


class _StoreThroughWriter:
    """What a content store does the same way whatever holds its blobs: ``put`` goes through ``writer``."""

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> BlobWriter:
        raise NotImplementedError

    def put(self, data: bytes) -> str:
        with self.writer() as w:
            w.write(data)
            return w.commit()


class FileContentStore(_StoreThroughWriter):
    """Blobs as files under ``<dir>/sha256/``; temp files come from ``staging()``,
    a directory on the same file system (the process temp area)."""

    def __init__(
        self, directory: Path, staging: Callable[[], Path], on_commit: Callable[[Path, str, int], None] | None = None
    ) -> None:
        self.directory = Path(directory)
        self._sha256 = self.directory / "sha256"
        self._staging = staging
        self.on_commit = on_commit  # told of each blob stored, already hashed: (path, digest, size)
        self._sha256.mkdir(parents=True, exist_ok=True)

    def _blob_path(self, digest: str) -> Path:
        return self._sha256 / digest_hex(digest)

    def _new_temp(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(prefix="blob-", dir=self._staging())
        return fd, Path(name)

    def has(self, digest: str) -> bool:
        return os.path.isfile(self._blob_path(digest))

    def size(self, digest: str) -> int | None:
        try:
            return os.stat(self._blob_path(digest)).st_size
        except FileNotFoundError:
            return None

    def path(self, digest: str) -> Path | None:
        p = self._blob_path(digest)
        return p if os.path.isfile(p) else None

    def open(self, digest: str, *, verify: bool = False) -> BinaryIO:
        try:
            raw = open(self._blob_path(digest), "rb", buffering=0)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} is not in the content store") from None
        except OSError as error:
            raise store_error(f"cannot read blob {digest}", error) from None
        if not verify:
            return io.BufferedReader(raw, buffer_size=1 << 16)
        return io.BufferedReader(_VerifyingReader(raw, digest), buffer_size=1 << 16)

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> _FileBlobWriter:
        if expected_digest is not None:
            digest_hex(expected_digest)
        return _FileBlobWriter(self, expected_digest, expected_size)

    def verify(self, digest: str) -> bool:
        try:
            with open(self._blob_path(digest), "rb") as f:
                return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest() == digest
        except FileNotFoundError:
            return False
        except OSError as error:
            raise store_error(f"cannot read blob {digest}", error) from None

    def delete(self, digest: str) -> bool:
        try:
            os.unlink(self._blob_path(digest))
            return True
        except FileNotFoundError:
            return False
        except OSError as error:
            raise store_error(f"cannot delete blob {digest}", error) from None

    def list(self) -> Iterator[tuple[str, int]]:
        try:
            entries = list(os.scandir(self._sha256))
        except OSError as error:
            raise store_error("cannot list the content store", error) from None
        for entry in sorted(entries, key=lambda e: e.name):
            if len(entry.name) != 64 or not entry.is_file(follow_symlinks=False):
                continue
            try:
                size = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:  # deleted meanwhile
                continue
            yield "sha256:" + entry.name, size


class _MemoryBlobWriter:
    def __init__(self, store: MemoryContentStore, expected_digest: str | None, expected_size: int | None) -> None:
        self._store = store
        self._expected_digest = expected_digest
        self._expected_size = expected_size
        self._buffer = io.BytesIO()
        self._done = False

    def write(self, data: bytes) -> int:
        if self._done:
            raise ValueError("write to a finished blob writer")
        if self._expected_size is not None and self._buffer.tell() + len(data) > self._expected_size:
            self._done = True
            raise CorruptContent(
                f"blob is larger than the expected {self._expected_size} bytes",
                hint="the source sent wrong data; try again",
            )
        return self._buffer.write(data)

    def written_digest(self) -> str:
        return "sha256:" + hashlib.sha256(self._buffer.getbuffer()).hexdigest()

    def commit(self) -> str:
        if self._done:
            raise ValueError("commit of a finished blob writer")
        self._done = True
        data = self._buffer.getvalue()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _verify_expectations(digest, len(data), self._expected_digest, self._expected_size)
        with self._store._lock:
            self._store._blobs[digest] = data
        return digest

    def __enter__(self) -> _MemoryBlobWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._done = True


class MemoryContentStore(_StoreThroughWriter):
    """A ContentStore in a dict, for tests of code that stores blobs."""

    def __init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def has(self, digest: str) -> bool:
        digest_hex(digest)
        return digest in self._blobs

    def size(self, digest: str) -> int | None:
        digest_hex(digest)
        data = self._blobs.get(digest)
        return None if data is None else len(data)

    def path(self, digest: str) -> Path | None:
        digest_hex(digest)
        return None

    def open(self, digest: str, *, verify: bool = False) -> BinaryIO:
        digest_hex(digest)
        data = self._blobs.get(digest)
        if data is None:
            raise NotFound(f"blob {digest} is not in the content store")
        if not verify:
            return io.BytesIO(data)
        return io.BufferedReader(_VerifyingReader(io.BytesIO(data), digest))

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> _MemoryBlobWriter:
        if expected_digest is not None:
            digest_hex(expected_digest)
        return _MemoryBlobWriter(self, expected_digest, expected_size)

    def verify(self, digest: str) -> bool:
        digest_hex(digest)
        data = self._blobs.get(digest)
        return data is not None and "sha256:" + hashlib.sha256(data).hexdigest() == digest

    def delete(self, digest: str) -> bool:
        digest_hex(digest)
        with self._lock:
            return self._blobs.pop(digest, None) is not None

    def list(self) -> Iterator[tuple[str, int]]:
        with self._lock:
            items = sorted((d, len(b)) for d, b in self._blobs.items())
        yield from items

    def corrupt(self, digest: str, data: bytes) -> None:
        """Replace a blob's bytes without changing its digest (for corruption tests)."""
        with self._lock:
            self._blobs[digest] = data

