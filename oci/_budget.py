"""How much one archive or layer may unpack to: the decompression-bomb budget.

A small compressed file can expand to any size (a gzip of zeros is about
1/1000 of its content, bzip2 and xz far less), so every unpack -- ``ADD`` of
an archive, a pulled or loaded layer, ``pybuild import`` -- is given a budget
before it starts:

- by default ``max(1 GiB, 200 × the compressed size)``: no real tarball comes
  near 200× (source trees and root filesystems compress 3-10×), and 1 GiB
  lets a small archive of compressible data through, while a bomb stops
  after at most that much written;
- ``PYBUILD_UNPACK_LIMIT=SIZE`` (``512m``, ``20g``, ``none``) replaces the
  default with one absolute limit, for genuine giants or tight disks.

Two quantities are held to the limit, each on its own: the bytes of the
decompressed tar stream (huge metadata headers, padding and data alike), and
an estimate of what the entries take on disk (each entry one 4 KiB block plus
its data in whole blocks), so a flood of empty files or directories, which
is cheap in the stream but not on disk, stops too.
"""

from __future__ import annotations

import os
import re
import stat
from typing import BinaryIO

from pybuild.errors import ImageError, UsageError

UNPACK_LIMIT_ENV = "PYBUILD_UNPACK_LIMIT"
MINIMUM_LIMIT = 1 << 30
RATIO = 200
DISK_BLOCK = 4096

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_unpack_limit(text: str) -> int | None:
    """``PYBUILD_UNPACK_LIMIT``'s value in bytes (binary units), None for ``none``."""
    value = text.strip().lower()
    if value in ("none", "unlimited"):
        return None
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?", value)
    if match is None or float(match.group(1)) <= 0:
        raise UsageError(
            f"invalid {UNPACK_LIMIT_ENV} {text!r}",
            hint="a size such as 512m, 20g or 1t, or none for no limit",
        )
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def unpack_limit(compressed_size: int | None) -> int | None:
    """The budget for an archive of ``compressed_size`` bytes (None: unknown, a pipe).

    An unknown size gets no ratio limit: only ``PYBUILD_UNPACK_LIMIT`` if set.
    """
    configured = os.environ.get(UNPACK_LIMIT_ENV)
    if configured is not None and configured.strip():
        return parse_unpack_limit(configured)
    if compressed_size is None:
        return None
    return max(MINIMUM_LIMIT, RATIO * compressed_size)


def remaining_size(stream: BinaryIO) -> int | None:
    """Bytes left in ``stream`` if it is a regular file (None for pipes and other streams)."""
    try:
        st = os.fstat(stream.fileno())
        position = stream.tell()
    except (AttributeError, OSError, ValueError):
        getbuffer = getattr(stream, "getbuffer", None)  # io.BytesIO
        if getbuffer is None:
            return None
        return len(getbuffer()) - stream.tell()
    if not stat.S_ISREG(st.st_mode):
        return None
    return max(st.st_size - position, 0)


def size_text(size: int) -> str:
    """1 GiB, 10 MiB, 1.5 GiB, 4096 bytes."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


class UnpackBudget:
    """Counts what one unpack reads and writes; raises ``ImageError`` past ``limit``."""

    def __init__(self, limit: int | None, what: str = "the archive") -> None:
        self.limit = limit
        self.what = what
        self.stream_bytes = 0
        self.disk_bytes = 0

    def exceeded(self) -> ImageError:
        assert self.limit is not None
        return ImageError(
            f"{self.what} expands beyond the {size_text(self.limit)} unpack limit",
            hint=f"a decompression bomb? if the archive is genuine, raise the limit with {UNPACK_LIMIT_ENV}=SIZE (e.g. 20g)",
        )

    def charge_entry(self, size: int) -> None:
        """An entry of ``size`` data bytes is about to be written."""
        self.disk_bytes += DISK_BLOCK + -(-size // DISK_BLOCK) * DISK_BLOCK
        if self.limit is not None and self.disk_bytes > self.limit:
            raise self.exceeded()

    def reader(self, stream: BinaryIO) -> BinaryIO:
        """``stream`` (decompressed), counted: a read past the limit raises."""
        return _Counted(stream, self)  # type: ignore[return-value]  # a forward reader (read, close) stands for a file


class _Counted:
    def __init__(self, stream: BinaryIO, budget: UnpackBudget) -> None:
        self._stream = stream
        self._budget = budget

    def read(self, n: int = -1) -> bytes:
        budget = self._budget
        if budget.limit is not None:
            room = budget.limit - budget.stream_bytes
            # one byte past the limit tells a stream that ends exactly there from one that goes on
            n = room + 1 if n is None or n < 0 else min(n, room + 1)
        data = self._stream.read(n)
        budget.stream_bytes += len(data)
        if budget.limit is not None and budget.stream_bytes > budget.limit:
            raise budget.exceeded()
        return data
