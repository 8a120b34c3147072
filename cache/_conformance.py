"""Conformance checks for the storage seams, run against real and fake alike.

Each ``check_…`` takes a factory for a fresh, empty instance, exercises the
behaviour callers rely on, and raises AssertionError naming what failed.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable

from pybuild.errors import CorruptContent, NotFound, StoreError

from ._content import ContentStore
from ._index import BlobRef, CacheIndex, CacheRecord
from ._snapshots import Snapshotter


def _expect(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(what)


def _raises(exc_type: type[BaseException], what: str, fn: Callable[[], object]) -> BaseException:
    try:
        fn()
    except exc_type as error:
        return error
    raise AssertionError(f"{what}: expected {exc_type.__name__}")


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_content_store(
    make_store: Callable[[], ContentStore],
    *,
    corrupt: Callable[[ContentStore, str, bytes], None] | None = None,
) -> None:
    """Behaviour every ContentStore must have.

    ``corrupt(store, digest, data)`` replaces a stored blob's bytes behind
    the store's back, to check that verification notices.
    """
    store = make_store()
    missing = _digest(b"missing")
    _expect(isinstance(store, ContentStore), "implements the ContentStore protocol")
    _expect(list(store.list()) == [], "a new store is empty")
    _expect(not store.has(missing) and store.size(missing) is None, "absent blobs are absent")
    _raises(NotFound, "opening an absent blob", lambda: store.open(missing))
    _raises(StoreError, "a malformed digest", lambda: store.has("sha256:xyz"))
    _raises(StoreError, "a digest naming a path", lambda: store.has("sha256:../../etc/passwd"))

    data = b"hello, blob\n" * 1000
    digest = store.put(data)
    _expect(digest == _digest(data), "put returns sha256:<hex> of the bytes")
    _expect(store.has(digest) and store.size(digest) == len(data), "a put blob is there with its size")
    with store.open(digest) as f:
        _expect(f.read() == data, "open reads back the bytes")
    with store.open(digest, verify=True) as f:
        _expect(f.read() == data, "verified open reads back the bytes")
    _expect(store.verify(digest), "verify accepts intact content")
    _expect(store.put(data) == digest and list(store.list()) == [(digest, len(data))], "put is idempotent")

    # writers: streaming, expectations, discarding
    parts = [b"a" * 70000, b"b" * 3, b"", b"c" * 1000]
    whole = b"".join(parts)
    with store.writer(expected_digest=_digest(whole), expected_size=len(whole)) as w:
        for part in parts:
            w.write(part)
        _expect(w.written_digest() == _digest(whole), "a writer tells the digest of what it was given")
        _expect(w.commit() == _digest(whole), "a writer commits what was written")
    _expect(store.has(_digest(whole)), "a committed writer's blob is there")

    with store.writer() as w:
        w.write(b"never committed")
    _expect(not store.has(_digest(b"never committed")), "a writer that is not committed stores nothing")

    def wrong_digest() -> None:
        with store.writer(expected_digest=_digest(b"something else")) as w:
            w.write(b"actual bytes")
            w.commit()

    _raises(CorruptContent, "a digest mismatch at commit", wrong_digest)
    _expect(not store.has(_digest(b"actual bytes")), "a mismatching blob is not kept")

    def too_short() -> None:
        with store.writer(expected_size=10) as w:
            w.write(b"short")
            w.commit()

    _raises(CorruptContent, "fewer bytes than expected", too_short)

    def too_long() -> None:
        with store.writer(expected_size=3) as w:
            w.write(b"too long")

    _raises(CorruptContent, "more bytes than expected", too_long)
    _expect(not store.has(_digest(b"short")) and not store.has(_digest(b"too long")), "wrong sizes are not kept")

    # concurrent writers of the same blob
    shared = os.urandom(1 << 16)
    errors: list[BaseException] = []

    def write_shared() -> None:
        try:
            with store.writer(expected_digest=_digest(shared)) as w:
                for i in range(0, len(shared), 4096):
                    w.write(shared[i : i + 4096])
                w.commit()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write_shared) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _expect(not errors, f"concurrent writers of one blob all succeed: {errors!r}")
    _expect(store.verify(_digest(shared)), "a blob written concurrently is intact")

    # listing and deleting
    listed = dict(store.list())
    _expect(set(listed) == {digest, _digest(whole), _digest(shared)}, "list names every blob once")
    _expect(listed[digest] == len(data), "list gives sizes")
    _expect(store.delete(_digest(whole)) and not store.has(_digest(whole)), "delete removes a blob")
    _expect(not store.delete(_digest(whole)), "deleting an absent blob reports False")

    # corruption
    if corrupt is not None:
        corrupt(store, digest, data[:-1] + b"X")
        _expect(not store.verify(digest), "verify notices a flipped byte")

        def read_verified() -> None:
            with store.open(digest, verify=True) as f:
                f.read()

        _raises(CorruptContent, "a verified read of a flipped byte", read_verified)
        corrupt(store, digest, data[: len(data) // 2])
        _expect(not store.verify(digest), "verify notices truncation")
        _raises(CorruptContent, "a verified read of a truncated blob", read_verified)


def check_snapshotter(make_snapshotter: Callable[[], Snapshotter]) -> None:
    """Behaviour every Snapshotter must have."""
    snaps = make_snapshotter()
    _expect(isinstance(snaps, Snapshotter), "implements the Snapshotter protocol")
    _expect(snaps.list() == [], "a new snapshotter is empty")
    _expect(not snaps.exists("nothing"), "an unknown id does not exist")
    _raises(StoreError, "the tree of an unknown id", lambda: snaps.tree("nothing"))
    _raises(StoreError, "an id that is a path", lambda: snaps.tree("../escape"))

    base_active = snaps.new_active()
    _expect(base_active.upper.is_dir() and not any(base_active.upper.iterdir()), "a new upper dir is empty")
    _expect(base_active.work.is_dir(), "an active snapshot has a work dir")
    _expect(
        os.stat(base_active.upper).st_dev == os.stat(base_active.work).st_dev, "upper and work share a file system"
    )
    (base_active.upper / "etc").mkdir()
    (base_active.upper / "etc" / "os-release").write_text("ID=test\n")
    os.symlink("etc/os-release", base_active.upper / "link")
    os.chmod(base_active.upper / "etc", 0o750)
    base = snaps.commit(base_active, None)
    _expect(snaps.exists(base), "a committed snapshot exists")
    tree = snaps.tree(base)
    _expect((tree / "etc" / "os-release").read_text() == "ID=test\n", "the tree holds what was written")
    _expect(os.readlink(tree / "link") == "etc/os-release", "symlinks are kept as they were")
    _expect(stat.S_IMODE(os.stat(tree / "etc").st_mode) == 0o750, "modes are kept")
    _expect(snaps.chain(base) == (base,), "a base snapshot's chain is itself")
    _expect(not base_active.upper.exists(), "the upper dir was moved, not copied")

    child_active = snaps.new_active()
    (child_active.upper / "app").write_text("app\n")
    child = snaps.commit(child_active, base, "child-1")
    _expect(child == "child-1", "commit uses the id it is given")
    _expect(snaps.chain(child) == ("child-1", base), "a chain runs from the top down to the base")
    _expect(set(snaps.list()) == {base, child}, "list names every snapshot")
    _expect(snaps.size(child) > 0, "a non-empty snapshot has a size")

    # the same id committed again (another build got there first)
    again = snaps.new_active()
    (again.upper / "app").write_text("other\n")
    _expect(snaps.commit(again, base, "child-1") == "child-1", "committing an existing id returns it")
    _expect((snaps.tree("child-1") / "app").read_text() == "app\n", "the first commit of an id wins")
    _expect(not again.base.exists(), "the losing commit's files are removed")

    dropped = snaps.new_active()
    (dropped.upper / "x").write_text("x")
    snaps.discard(dropped)
    _expect(not dropped.base.exists(), "discard removes an active snapshot")

    missing_parent = snaps.new_active()
    _raises(StoreError, "a commit on a missing parent", lambda: snaps.commit(missing_parent, "no-such-parent"))
    snaps.discard(missing_parent)

    _expect(snaps.remove(base), "remove reports a removed snapshot")
    _expect(not snaps.exists(base), "a removed snapshot does not exist")
    _expect(not snaps.exists(child), "a snapshot whose parent is gone is not usable")
    _raises(StoreError, "the chain of a snapshot with a missing parent", lambda: snaps.chain(child))
    _expect(not snaps.remove(base), "removing twice reports False")

    # commits left to one write-out at the end (a build's): usable at once, and after it
    if snaps.defer_durability():
        _expect(snaps.durability_deferred(), "a deferral is in force once asked for")
        deferred_active = snaps.new_active()
        (deferred_active.upper / "late").write_text("late\n")
        deferred = snaps.commit(deferred_active, None)
        _expect(snaps.exists(deferred), "a snapshot committed unsynced is usable in its boot")
        _expect(snaps.settle() is None, "settling a healthy disk reports nothing")
        _expect(not snaps.durability_deferred(), "settling ends the deferral")
        _expect((snaps.tree(deferred) / "late").read_text() == "late\n", "a settled snapshot keeps its tree")
    _expect(snaps.settle() is None, "settling with nothing deferred does nothing")


def check_cache_index(make_index: Callable[[], CacheIndex]) -> None:
    """Behaviour every cache index must have."""
    index = make_index()
    try:
        _check_index(index)
    finally:
        index.close()


def _check_index(index: CacheIndex) -> None:
    # records
    _expect(index.lookup("k1") is None, "an unknown key has no record")
    gz = BlobRef(_digest(b"gz"), 10, "application/vnd.oci.image.layer.v1.tar+gzip")
    index.record("k1", CacheRecord("snap-1", None, {"gzip": gz}, meta={"description": "RUN make"}))
    rec = index.lookup("k1")
    _expect(rec is not None and rec.snapshot_id == "snap-1", "a recorded key resolves to its snapshot")
    assert rec is not None
    _expect(rec.blobs == {"gzip": gz}, "a record keeps its blobs")
    _expect(rec.meta == {"description": "RUN make"}, "a record keeps its metadata")
    _expect(rec.created > 0 and rec.last_used >= rec.created, "times default to now")
    zst = BlobRef(_digest(b"zst"), 8, "application/vnd.oci.image.layer.v1.tar+zstd")
    _expect(index.add_blob("k1", "zstd", zst), "add_blob on a record succeeds")
    _expect(not index.add_blob("nope", "zstd", zst), "add_blob on an unknown key reports False")
    _expect(index.set_diff_id("k1", _digest(b"diff")), "set_diff_id on a record succeeds")
    rec = index.lookup("k1")
    assert rec is not None
    _expect(rec.blobs == {"gzip": gz, "zstd": zst} and rec.diff_id == _digest(b"diff"), "updates are kept")
    old_used = rec.last_used
    time.sleep(0.01)
    _expect(index.touch("k1"), "touch on a record succeeds")
    rec2 = index.lookup("k1")
    assert rec2 is not None
    _expect(rec2.last_used > old_used, "touch moves last_used forward")
    index.record("k1", CacheRecord("snap-2"))
    rec3 = index.lookup("k1")
    assert rec3 is not None
    _expect(rec3.snapshot_id == "snap-2" and rec3.blobs == {}, "record replaces a record with its blobs")
    _expect([k for k, _ in index.records()] == ["k1"], "records lists every record")
    _expect(index.delete_record("k1") and index.lookup("k1") is None, "delete_record removes it")

    # step history
    _expect(index.previous_inputs("stage0/3") is None, "no history for a new step")
    index.remember_inputs("stage0/3", "key-a", {"src/main.py": "sha256:1", "src/util.py": "sha256:2"})
    index.remember_inputs("stage0/3", "key-b", {"src/main.py": "sha256:3"})
    _expect(
        index.previous_inputs("stage0/3") == ("key-b", {"src/main.py": "sha256:3"}), "the last inputs are remembered"
    )

    # tags and images
    d1, d2 = _digest(b"image-1"), _digest(b"image-2")
    _expect(index.set_tag("app:1", d1) is None, "a new tag had no previous digest")
    _expect(index.set_tag("app:1", d2) == d1, "re-tagging returns the previous digest")
    _expect(index.get_tag("app:1") == d2 and index.get_tag("other") is None, "get_tag reads tags")
    index.set_tag("app:latest", d2)
    _expect([(t.name, t.digest) for t in index.tags()] == [("app:1", d2), ("app:latest", d2)], "tags lists by name")
    _expect(index.delete_tag("app:1") == d2 and index.get_tag("app:1") is None, "delete_tag removes a tag")
    index.put_image(d2, size=1234, meta={"platform": "linux/amd64"})
    image = index.get_image(d2)
    _expect(image is not None and image.size == 1234 and image.meta == {"platform": "linux/amd64"}, "images are kept")
    _expect([i.digest for i in index.images()] == [d2], "images lists images")
    _expect(index.delete_image(d2) and index.get_image(d2) is None, "delete_image removes an image")

    # leases
    _expect(index.leased() == set(), "nothing is leased at first")
    with index.lease(["snap-1", d1]) as lease:
        _expect(index.leased() == {"snap-1", d1}, "a lease holds its resources")
        lease.add([d2])
        _expect(index.leased() == {"snap-1", d1, d2}, "a lease can grow")
        with index.lease(["snap-1"]):
            pass
        _expect("snap-1" in index.leased(), "releasing one lease leaves another's resources held")
    _expect(index.leased() == set(), "leases end with their with-block")

    # stat cache
    key = (2049, 1 << 63 | 5, 100, 1_700_000_000_000_000_000, 1_700_000_000_000_000_001)
    _expect(index.get_stat_digest(key) is None, "an unknown stat key has no digest")
    index.put_stat_digests([(key, _digest(b"content")), ((2049, 7, 1, 2, 3), _digest(b"x"))])
    _expect(index.get_stat_digest(key) == _digest(b"content"), "a stored stat key resolves (64-bit inode)")
    changed = (key[0], key[1], key[2], key[3], key[4] + 1)
    _expect(index.get_stat_digest(changed) is None, "a changed ctime misses")
    found = index.get_stat_digests([key, changed, (2049, 7, 1, 2, 3), (9, 9, 9, 9, 9)])
    _expect(found == {key: _digest(b"content"), (2049, 7, 1, 2, 3): _digest(b"x")}, "batch lookups find exact keys")
    index.put_stat_digests([(changed, _digest(b"new"))])
    _expect(index.get_stat_digest(key) is None, "a new stat for an inode replaces the old one")

    # thread safety: many threads writing and reading at once
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(20):
                index.record(f"t{n}-{i}", CacheRecord(f"s{n}-{i}"))
                rec = index.lookup(f"t{n}-{i}")
                if rec is None or rec.snapshot_id != f"s{n}-{i}":
                    raise AssertionError(f"lost record t{n}-{i}")
                index.put_stat_digests([((1, n * 100 + i, 1, 1, 1), _digest(b"%d" % i))])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _expect(not errors, f"concurrent use from threads works: {errors!r}")
    _expect(len(index.records()) == 120, "every thread's records are there")
