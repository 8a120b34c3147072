"""oci/_compare.py: what each layer adds and which bytes later layers throw away,
on hand-made layer trees (overlay upper directories) stored as images."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.errors import StoreError
from pybuild.oci import ImageStore, Layer, StoredImage
from pybuild.oci._compare import (
    ImageReport,
    WastedFile,
    analyze_image,
    compare_images,
    layer_history,
    walk_layers,
)
from pybuild.oci._layers import write_layer
from pybuild.oci._store import unpacked_layer_size

Build = Callable[[Path], None]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    root = Root.open(tmp_path / "root")
    yield ImageStore(root)
    root.close()


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)


def whiteout(path: Path) -> None:
    """Delete ``path`` in this layer, as overlayfs does: a character device 0/0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, 0)


def opaque(path: Path) -> None:
    """Hide what lower layers have under ``path``, as overlayfs does."""
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def snapshot(store: ImageStore, build: Build, parent: str | None = None) -> str:
    active = store.root.snapshots.new_active()
    build(Path(active.upper))
    return store.root.snapshots.commit(active, parent)


def stack(store: ImageStore, builds: Sequence[Build], base: Sequence[str] = ()) -> list[str]:
    """Snapshots for ``builds``, bottom first, on top of the snapshots ``base``."""
    out = list(base)
    for build in builds:
        out.append(snapshot(store, build, out[-1] if out else None))
    return out


def image_of(store: ImageStore, snapshots: Sequence[str], tag: str, history: Sequence[dict] | None = None) -> StoredImage:
    layers = [store.layer_for_snapshot(s) for s in snapshots]
    store.remember_chain([l.diff_id for l in layers], snapshots)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": list(history) if history is not None else [{"created_by": f"RUN step {i + 1}"} for i in range(len(layers))],
    }
    return store.add_image(config, layers, [tag])


def base(root: Path) -> None:
    write(root / "bin" / "sh", 1000)
    write(root / "etc" / "passwd", 100)


def assert_accounted(report: ImageReport) -> None:
    """Every byte the layers hold is either wasted or in the final filesystem."""
    assert sum(l.bytes_added for l in report.layers) - report.wasted_size == report.final_size
    assert [l.bytes_wasted for l in report.layers] == [
        sum(w.size for w in report.wasted if w.added_in == l.index) for l in report.layers
    ]
    assert [l.bytes_removed for l in report.layers] == [
        sum(w.size for w in report.wasted if w.removed_by == l.index) for l in report.layers
    ]


def analyze(store: ImageStore, builds: Sequence[Build], tag: str = "t:1") -> ImageReport:
    report = analyze_image(store, image_of(store, stack(store, builds), tag), tag)
    assert_accounted(report)
    return report


def test_a_file_added_then_deleted_is_wasted_in_the_layer_that_added_it(store: ImageStore, require_root: None) -> None:
    def add(root: Path) -> None:
        write(root / "tmp" / "big", 20_000)
        write(root / "app", 7)

    report = analyze(store, [base, add, lambda root: whiteout(root / "tmp" / "big")])
    assert report.wasted == (WastedFile("/tmp/big", 20_000, added_in=1, removed_by=2, overwritten=False),)
    first, second, third = report.layers
    assert (second.size, second.bytes_added, second.bytes_wasted, second.files_added) == (20_007, 20_007, 20_000, 2)
    assert (third.size, third.files_deleted, third.bytes_removed, third.bytes_added) == (0, 1, 20_000, 0)
    assert report.size == 1100 + 20_007 and report.final_size == 1100 + 7
    assert [l.created_by for l in report.layers] == ["RUN step 1", "RUN step 2", "RUN step 3"]
    assert [w.size for w in report.waste_by_step()] == [20_000]


def test_deleting_a_directory_wastes_everything_under_it(store: ImageStore, require_root: None) -> None:
    def add(root: Path) -> None:
        write(root / "src" / "a.c", 300)
        write(root / "src" / "sub" / "b.c", 200)
        os.symlink("a.c", root / "src" / "link")  # a symlink weighs its target's length

    report = analyze(store, [base, add, lambda root: whiteout(root / "src")])
    assert sorted((w.path, w.size, w.added_in, w.removed_by) for w in report.wasted) == [
        ("/src/a.c", 300, 1, 2), ("/src/link", 3, 1, 2), ("/src/sub/b.c", 200, 1, 2),
    ]
    assert [w.size for w in report.wasted] == [300, 200, 3]  # largest first
    assert report.layers[1].bytes_wasted == 503 and report.final_size == 1100


def test_a_file_overwritten_later_wastes_the_old_bytes(store: ImageStore) -> None:
    report = analyze(store, [base, lambda root: write(root / "bin" / "sh", 50)])
    assert report.wasted == (WastedFile("/bin/sh", 1000, added_in=0, removed_by=1, overwritten=True),)
    assert (report.layers[1].files_changed, report.layers[1].files_added) == (1, 0)
    assert report.final_size == 150


def test_a_file_and_a_directory_replacing_each_other(store: ImageStore) -> None:
    def dir_over_file(root: Path) -> None:
        write(root / "etc" / "passwd" / "inside", 5)  # passwd was a file

    def file_over_dir(root: Path) -> None:
        write(root / "etc", 9)  # etc was a directory

    report = analyze(store, [base, dir_over_file, file_over_dir])
    assert sorted((w.path, w.added_in, w.removed_by, w.overwritten) for w in report.wasted) == [
        ("/etc/passwd", 0, 1, True), ("/etc/passwd/inside", 1, 2, True),
    ]
    assert report.final_size == 1000 + 9


def test_an_opaque_directory_hides_what_lower_layers_had_in_it(store: ImageStore, require_root: None) -> None:
    def fill(root: Path) -> None:
        write(root / "var" / "cache" / "a", 400)
        write(root / "var" / "cache" / "deep" / "b", 600)
        write(root / "var" / "keep", 1)

    def empty_cache(root: Path) -> None:
        opaque(root / "var" / "cache")
        write(root / "var" / "cache" / "new", 2)

    report = analyze(store, [base, fill, empty_cache])
    assert sorted((w.path, w.size, w.removed_by, w.overwritten) for w in report.wasted) == [
        ("/var/cache/a", 400, 2, False), ("/var/cache/deep/b", 600, 2, False),
    ]
    assert report.final_size == 1100 + 1 + 2
    assert report.layers[2].bytes_removed == 1000


def test_an_opaque_directory_over_nothing_hides_nothing(store: ImageStore, require_root: None) -> None:
    def fresh(root: Path) -> None:
        opaque(root / "new")
        write(root / "new" / "f", 3)

    report = analyze(store, [base, fresh])
    assert report.wasted == () and report.final_size == 1103


def test_hard_links_count_once_and_are_wasted_when_their_last_name_goes(store: ImageStore, require_root: None) -> None:
    def linked(root: Path) -> None:
        write(root / "lib" / "a", 500)
        os.link(root / "lib" / "a", root / "lib" / "b")

    report = analyze(store, [base, linked, lambda root: whiteout(root / "lib" / "a"), lambda root: whiteout(root / "lib" / "b")])
    assert report.layers[1].bytes_added == 500 == report.layers[1].size
    assert report.layers[1].files_added == 2
    # Deleting one name frees nothing: the bytes are still reachable through the other.
    assert report.layers[2].bytes_removed == 0
    assert report.wasted == (WastedFile("/lib/b", 500, added_in=1, removed_by=3, overwritten=False),)
    assert report.final_size == 1100


def test_a_hard_linked_file_that_survives_counts_once_in_the_final_filesystem(store: ImageStore) -> None:
    def linked(root: Path) -> None:
        write(root / "a", 500)
        os.link(root / "a", root / "b")
        os.link(root / "a", root / "c")

    report = analyze(store, [linked, lambda root: write(root / "c", 1)])
    assert report.wasted == () and report.final_size == 501


def test_a_whiteout_of_a_missing_path_wastes_nothing(store: ImageStore, require_root: None) -> None:
    report = analyze(store, [base, lambda root: whiteout(root / "never" / "there")])
    assert report.wasted == () and report.layers[1].files_deleted == 1 and report.final_size == 1100


def test_layer_sizes_are_dockers_measure_and_bytes_are_the_trees(store: ImageStore, require_root: None) -> None:
    """A layer built here is sized as BuildKit in dockerd registers one (tar
    headers' sizes: no symlink target, moby layer/migration.go packSizeCounter);
    the bytes a layer adds are its tree's lstat sizes, as Docker sizes an
    unpacked layer (moby pkg/directory/directory_unix.go Size): the two differ
    by the layer's symlink targets."""
    def rich(root: Path) -> None:
        write(root / "f", 123)
        os.symlink("/a/long/target", root / "l")
        os.link(root / "f", root / "g")
        whiteout(root / "gone")

    snapshots = stack(store, [base, rich])
    report = analyze_image(store, image_of(store, snapshots, "rich:1"))
    trees = [store.root.snapshots.tree(s) for s in snapshots]
    assert [l.size for l in report.layers] == [write_layer(t, io.BytesIO()).docker_size for t in trees]
    assert report.layers[1].size == 123  # the hard link once, the symlink's target not at all
    assert [l.bytes_added for l in report.layers] == [unpacked_layer_size(t) for t in trees]
    assert report.layers[1].bytes_added == 123 + len("/a/long/target")


def test_a_shared_base_is_marked_in_both_images(store: ImageStore, require_root: None) -> None:
    bottom = stack(store, [base])

    def big_then_deleted(root: Path) -> None:
        write(root / "build" / "obj", 30_000)
        write(root / "app", 10)

    single = image_of(store, stack(store, [big_then_deleted, lambda root: whiteout(root / "build")], bottom), "app:single")
    multi = image_of(store, stack(store, [lambda root: write(root / "app", 10)], bottom), "app:multi")
    comparison = compare_images(store, single, multi, left_name="app:single", right_name="app:multi")
    assert not comparison.same_image
    assert [l.shared for l in comparison.left.layers] == [True, False, False]
    assert [l.shared for l in comparison.right.layers] == [True, False]
    assert comparison.left.layers[0].chain_id == comparison.right.layers[0].chain_id
    assert (comparison.left.name, comparison.right.name) == ("app:single", "app:multi")
    assert comparison.left.wasted_size == 30_000 and comparison.right.wasted_size == 0
    assert comparison.left.final_size == comparison.right.final_size == 1110
    assert comparison.left.size - comparison.right.size == 30_000


def test_an_image_compared_with_itself(store: ImageStore, require_root: None) -> None:
    image = image_of(store, stack(store, [base, lambda root: whiteout(root / "bin" / "sh")]), "self:1")
    comparison = compare_images(store, image, image, left_name="self:1", right_name=image.short_id)
    assert comparison.same_image
    assert all(l.shared for l in comparison.left.layers + comparison.right.layers)
    assert comparison.left.layers == comparison.right.layers
    assert comparison.left.wasted == comparison.right.wasted == (WastedFile("/bin/sh", 1000, 0, 1, False),)
    assert comparison.right.name == image.short_id


def test_layers_of_a_pulled_image_are_unpacked_and_read(store: ImageStore, require_root: None) -> None:
    """Layers only stored as blobs (as a pull leaves them): tar whiteouts become overlay ones."""
    first = blob_layer(store, [("opt/tool", b"t" * 4000), ("opt/doc", b"d" * 10)])
    second = blob_layer(store, [("opt/.wh.tool", b""), ("opt/doc", b"D" * 20)])
    config = {
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [first.diff_id, second.diff_id]},
        "history": [{"created_by": "ADD tool"}, {"created_by": "RUN /bin/sh -c true", "empty_layer": True}, {"created_by": "RUN rm tool"}],
    }
    image = store.add_image(config, [first, second], ["pulled:1"])
    report = analyze_image(store, image, "pulled:1")
    assert sorted((w.path, w.size, w.overwritten) for w in report.wasted) == [("/opt/doc", 10, True), ("/opt/tool", 4000, False)]
    assert [l.created_by for l in report.layers] == ["ADD tool", "RUN rm tool"]
    assert report.final_size == 20
    assert_accounted(report)


def blob_layer(store: ImageStore, files: list[tuple[str, bytes]]) -> Layer:
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    compressed = gzip.compress(plain.getvalue(), mtime=0)
    digest = store.root.blobs.put(compressed)
    diff_id = "sha256:" + hashlib.sha256(plain.getvalue()).hexdigest()
    return Layer(diff_id, digest, len(compressed), "application/vnd.oci.image.layer.v1.tar+gzip")


def test_history_entries_without_a_layer_are_skipped() -> None:
    config = {"history": [
        {"created_by": "FROM", "comment": "base"},
        {"created_by": "ENV A=1", "empty_layer": True},
        {"created_by": "RUN make"},
    ]}
    assert layer_history(config, 2) == [("FROM", "base"), ("RUN make", "")]
    assert layer_history({}, 2) == [("", ""), ("", "")]  # no history at all
    assert layer_history(config, 3)[2] == ("", "")  # fewer entries than layers


def test_walk_layers_on_plain_trees(tmp_path: Path) -> None:
    """No store needed: the walk works on any directories in overlay upper-dir form."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    write(lower / "a", 10)
    write(lower / "b", 20)
    write(upper / "a", 1)
    walk = walk_layers([lower, upper])
    assert walk.wasted == (WastedFile("/a", 10, 0, 1, True),)
    assert walk.final_size == 21
    assert [(l.files_added, l.files_changed) for l in walk.layers] == [(2, 0), (0, 1)]


def test_a_layer_that_vanishes_while_read_is_a_store_error(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    image = image_of(store, stack(store, [base]), "gone:1")
    monkeypatch.setattr(store.root.snapshots, "tree", lambda snapshot_id: Path("/nonexistent/pybuild-test"))
    with pytest.raises(StoreError, match="cannot read the layers"):
        analyze_image(store, image)
