"""Content digests as REAPI names them: the SHA-256 of a blob (lowercase hex) and its size."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, order=True)
class Digest:
    """A blob's SHA-256 (lowercase hex, no ``sha256:`` prefix) and its size in bytes."""

    hash: str
    size_bytes: int

    def __post_init__(self) -> None:
        if not _HEX64.fullmatch(self.hash) or self.size_bytes < 0:
            raise ValueError(f"not a SHA-256 digest: {self.hash!r}/{self.size_bytes}")

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls(hashlib.sha256(data).hexdigest(), len(data))

    @classmethod
    def of_file(cls, path: str | os.PathLike[str]) -> Digest:
        """The digest of a file's bytes, read in chunks (hashlib's C loop, no per-chunk Python)."""
        with open(path, "rb") as file:
            hashed = hashlib.file_digest(file, "sha256")
            size = file.tell()
        return cls(hashed.hexdigest(), size)

    def __str__(self) -> str:
        return f"{self.hash}/{self.size_bytes}"


def is_sha256_hex(text: str) -> bool:
    return _HEX64.fullmatch(text) is not None


EMPTY = Digest.of(b"")
