"""The index's generation file: rewritten by every delete of a cache record, an image or
a tag (what a fast-path record of a build relies on to see a prune or an rmi), by nothing else."""

from __future__ import annotations

from pathlib import Path

from pybuild.cache import CacheIndex, CacheRecord, Root


def _generation(index: CacheIndex) -> bytes | None:
    path = index.generation_file
    assert path is not None
    return path.read_bytes() if path.exists() else None


def test_deletes_rewrite_the_generation_and_other_writes_do_not(tmp_path: Path) -> None:
    root = Root.open(tmp_path / "root")
    index = root.index
    index.record("k1", CacheRecord("snap-1"))
    index.record("k1", CacheRecord("snap-2"))  # replaced: not a delete
    index.put_image("sha256:" + "a" * 64, size=1)
    index.set_tag("app:1", "sha256:" + "a" * 64)
    index.set_tag("app:1", "sha256:" + "a" * 64)
    with index.lease(["snap-2"]):
        pass
    index.put_stat_digests([((1, 2, 3, 4, 5), "sha256:" + "b" * 64)])
    index.put_selection_digest("sha256:" + "c" * 64, "sha256:" + "d" * 64)
    assert _generation(index) is None

    seen = set()
    for delete in (
        lambda: index.delete_record("k1"),
        lambda: index.delete_tag("app:1"),
        lambda: index.delete_image("sha256:" + "a" * 64),
    ):
        delete()
        generation = _generation(index)
        assert generation is not None and generation not in seen
        seen.add(generation)
    assert index.delete_record("missing") is False
    assert _generation(index) in seen and len(seen) == 3  # nothing deleted: the same generation


def test_a_raw_delete_in_a_write_transaction_is_seen_too(tmp_path: Path) -> None:
    """prune deletes records with its own SQL inside ``_write``: the triggers see it."""
    index = Root.open(tmp_path / "root").index
    index.record("k1", CacheRecord("snap-1"))
    with index._write() as c:
        c.execute("DELETE FROM cache_records WHERE key = ?", ("k1",))
    assert _generation(index) is not None


def test_an_in_memory_index_has_no_generation() -> None:
    index = CacheIndex.memory()
    index.record("k1", CacheRecord("snap-1"))
    assert index.delete_record("k1") and index.generation_file is None
