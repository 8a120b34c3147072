"""The files the fast path verifies by content reach the context hasher's stat cache.

After a ``touch`` of every file the fast path answers by reading each one; the next
build with one file changed must then read that file only, not all of them again
(the context benchmark's "one file changed after touching every file").  Only stat
keys the hasher's racy rule would trust are handed over.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from pathlib import Path

import pytest

from pybuild.cache import CacheIndex, ContextHasher
from pybuild.cache._context import settled_before
from pybuild.cli import _fastpath

from .test_fastpath import HIT, base_root, build, first_build, project, root  # noqa: F401 - fixtures

MS = 1_000_000


def _hashed_after_one_change(root: Path, context: Path) -> tuple[int, int, str]:
    """Files and bytes a hasher on the root's index reads after ``src/a.txt`` changed, and its digest."""
    (context / "src" / "a.txt").write_text("a changed\n")
    index = CacheIndex(root / "index.db")
    try:
        selection = ContextHasher(context, stat_cache=index).select(["src"])
        return selection.stats.files_hashed, selection.stats.bytes_hashed, selection.digest()
    finally:
        index.close()


@pytest.mark.usefixtures("require_root")
def test_after_a_touch_answered_by_content_only_the_changed_file_is_read(root: Path, project: Path) -> None:
    image = first_build(root, project)
    for path in project.rglob("*.txt"):
        path.touch()
    time.sleep(0.1)  # past the racy window of a nanosecond file system: the new keys can be trusted
    answered_image, hit, _ = build(root, project)
    assert hit and answered_image == image
    files, size, digest = _hashed_after_one_change(root, project)
    assert (files, size) == (1, len("a changed\n"))
    assert digest == ContextHasher(project).select(["src"]).digest()  # the same as reading everything


def _suspect(path: Path, recorded: os.stat_result) -> tuple[bytes, tuple[int, ...], tuple[int, ...], bytes]:
    now = _fastpath.signature(os.lstat(path))
    digest = bytes([_fastpath.FILE]) + hashlib.sha256(path.read_bytes()).digest()
    return os.fsencode(path), _fastpath.signature(recorded), now, digest


def _verified(path: Path, started: int) -> list[tuple[tuple[int, ...], bytes]]:
    rows: list[tuple[tuple[int, int, int, int, int], bytes]] = []
    listings = _fastpath.Listings(b"", b"", b"")
    _fastpath._verify([_suspect(path, os.lstat(path))], listings, _fastpath.Settled(started), rows)
    return list(rows)


def test_a_file_verified_long_after_its_change_is_handed_over(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(b"content")
    st = os.stat(path)
    rows = _verified(path, st.st_ctime_ns + 2_000 * MS)
    assert rows == [((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), hashlib.sha256(b"content").digest())]


def test_a_racy_file_is_verified_but_not_handed_over(tmp_path: Path) -> None:
    """Changed within the racy window of the read: a later write in the same clock tick could keep
    its stat key, so the next build must read it again."""
    path = tmp_path / "f.bin"
    path.write_bytes(b"content")
    ctime = os.stat(path).st_ctime_ns
    assert _verified(path, ctime + 10 * MS) == []
    assert _verified(path, ctime) == []


def test_the_settled_rule_is_the_hashers() -> None:
    since = 1_700_000_000_123_456_789
    settled = _fastpath.Settled(since)
    rng = random.Random(18)
    for _ in range(5_000):
        ctime = since - rng.randrange(-100 * MS, 3_000 * MS)
        if rng.random() < 0.5:
            ctime -= ctime % MS  # whole milliseconds: a coarse file system
        assert settled(ctime) == settled_before(ctime, since - 1_000 * MS, since - 50 * MS), ctime


def test_no_index_is_made_where_there_is_none(tmp_path: Path) -> None:
    _fastpath.remember_digests(str(tmp_path), [((1, 2, 3, 4, 5), b"\0" * 32)])
    assert list(tmp_path.iterdir()) == []


def test_the_rows_are_the_hashers_own(tmp_path: Path) -> None:
    index = CacheIndex(tmp_path / "index.db")
    index.close()
    path = tmp_path / "f.bin"
    path.write_bytes(b"some bytes")
    st = os.stat(path)
    _fastpath.remember_digests(str(tmp_path), [((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), hashlib.sha256(b"some bytes").digest())])
    index = CacheIndex(tmp_path / "index.db")
    try:
        hasher = ContextHasher(tmp_path, stat_cache=index, racy_window=0, fine_racy_window=0)
        selection = hasher.select(["f.bin"])
        assert selection.stats.files_hashed == 0 and selection.stats.stat_cache_hits == 1
        assert selection.digest() == ContextHasher(tmp_path).select(["f.bin"]).digest()
    finally:
        index.close()


def test_a_locked_index_does_not_hold_up_the_answer(tmp_path: Path) -> None:
    """Another build holding the index's write lock: the hand-over gives up (writing
    nothing) instead of waiting for it, since the fast path's answer is printed already."""
    import sqlite3
    import threading

    CacheIndex(tmp_path / "index.db").close()
    path = tmp_path / "f.bin"
    path.write_bytes(b"some bytes")
    st = os.stat(path)
    row = ((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), hashlib.sha256(b"some bytes").digest())
    holder = sqlite3.connect(tmp_path / "index.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        done = threading.Event()
        thread = threading.Thread(target=lambda: (_fastpath.remember_digests(str(tmp_path), [row]), done.set()), daemon=True)
        thread.start()
        thread.join(20)  # the index's own busy timeout is 60 s
        assert done.is_set(), "remember_digests waited for the write lock"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    index = CacheIndex(tmp_path / "index.db")
    try:
        selection = ContextHasher(tmp_path, stat_cache=index, racy_window=0, fine_racy_window=0).select(["f.bin"])
        assert selection.stats.stat_cache_hits == 0 and selection.stats.files_hashed == 1
    finally:
        index.close()
