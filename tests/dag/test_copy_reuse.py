"""A COPY of the context that hard-links the unchanged files of its previous snapshot.

The tree it makes must be the very tree a full copy makes: same layer tar,
same diffID.  Each build here runs the real worker and file operations
(mount namespaces, overlayfs: root) on a ``FROM scratch`` image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore, Root
from pybuild.dag import BuildOptions, convert
from pybuild.dag import _copy_reuse
from pybuild.dag._build import step_ids
from pybuild.dag._fileops import CopyReport
from pybuild.dag._solver import Solver
from pybuild.dag._worker import Context, Worker
from pybuild.executors import FakeExecutor, NamespaceRootfsCaller
from pybuild.grammar import parse
from pybuild.oci._layers import write_layer

from .test_worker import Images

pytestmark = pytest.mark.usefixtures("require_root")


class _Sha:
    def __init__(self) -> None:
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)


def diff_id(tree: Path, mtime: int | None = None) -> str:
    """``mtime``: the clamp of rewrite-timestamp; the directory a copy makes gets the time its
    last entry was made (in any path), so only a clamp makes two copies into a new one equal."""
    sink = _Sha()
    write_layer(tree, sink, mtime=mtime)  # type: ignore[arg-type]  # it only writes
    return "sha256:" + sink.hash.hexdigest()


def make_context(context: Path) -> None:
    """Nested directories, odd modes, xattrs, a symlink, a hard-linked pair, empty files."""
    for d in range(3):
        for e in range(3):
            directory = context / "src" / f"d{d}" / f"e{e}"
            directory.mkdir(parents=True, exist_ok=True)
            for f in range(4):
                (directory / f"f{f}.txt").write_bytes(os.urandom(100 * f))
    (context / "src" / "top.txt").write_text("top\n")
    (context / "src" / "d0" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(context / "src" / "d0" / "run.sh", 0o4755)
    os.setxattr(context / "src" / "d1" / "e1" / "f1.txt", "user.origin", b"test")
    os.symlink("e0/f1.txt", context / "src" / "d2" / "link")
    os.link(context / "src" / "d2" / "e2" / "f3.txt", context / "src" / "d2" / "hard")
    (context / "src" / "d1" / "empty").mkdir()
    os.chmod(context / "src" / "d1" / "e0", 0o2750)
    for directory, _, _ in os.walk(context):  # times no build can make by accident
        os.utime(directory, ns=(3_000_000_000, 3_000_000_000))


class Builder:
    """One root; ``build`` runs the Dockerfile and returns the snapshot id of each step."""

    def __init__(self, path: Path, context: Path, *, classic: bool = False) -> None:
        self.classic = classic  # every file copied through the overlay, as before reuse existed
        path.parent.mkdir(parents=True, exist_ok=True)
        self.root = Root.open(path)
        self.context = context
        self.files = NamespaceRootfsCaller(state_dir=str(path.parent))

    async def build(self, dockerfile: str, **options: object) -> list[str]:
        images = Images()
        plan = convert(parse(dockerfile, "Dockerfile"), BuildOptions(**options), images)  # type: ignore[arg-type]
        worker = Worker(
            plan.definition, root=self.root, executor=FakeExecutor(), files=self.files, images=images,
            context=Context(self.context, ContextHasher(self.context, DockerIgnore(), self.root.index)),
            step_ids=step_ids(plan, "Dockerfile"),
        )
        if self.classic:
            worker._reported_copy = lambda digest, op: None  # type: ignore[method-assign]  # no report: no reuse, nothing deferred
        try:
            results = await Solver(plan.definition, worker).solve([plan.target.op])
        finally:
            worker.close()
        chain = results[plan.target.op].chain
        return list(reversed(chain))  # bottom first: one snapshot per step

    def tree(self, snapshot: str) -> Path:
        return self.root.snapshots.tree(snapshot)

    def close(self) -> None:
        self.files.close()
        self.root.close()


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[tuple[Builder, Path]]:
    """The root that builds again and again (and reuses), and the context."""
    context = tmp_path / "ctx"
    make_context(context)
    reusing = Builder(tmp_path / "reusing" / "root", context)
    yield reusing, context
    reusing.close()


def changed(path: Path, data: bytes) -> None:
    """New bytes, and a time no earlier build saw (a stat key the hasher cannot confuse)."""
    path.write_bytes(data)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))


async def full_copy(tmp_path: Path, context: Path, dockerfile: str, n: int, **options: object) -> str:
    builder = Builder(tmp_path / f"full{n}" / "root", context, classic=True)
    try:
        epoch = options.get("source_date_epoch")
        return diff_id(builder.tree((await builder.build(dockerfile, **options))[-1]), epoch if isinstance(epoch, int) else None)
    finally:
        builder.close()


COPY_TO_ROOT = "FROM scratch\nCOPY src/ /\n"  # the root exists: every entry's time is the context's


async def test_one_changed_file_links_the_rest_and_gives_the_same_layer(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    first = (await reusing.build(COPY_TO_ROOT))[-1]
    changed(context / "src" / "d1" / "e2" / "f3.txt", b"changed")
    second = (await reusing.build(COPY_TO_ROOT))[-1]
    assert second != first
    tree = reusing.tree(second)
    # unchanged files in the directories the copy made share the first tree's inodes
    assert os.stat(tree / "d0" / "e1" / "f2.txt").st_ino == os.stat(reusing.tree(first) / "d0" / "e1" / "f2.txt").st_ino
    assert os.stat(tree / "d1" / "e1" / "f1.txt").st_nlink == 2  # with its xattr
    assert (tree / "d1" / "e2" / "f3.txt").read_bytes() == b"changed"
    assert os.stat(tree / "d1" / "e2" / "f3.txt").st_nlink == 1
    assert os.stat(tree / "top.txt").st_nlink == 1  # the root directory was there: copied as before
    assert sorted(os.listdir(tree / "d1" / "empty")) == [] and os.stat(tree / "d1" / "e0").st_mode & 0o7777 == 0o2750
    assert diff_id(tree) == await full_copy(tmp_path, context, COPY_TO_ROOT, 1)


async def test_every_kind_of_change_gives_the_full_copys_layer(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    await reusing.build(COPY_TO_ROOT)
    src = context / "src"
    changed(src / "d0" / "e0" / "f1.txt", b"new bytes")
    os.chmod(src / "d0" / "e1" / "f1.txt", 0o600)  # mode
    os.utime(src / "d0" / "e2" / "f2.txt", ns=(5_000_000_000, 5_000_000_000))  # only the time
    os.setxattr(src / "d1" / "e0" / "f2.txt", "user.new", b"1")  # an xattr
    (src / "d1" / "e0" / "f0.txt").unlink()  # removed
    (src / "d2" / "e1" / "added.txt").write_text("added\n")  # added
    os.utime(src / "d2" / "e1", ns=(7_000_000_000, 7_000_000_000))
    second = (await reusing.build(COPY_TO_ROOT))[-1]
    tree = reusing.tree(second)
    assert os.stat(tree / "d0" / "e2" / "f2.txt").st_nlink == 1  # a new time is a new copy
    assert os.stat(tree / "d0" / "e2" / "f2.txt").st_mtime_ns == 5_000_000_000
    assert os.stat(tree / "d2" / "e0" / "f1.txt").st_nlink == 2
    assert diff_id(tree) == await full_copy(tmp_path, context, COPY_TO_ROOT, 2)


async def test_a_new_destination_directory_and_source_date_epoch(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    dockerfile = "FROM scratch\nCOPY --chmod=640 --chown=7:8 src/ /app/\n"
    await reusing.build(dockerfile, source_date_epoch=1_700_000_000)
    changed(context / "src" / "top.txt", b"changed top")
    second = (await reusing.build(dockerfile, source_date_epoch=1_700_000_000))[-1]
    tree = reusing.tree(second)
    assert os.stat(tree / "app" / "d2" / "e2" / "f1.txt").st_nlink == 2
    st = os.stat(tree / "app" / "d2" / "e2" / "f1.txt")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime) == (0o640, 7, 8, 1_700_000_000)
    assert diff_id(tree, 1_700_000_000) == await full_copy(tmp_path, context, dockerfile, 3, source_date_epoch=1_700_000_000)


async def test_a_first_copy_leaves_files_and_directories_to_the_worker_with_the_same_result(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    for dockerfile, options in ((COPY_TO_ROOT, {}), ("FROM scratch\nCOPY --chown=3:4 src/ /new/dir/\n", {"source_date_epoch": 1_600_000_000})):
        fresh = Builder(tmp_path / f"fresh-{len(options)}" / "root", context)
        try:
            tree = fresh.tree((await fresh.build(dockerfile, **options))[-1])
            assert diff_id(tree, options.get("source_date_epoch")) == await full_copy(tmp_path, context, dockerfile, 5 + len(options), **options)
        finally:
            fresh.close()


async def test_another_chmod_is_a_full_copy(roots) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    await reusing.build("FROM scratch\nCOPY --chmod=640 src/ /\n")
    changed(context / "src" / "top.txt", b"changed top")
    tree = reusing.tree((await reusing.build("FROM scratch\nCOPY --chmod=600 src/ /\n"))[-1])
    assert os.stat(tree / "d0" / "e0" / "f1.txt").st_mode & 0o777 == 0o600  # different op: nothing to reuse
    assert os.stat(tree / "d0" / "e0" / "f1.txt").st_nlink == 1


async def test_a_damaged_earlier_tree_is_not_reused(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    first = (await reusing.build(COPY_TO_ROOT))[-1]
    os.chmod(reusing.tree(first) / "d2" / "e0" / "f1.txt", 0o777)  # not what its manifest says
    changed(context / "src" / "top.txt", b"changed top")
    tree = reusing.tree((await reusing.build(COPY_TO_ROOT))[-1])
    assert os.stat(tree / "d2" / "e0" / "f1.txt").st_nlink == 1  # everything was copied again
    assert os.stat(tree / "d2" / "e0" / "f1.txt").st_mode & 0o777 == 0o644
    assert diff_id(tree) == await full_copy(tmp_path, context, COPY_TO_ROOT, 4)


async def test_a_damaged_manifest_is_no_reuse(roots) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    first = (await reusing.build(COPY_TO_ROOT))[-1]
    manifest = reusing.root.snapshots.directory / first / _copy_reuse.MANIFEST
    manifest.write_bytes(manifest.read_bytes()[:-10])
    changed(context / "src" / "top.txt", b"changed top")
    tree = reusing.tree((await reusing.build(COPY_TO_ROOT))[-1])
    assert os.stat(tree / "d0" / "e0" / "f1.txt").st_nlink == 1


async def test_a_later_step_writing_a_linked_file_leaves_both_snapshots_alone(roots) -> None:  # type: ignore[no-untyped-def]
    reusing, context = roots
    (context / "over").mkdir()
    (context / "over" / "f2.txt").write_text("overwritten\n")
    dockerfile = "FROM scratch\nCOPY src/ /\nCOPY over/f2.txt /d0/e0/f2.txt\n"
    first = await reusing.build(dockerfile)
    before = (reusing.tree(first[0]) / "d0" / "e0" / "f2.txt").read_bytes()
    changed(context / "src" / "top.txt", b"changed top")
    second = await reusing.build(dockerfile)
    linked = reusing.tree(second[0]) / "d0" / "e0" / "f2.txt"
    assert os.stat(linked).st_nlink == 2
    assert linked.read_bytes() == before == (reusing.tree(first[0]) / "d0" / "e0" / "f2.txt").read_bytes()
    assert (reusing.tree(second[1]) / "d0" / "e0" / "f2.txt").read_text() == "overwritten\n"


def linked(tree: Path) -> set[str]:
    """The regular files of ``tree`` that share their inode with another path."""
    return {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and not p.is_symlink() and os.stat(p).st_nlink > 1}


async def test_a_no_cache_build_is_reused_by_the_next_one(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The context benchmark's cold build runs with --no-cache: its snapshot (a random id) is
    still the one the next build of the step reuses."""
    reusing, context = roots
    first = (await reusing.build(COPY_TO_ROOT, no_cache=True))[-1]
    changed(context / "src" / "d2" / "e1" / "f2.txt", b"changed after a no-cache build")
    tree = reusing.tree((await reusing.build(COPY_TO_ROOT))[-1])
    files = {str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and not p.is_symlink()}
    assert files - linked(tree) == {"d2/e1/f2.txt", "top.txt"}  # the changed file, and one in the root, which was there
    assert os.stat(tree / "d0" / "e0" / "f1.txt").st_ino == os.stat(reusing.tree(first) / "d0" / "e0" / "f1.txt").st_ino
    assert diff_id(tree) == await full_copy(tmp_path, context, COPY_TO_ROOT, 8)


async def test_a_touch_of_every_file_then_one_change_copies_every_file_anew(roots, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The context benchmark's "one file changed" follows a touch of every file: the touched
    build is a cache hit (times are no part of the key), but COPY keeps each file's time, so
    the next copy gives every file its new time and cannot share one inode with the earlier
    tree; the one after that, with nothing touched, links them again."""
    reusing, context = roots
    await reusing.build(COPY_TO_ROOT)
    for path in (context / "src").rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, ns=(9_000_000_000, 9_000_000_000))
    touched = (await reusing.build(COPY_TO_ROOT))[-1]
    changed(context / "src" / "d1" / "e2" / "f3.txt", b"changed after the touch")
    after_touch = (await reusing.build(COPY_TO_ROOT))[-1]
    tree = reusing.tree(after_touch)
    assert linked(tree) == linked(reusing.tree(touched)) == {"d2/hard", "d2/e2/f3.txt"}  # the context's own pair, only
    assert os.stat(tree / "d0" / "e1" / "f2.txt").st_mtime_ns == 9_000_000_000
    assert diff_id(tree) == await full_copy(tmp_path, context, COPY_TO_ROOT, 9)
    changed(context / "src" / "d1" / "e2" / "f2.txt", b"and one more")
    again = reusing.tree((await reusing.build(COPY_TO_ROOT))[-1])
    assert os.stat(again / "d0" / "e1" / "f2.txt").st_ino == os.stat(tree / "d0" / "e1" / "f2.txt").st_ino
    assert diff_id(again) == await full_copy(tmp_path, context, COPY_TO_ROOT, 10)


async def test_what_a_copy_writes_after_its_overlay_is_synced_before_the_commit(roots, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The unmount of a step's overlay syncs the file system of its files; the files a copy
    writes after it (all of a first copy, the changed ones of a reuse) get their own syncfs,
    before the snapshot is committed, unless volatile overlays were asked for."""
    reusing, context = roots
    synced: list[tuple[Path, set[str]]] = []  # the path synced, the snapshots committed then
    real = _copy_reuse.sync_file_system

    def sync(path: Path) -> None:
        synced.append((path, set(os.listdir(reusing.root.snapshots.directory))))
        real(path)

    monkeypatch.setattr(_copy_reuse, "sync_file_system", sync)
    first = (await reusing.build(COPY_TO_ROOT))[-1]
    assert len(synced) == 1 and first not in synced[0][1]  # synced before its commit
    assert synced[0][0].name == "upper" and not synced[0][0].exists()  # the active upper dir, moved by the commit
    changed(context / "src" / "top.txt", b"changed top")
    await reusing.build(COPY_TO_ROOT)
    assert len(synced) == 2
    monkeypatch.setenv("PYBUILD_VOLATILE_OVERLAYS", "1")
    changed(context / "src" / "top.txt", b"changed again")
    await reusing.build(COPY_TO_ROOT)
    assert len(synced) == 2


def test_a_file_system_is_synced_and_a_missing_path_is_an_error(tmp_path: Path) -> None:
    _copy_reuse.sync_file_system(tmp_path)
    with pytest.raises(FileNotFoundError):
        _copy_reuse.sync_file_system(tmp_path / "missing")


# ---------------------------------------------------------------- the manifest and the links


def test_a_manifest_reads_back_what_was_written_and_nothing_malformed() -> None:
    report = CopyReport({"a": ("/a", 0o644, 0, 0, 1, 2), "b/c\n d": ("/x/c\n d", 0o600, 1, 2, -3, 4), "gone": ("/g", 0, 0, 0, 0, 0)}, ())
    data = _copy_reuse.manifest(report, {"a": "sha256:1", "b/c\n d": "sha256:2", "other": "sha256:3"})
    rows = _copy_reuse._read_manifest(data)
    assert rows == {"a": ("sha256:1", ("/a", 0o644, 0, 0, 1, 2)), "b/c\n d": ("sha256:2", ("/x/c\n d", 0o600, 1, 2, -3, 4))}
    assert _copy_reuse._read_manifest(data[:-3]) == {}  # cut short
    assert _copy_reuse._read_manifest(data.replace(b"\x00420\x00", b"\x00x\x00")) == {}  # not a number
    assert _copy_reuse._read_manifest(data + b"\x00extra") == {}  # not whole records
    assert _copy_reuse._read_manifest(b'{"version": 1}') == {}


def test_a_path_leaving_the_tree_is_never_linked(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "upper").mkdir()
    reuse = _copy_reuse.Reuse("s", tmp_path / "old", {"f": ("/../outside", 0o644, 0, 0, 0, 0)})
    with pytest.raises(_copy_reuse.ReuseFailed, match="leaves the tree"):
        _copy_reuse.finish_copy(reuse, tmp_path / "upper", tmp_path, CopyReport({}, ("f",)))
    with pytest.raises(_copy_reuse.ReuseFailed, match="leaves the tree"):
        _copy_reuse.finish_copy(None, tmp_path / "upper", tmp_path, CopyReport({}, (), ((("/a/../../b", 0o755, 0, 0, 0)),)))
    with pytest.raises(_copy_reuse.ReuseFailed, match="leaves the tree"):
        _copy_reuse.finish_copy(None, tmp_path / "upper", tmp_path, CopyReport({"../x": ("/x", 0o644, 0, 0, 0, 1)}, (), (), ("../x",)))


def test_links_and_copies_never_follow_a_symlink_on_the_way(tmp_path: Path) -> None:
    old, outside, upper, context = tmp_path / "old", tmp_path / "outside", tmp_path / "upper", tmp_path / "ctx"
    for directory in (old / "d", outside, upper, context):
        directory.mkdir(parents=True)
    (old / "d" / "f").write_text("x")
    (outside / "secret").write_text("secret")
    os.symlink(outside, upper / "d")
    os.symlink(outside, context / "s")
    st = os.stat(old / "d" / "f")
    reuse = _copy_reuse.Reuse("s", old, {"f": ("/d/f", st.st_mode & 0o7777, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size)})
    with pytest.raises(_copy_reuse.ReuseFailed):
        _copy_reuse.finish_copy(reuse, upper, context, CopyReport({}, ("f",)))
    assert list(outside.iterdir()) == [outside / "secret"]
    (upper / "d").unlink()
    (upper / "d").mkdir()
    with pytest.raises(_copy_reuse.ReuseFailed):  # the source through a symlink of the context
        _copy_reuse.finish_copy(None, upper, context, CopyReport({"s/secret": ("/d/g", 0o644, 0, 0, 0, 6)}, (), (), ("s/secret",)))
    assert not (upper / "d" / "g").exists()
    _copy_reuse.finish_copy(reuse, upper, context, CopyReport({}, ("f",)))
    assert os.stat(upper / "d" / "f").st_ino == st.st_ino
