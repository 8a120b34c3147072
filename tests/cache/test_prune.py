"""du and prune: what goes, what stays (leases, references, parents), and the numbers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pybuild.cache import BlobRef, CacheRecord, Root, disk_usage, prune


def _layer(root: Root, key: str, parent: str | None = None, size: int = 20_000, last_used: float = 0.0) -> tuple[str, str]:
    """A cache record with a snapshot (of ``size`` bytes) and a blob; returns (snapshot, blob)."""
    active = root.snapshots.new_active()
    (active.upper / "data").write_bytes(os.urandom(size))
    snapshot = root.snapshots.commit(active, parent)
    blob = root.blobs.put(os.urandom(size // 2))
    root.index.record(
        key,
        CacheRecord(snapshot, None, {"gzip": BlobRef(blob, size // 2, "gz")}, last_used=last_used or time.time()),
    )
    return snapshot, blob


def test_disk_usage_counts_each_part(root: Root) -> None:
    empty = disk_usage(root)
    assert (empty.blobs, empty.snapshots, empty.cache_mounts, empty.reclaimable) == (0, 0, 0, 0)
    _layer(root, "k1", size=100_000)
    (root.cache_mount_dir("go") / "cache.bin").write_bytes(b"c" * 50_000)
    usage = disk_usage(root)
    assert usage.blobs == 50_000
    assert usage.snapshots >= 100_000
    assert usage.cache_mounts >= 50_000
    assert usage.reclaimable == usage.total
    assert disk_usage(root, referenced=lambda: {root.index.lookup("k1").snapshot_id}).reclaimable < usage.total


def test_prune_all_removes_records_snapshots_and_blobs(root: Root) -> None:
    s1, b1 = _layer(root, "k1")
    s2, b2 = _layer(root, "k2", parent=s1)
    (root.cache_mount_dir("npm") / "x").write_text("x")
    result = prune(root, all=True)
    assert (result.records, result.snapshots, result.blobs, result.cache_mounts) == (2, 2, 2, 1)
    assert result.freed > 40_000
    assert root.index.records() == [] and root.snapshots.list() == [] and list(root.blobs.list()) == []
    assert disk_usage(root).total == 0


def test_prune_keeps_leased_referenced_and_their_parents(root: Root) -> None:
    base, base_blob = _layer(root, "base")
    leased, leased_blob = _layer(root, "leased", parent=base)
    image, image_blob = _layer(root, "image")
    tagged_blob = root.blobs.put(b"manifest")
    root.index.set_tag("app:1", tagged_blob)
    gone, gone_blob = _layer(root, "gone")
    with root.index.lease([leased]):
        result = prune(root, all=True, referenced=lambda: {image_blob})
    assert result.records == 1 and result.snapshots == 1
    assert not root.snapshots.exists(gone) and not root.blobs.has(gone_blob)
    assert root.snapshots.exists(leased) and root.snapshots.exists(base), "a leased snapshot keeps its parents"
    assert root.blobs.has(leased_blob) and root.blobs.has(image_blob) and root.blobs.has(tagged_blob)
    assert root.index.lookup("leased") is not None and root.index.lookup("image") is not None
    # the lease is over: everything unreferenced goes now
    prune(root, all=True, referenced=lambda: {image_blob})
    assert not root.snapshots.exists(leased) and not root.snapshots.exists(base)
    assert root.blobs.has(image_blob) and root.blobs.has(tagged_blob)


def test_prune_older_than_and_keep_storage(root: Root) -> None:
    now = time.time()
    _layer(root, "old", last_used=now - 7200)
    _layer(root, "older", last_used=now - 9000)
    _layer(root, "new", last_used=now)
    assert prune(root, older_than=3600).records == 2
    assert [k for k, _ in root.index.records()] == ["new"]

    _layer(root, "lru-1", last_used=now - 300, size=200_000)
    _layer(root, "lru-2", last_used=now - 200, size=200_000)
    usage = disk_usage(root)
    result = prune(root, keep_storage=usage.total - 1)
    assert result.records == 1
    assert root.index.lookup("lru-1") is None, "the least recently used goes first"
    assert root.index.lookup("lru-2") is not None and root.index.lookup("new") is not None


def test_default_prune_removes_only_broken_records_and_old_orphans(root: Root) -> None:
    kept, _ = _layer(root, "kept")
    broken, _ = _layer(root, "broken")
    os.unlink(root.snapshots.directory / broken / "meta.json")  # damaged by hand
    for b in root.index.lookup("broken").blobs.values():
        root.blobs.delete(b.digest)
    fresh_orphan = root.blobs.put(b"just written, not recorded yet")
    old_orphan = root.blobs.put(b"left over long ago")
    path = root.blobs.path(old_orphan)
    os.utime(path, (time.time() - 7200, time.time() - 7200))
    result = prune(root)
    assert result.records == 1 and root.index.lookup("broken") is None
    assert root.snapshots.exists(kept) and root.index.lookup("kept") is not None
    assert broken not in root.snapshots.list()
    assert root.blobs.has(fresh_orphan), "an orphan within the grace period stays"
    assert not root.blobs.has(old_orphan)


def test_prune_detaches_atomically_and_leaves_no_trash(root: Root) -> None:
    for i in range(5):
        _layer(root, f"k{i}")
    prune(root, all=True)
    tmp_contents = [p for p in (root.path / "tmp").rglob("*") if p.suffix != ".lock" and not p.is_dir()]
    assert tmp_contents == []


def test_prune_while_a_build_holds_a_lease_from_another_thread(root: Root) -> None:
    import threading

    snapshot, _ = _layer(root, "in-use")
    started, finish = threading.Event(), threading.Event()

    def build() -> None:
        with root.index.lease([snapshot]):
            started.set()
            finish.wait(10)

    worker = threading.Thread(target=build)
    worker.start()
    started.wait(10)
    try:
        prune(root, all=True)
        assert root.snapshots.exists(snapshot)
        assert (root.snapshots.tree(snapshot) / "data").exists()
    finally:
        finish.set()
        worker.join()
    prune(root, all=True)
    assert not root.snapshots.exists(snapshot)


def test_prune_result_counts_match_what_disappeared(root: Root, tmp_path: Path) -> None:
    for i in range(3):
        _layer(root, f"k{i}")
    before = disk_usage(root)
    result = prune(root, all=True)
    after = disk_usage(root)
    assert after.total == 0
    assert result.freed == before.total


def test_prune_keeps_a_snapshot_committed_while_it_runs_even_if_a_pruned_record_names_it(root: Root) -> None:
    # a record whose snapshot was lost: a build is making it again under the same id
    old, _ = _layer(root, "step")
    root.snapshots.remove(old)

    def referenced() -> set[str]:
        # prune has started; the build commits the snapshot now, before recording it again
        active = root.snapshots.new_active()
        (active.upper / "data").write_text("made again")
        root.snapshots.commit(active, None, snapshot_id=old)
        return set()

    prune(root, all=True, referenced=referenced)
    assert root.index.lookup("step") is None  # the record went
    assert root.snapshots.exists(old), "the snapshot made while prune ran stays"
    assert (root.snapshots.tree(old) / "data").read_text() == "made again"

