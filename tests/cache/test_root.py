"""The root: layout, temp areas, damaged state, blob and snapshot details."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
from pathlib import Path

import pytest

from pybuild.cache import BlobRef, CacheIndex, CacheRecord, Root, default_root_path
from pybuild.errors import CorruptContent, StoreError

from .conftest import run_child


def test_open_creates_the_layout(tmp_path: Path) -> None:
    with Root.open(tmp_path / "r") as root:
        for sub in ("blobs/sha256", "snapshots", "tmp", "cache-mounts"):
            assert (root.path / sub).is_dir()
        assert (root.path / "index.db").is_file()
        assert root.index is not None and root.blobs is not None and root.snapshots is not None
    # opening again is fine and keeps what was there
    with Root.open(tmp_path / "r") as root:
        digest = root.blobs.put(b"x")
    with Root.open(tmp_path / "r") as root:
        assert root.blobs.has(digest)


def test_default_root_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "env-root"))
    assert default_root_path() == tmp_path / "env-root"
    with Root.open() as root:
        assert root.path == tmp_path / "env-root"
    monkeypatch.delenv("PYBUILD_ROOT")
    expected = Path("/var/lib/pybuild") if os.geteuid() == 0 else None
    if expected is not None:
        assert default_root_path() == expected


def test_unusable_root_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError) as info:
        Root.open(blocker / "root")
    assert str(blocker) in str(info.value)


def test_tmp_dir_is_fresh_and_inside_the_root(root: Root) -> None:
    a, b = root.tmp_dir(), root.tmp_dir()
    assert a != b and a.is_dir() and b.is_dir() and not any(a.iterdir())
    assert root.path / "tmp" in a.parents


def test_cache_mount_dir_is_stable_and_confined(root: Root) -> None:
    path = root.cache_mount_dir("../../etc")
    assert path.parent == root.path / "cache-mounts" and path.is_dir()
    assert root.cache_mount_dir("../../etc") == path
    assert root.cache_mount_dir("go-build") != path


def test_failed_writes_leave_no_temp_files(root: Root) -> None:
    with pytest.raises(CorruptContent):
        with root.blobs.writer(expected_size=2) as w:
            w.write(b"abc")
    with pytest.raises(CorruptContent):
        with root.blobs.writer(expected_digest="sha256:" + "0" * 64) as w:
            w.write(b"abc")
            w.commit()
    with root.blobs.writer() as w:
        w.write(b"abandoned")
    area = [p for p in Root.temp_contents(root.path) if p.is_dir()]
    assert all(not any(p.iterdir()) for p in area)
    assert list(root.blobs.list()) == []


_HOLD_AREA = """
import sys, time
from pybuild.cache import Root
root = Root.open(sys.argv[1])
d = root.tmp_dir()
(d / "partial").write_bytes(b"half")
print(d, flush=True)
time.sleep(60)
"""


def test_stale_temp_areas_are_removed_live_ones_kept(tmp_path: Path) -> None:
    path = tmp_path / "r"
    Root.open(path).close()
    live = run_child(_HOLD_AREA, str(path), stdout=-1, text=True)
    dead = run_child(_HOLD_AREA, str(path), stdout=-1, text=True)
    try:
        live_dir = Path(live.stdout.readline().strip())
        dead_dir = Path(dead.stdout.readline().strip())
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        with Root.open(path):
            assert live_dir.exists(), "a live process's temp area is left alone"
            assert not dead_dir.exists(), "a dead process's temp area is removed"
            assert not dead_dir.parent.exists()
            assert not Path(f"{dead_dir.parent}.lock").exists()
        # debris without a lock file (its owner died before locking) goes too
        orphan = path / "tmp" / "p1-orphan"
        orphan.mkdir()
        (orphan / "x").write_text("x")
        Root.open(path).close()
        assert not orphan.exists()
    finally:
        live.kill()
        live.wait()
        live.stdout.close()
        dead.stdout.close()


def test_temp_area_is_removed_at_exit(tmp_path: Path) -> None:
    path = tmp_path / "r"
    child = run_child(_HOLD_AREA.replace("time.sleep(60)", ""), str(path), stdout=-1, text=True)
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0
    assert not Path(out.strip()).exists()
    assert Root.temp_contents(path) == []


def test_damaged_snapshot_is_detected(root: Root) -> None:
    active = root.snapshots.new_active()
    (active.upper / "f").write_text("f")
    snap = root.snapshots.commit(active, None)
    child_active = root.snapshots.new_active()
    child = root.snapshots.commit(child_active, snap)

    os.unlink(root.snapshots.directory / snap / "meta.json")
    assert not root.snapshots.exists(snap)
    assert not root.snapshots.exists(child), "a child of a damaged snapshot is not usable"
    with pytest.raises(StoreError) as info:
        root.snapshots.tree(snap)
    assert snap in str(info.value) and info.value.hint

    # committing the same id again replaces the debris
    again = root.snapshots.new_active()
    (again.upper / "f").write_text("again")
    assert root.snapshots.commit(again, None, snap) == snap
    assert (root.snapshots.tree(snap) / "f").read_text() == "again"
    assert root.snapshots.exists(child)


def test_snapshot_with_missing_tree_is_detected(root: Root) -> None:
    active = root.snapshots.new_active()
    snap = root.snapshots.commit(active, None)
    os.rmdir(root.snapshots.directory / snap / "tree")
    assert not root.snapshots.exists(snap)
    with pytest.raises(StoreError):
        root.snapshots.chain(snap)


def test_commit_keeps_overlay_whiteouts_and_opaque_dirs(root: Root, require_root: None) -> None:
    active = root.snapshots.new_active()
    os.mknod(active.upper / "deleted", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    (active.upper / "opaque").mkdir()
    os.setxattr(active.upper / "opaque", "trusted.overlay.opaque", b"y")
    inode = os.lstat(active.upper / "deleted").st_ino
    snap = root.snapshots.commit(active, None)
    tree = root.snapshots.tree(snap)
    st = os.lstat(tree / "deleted")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert st.st_ino == inode, "trees are moved, not copied"
    assert os.getxattr(tree / "opaque", "trusted.overlay.opaque") == b"y"


def test_usable_record_checks_what_it_points_at(root: Root) -> None:
    active = root.snapshots.new_active()
    snap = root.snapshots.commit(active, None)
    present = root.blobs.put(b"layer")
    absent = "sha256:" + "1" * 64
    root.index.record(
        "k",
        CacheRecord(snap, None, {"gzip": BlobRef(present, 5, "gz"), "zstd": BlobRef(absent, 5, "zst")}),
    )
    usable = root.usable_record("k")
    assert usable is not None and set(usable.blobs) == {"gzip"}
    root.snapshots.remove(snap)
    assert root.usable_record("k") is None
    assert root.usable_record("unknown") is None


def test_index_from_a_newer_pybuild_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    CacheIndex(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreError) as info:
        CacheIndex(path)
    assert "999" in str(info.value) and info.value.hint


def test_damaged_index_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "index.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as info:
        CacheIndex(path)
    assert "repair" in (info.value.hint or "")


def _big_blob(root: Root) -> tuple[str, Path]:
    data = os.urandom(Root.REMEMBERED_BLOB_SIZE + 1234)
    digest = root.blobs.put(data)
    path = root.blobs.path(digest)
    assert path is not None
    return digest, path


def test_an_intact_blob_is_checked_by_a_stat_after_it_is_stored(root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    digest, _ = _big_blob(root)
    monkeypatch.setattr(root.blobs, "verify", lambda digest: pytest.fail("hashed again"))
    assert root.blob_intact(digest, Root.REMEMBERED_BLOB_SIZE + 1234)
    assert root.blob_intact(digest)


def test_a_small_blob_is_hashed_once_then_known(root: Root) -> None:
    digest = root.blobs.put(b"small")
    calls = []
    original = root.blobs.verify
    root.blobs.verify = lambda d: calls.append(d) or original(d)  # type: ignore[method-assign]
    assert root.blob_intact(digest) and root.blob_intact(digest)
    assert calls == [digest]


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong-size"])
def test_a_damaged_blob_is_found_and_removed(root: Root, damage: str) -> None:
    digest, path = _big_blob(root)
    size = path.stat().st_size
    if damage == "flip":
        with open(path, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif damage == "truncate":
        os.truncate(path, size // 2)
    expected = size + 1 if damage == "wrong-size" else size
    assert not root.blob_intact(digest, expected)
    assert not root.blobs.has(digest)  # whoever asked makes or fetches it again
    assert not root.blob_intact(digest)


def _images_and_tags(root: Root) -> tuple[list[str], list[tuple[str, str]]]:
    return [i.digest for i in root.index.images()], [(t.name, t.digest) for t in root.index.tags()]


def test_a_root_from_before_image_records_were_files_gets_them_and_survives_losing_its_index(tmp_path: Path) -> None:
    path = tmp_path / "r"
    Root.open(path).close()
    old = CacheIndex(path / "index.db")  # as an older pybuild wrote it: rows only
    old.put_image("sha256:" + "a" * 64, size=1, meta={"manifest": "sha256:" + "b" * 64})
    old.set_tag("docker.io/library/app:1", "sha256:" + "a" * 64)
    old.close()
    messages: list[str] = []
    with Root.open(path, warn=messages.append) as root:
        kept = _images_and_tags(root)
    assert messages == []  # nothing was lost: the files are written quietly
    os.unlink(path / "index.db")
    with Root.open(path, warn=messages.append) as root:
        assert _images_and_tags(root) == kept
        assert root.restored_images == ["sha256:" + "a" * 64]
    assert len(messages) == 1 and "was missing" in messages[0] and "restored 1 images and 1 tags" in messages[0]


def test_removed_images_and_tags_do_not_come_back_with_a_rebuilt_index(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with Root.open(path) as root:
        root.blobs.put(b"data")
        for name in ("a", "b"):
            root.index.put_image(f"sha256:{name * 64}", size=1)
            root.index.set_tag(f"app:{name}", f"sha256:{name * 64}")
        root.index.delete_image("sha256:" + "a" * 64)
        root.index.delete_tag("app:a")
        root.index.set_tag("app:b", "sha256:" + "c" * 64)  # moved
    (path / "index.db").write_bytes(b"")
    messages: list[str] = []
    with Root.open(path, warn=messages.append) as root:
        assert _images_and_tags(root) == (["sha256:" + "b" * 64], [("app:b", "sha256:" + "c" * 64)])
    assert len(messages) == 1 and "empty (0 bytes)" in messages[0]
    assert list(path.glob("index.db.broken-*"))


def test_a_new_root_is_not_taken_for_a_lost_index(tmp_path: Path) -> None:
    messages: list[str] = []
    with Root.open(tmp_path / "r", warn=messages.append):
        pass
    (tmp_path / "r" / "index.db").unlink()  # nothing stored yet: simply made again
    with Root.open(tmp_path / "r", warn=messages.append):
        pass
    assert messages == []


def _dir_flags(path: Path) -> int:
    import fcntl
    import struct

    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, 0x80086601, bytes(4)))[0])
    finally:
        os.close(fd)


def test_the_temp_root_is_a_top_of_directory_hierarchies_on_ext4(tmp_path: Path) -> None:
    """chattr +T: each process area (where snapshots are made) is spread as a top-level directory."""
    try:
        _dir_flags(tmp_path)
    except OSError as error:
        pytest.skip(f"this file system has no inode flags: {error}")
    with Root.open(tmp_path / "r"):
        pass
    assert _dir_flags(tmp_path / "r" / "tmp") & 0x00020000


def test_a_file_system_without_inode_flags_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import fcntl

    def refuse(fd: int, request: int, arg: bytes = b"") -> bytes:
        raise OSError(errno.ENOTTY, "Inappropriate ioctl for device")

    monkeypatch.setattr(fcntl, "ioctl", refuse)
    with Root.open(tmp_path / "r") as root:
        assert (root.path / "tmp").is_dir()
