"""The conformance checks, against the real implementations and the fakes."""

from __future__ import annotations

import os
from pathlib import Path

from pybuild.cache import (
    CacheIndex,
    ContentStore,
    DirSnapshotter,
    MemoryContentStore,
    Root,
    check_cache_index,
    check_content_store,
    check_snapshotter,
)


def _overwrite_blob(store: ContentStore, digest: str, data: bytes) -> None:
    path = store.path(digest)
    assert path is not None
    path.write_bytes(data)


def test_file_content_store(tmp_path: Path) -> None:
    counter = iter(range(100))
    check_content_store(lambda: Root.open(tmp_path / f"r{next(counter)}").blobs, corrupt=_overwrite_blob)


def test_memory_content_store() -> None:
    check_content_store(MemoryContentStore, corrupt=lambda store, digest, data: store.corrupt(digest, data))


def test_dir_snapshotter_in_a_root(tmp_path: Path) -> None:
    counter = iter(range(100))
    check_snapshotter(lambda: Root.open(tmp_path / f"r{next(counter)}").snapshots)


def test_dir_snapshotter_standalone(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    check_snapshotter(lambda: DirSnapshotter(tmp_path / "snaps", lambda: staging))
    assert os.listdir(staging) == [], "nothing is left in staging"


def test_sqlite_index(tmp_path: Path) -> None:
    check_cache_index(lambda: CacheIndex(tmp_path / "index.db"))


def test_memory_index() -> None:
    check_cache_index(CacheIndex.memory)
