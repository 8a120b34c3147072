"""Image records and tags kept beside the index, one small file each.

The index (SQLite) is the place images and tags are looked up; these files
are its copy that survives the index: if ``index.db`` is lost, emptied or
damaged, the root's images and tags are rebuilt from them (``_recover``).

    <root>/records/images/<hex>.json   {"digest", "created", "size", "meta"}
    <root>/records/tags/<hash>.json    {"name", "digest", "updated"}

A file is written to a temp name and renamed, inside the index transaction
that makes the same change, so files and rows change in the same order
across processes.  Reading skips a file that is not a whole record.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any


class ImageJournal:
    def __init__(self, directory: Path) -> None:
        self.images_dir = Path(directory) / "images"
        self.tags_dir = Path(directory) / "tags"

    @staticmethod
    def _image_name(digest: str) -> str:
        return digest.split(":", 1)[-1] + ".json"

    @staticmethod
    def _tag_name(name: str) -> str:
        return hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:40] + ".json"

    def _write(self, directory: Path, name: str, value: dict[str, Any]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / f".{name}.{os.getpid()}-{secrets.token_hex(4)}"
        with open(temp, "w") as f:
            json.dump(value, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temp, directory / name)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def put_image(self, digest: str, created: float, size: int, meta: dict[str, Any]) -> None:
        self._write(self.images_dir, self._image_name(digest), {"digest": digest, "created": created, "size": size, "meta": meta})

    def delete_image(self, digest: str) -> None:
        self._remove(self.images_dir / self._image_name(digest))

    def set_tag(self, name: str, digest: str, updated: float) -> None:
        self._write(self.tags_dir, self._tag_name(name), {"name": name, "digest": digest, "updated": updated})

    def delete_tag(self, name: str) -> None:
        self._remove(self.tags_dir / self._tag_name(name))

    @staticmethod
    def _names(directory: Path) -> list[str]:
        try:
            return [n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith(".")]
        except FileNotFoundError:
            return []

    def counts(self) -> tuple[int, int]:
        """How many image and tag files there are (cheap: two directory listings)."""
        return len(self._names(self.images_dir)), len(self._names(self.tags_dir))

    @staticmethod
    def _read(path: Path, fields: tuple[str, ...]) -> dict[str, Any] | None:
        try:
            with open(path) as f:
                value = json.load(f)
        except (OSError, ValueError):
            return None
        if not isinstance(value, dict) or any(k not in value for k in fields):
            return None
        return value

    def images(self) -> list[dict[str, Any]]:
        found = (self._read(self.images_dir / n, ("digest", "created", "size", "meta")) for n in self._names(self.images_dir))
        return [v for v in found if v is not None]

    def tags(self) -> list[dict[str, Any]]:
        found = (self._read(self.tags_dir / n, ("name", "digest", "updated")) for n in self._names(self.tags_dir))
        return [v for v in found if v is not None]
