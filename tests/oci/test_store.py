"""The local image store: names, dangling images, docker rmi's rules, sizes, layer reuse."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.errors import ImageError, NotFound
from pybuild.oci import ImageStore, Layer, SnapshotLayers, chain_ids
from pybuild.oci._layers import write_layer
from pybuild.oci._store import unpacked_layer_size


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    root = Root.open(tmp_path / "root")
    yield ImageStore(root)
    root.close()


def tar_of(files: dict[str, bytes]) -> bytes:
    """A layer tar written by Python's tarfile (not pybuild's writer), like a pulled layer."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def blob_layer(store: ImageStore, files: dict[str, bytes]) -> Layer:
    """A gzip layer blob in the store, as a pull leaves it."""
    plain = tar_of(files)
    compressed = gzip.compress(plain, mtime=0)
    digest = store.root.blobs.put(compressed)
    return Layer("sha256:" + hashlib.sha256(plain).hexdigest(), digest, len(compressed), "application/vnd.docker.image.rootfs.diff.tar.gzip")


def image_of(store: ImageStore, layers: list[Layer], tags: list[str] = (), *, created: str = "2024-01-01T00:00:00Z", labels: dict | None = None):  # type: ignore[no-untyped-def]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {"Labels": labels} if labels else {},
        "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
        "history": [{"created": created, "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    return store.add_image(config, layers, tags)


def test_a_moved_tag_leaves_a_dangling_image(store: ImageStore) -> None:
    base = blob_layer(store, {"a": b"1"})
    old = image_of(store, [base], ["app:1"])
    new = image_of(store, [base, blob_layer(store, {"b": b"2"})], [])
    assert store.tag(new.id, "app:1") == old.id
    listed = {image.id: image for image in store.images()}
    assert listed[old.id].dangling and listed[old.id].tags == ()
    assert listed[new.id].tags == ("docker.io/library/app:1",) and not listed[new.id].dangling
    assert store.tag(new.id, "app:1") is None  # no move, nothing left behind


def test_images_are_listed_newest_first_with_their_labels(store: ImageStore) -> None:
    first = image_of(store, [blob_layer(store, {"a": b"1"})], ["a:1"], created="2023-01-01T00:00:00Z", labels={"k": "v"})
    second = image_of(store, [blob_layer(store, {"b": b"1"})], ["b:1"], created="2024-06-01T12:00:00.5Z")
    listed = store.images()
    assert [image.id for image in listed] == [second.id, first.id]
    assert listed[1].labels == {"k": "v"} and listed[0].labels == {}
    expected = datetime.datetime(2024, 6, 1, 12, 0, 0, 500000, tzinfo=datetime.timezone.utc).timestamp()
    assert listed[0].created_at == pytest.approx(expected)


def test_names_ids_prefixes_and_digests_resolve(store: ImageStore) -> None:
    image = image_of(store, [blob_layer(store, {"a": b"1"})], ["user/app:2"])
    hex_id = image.id.split(":")[1]
    for name in ("user/app:2", "docker.io/user/app:2", image.id, hex_id, hex_id[:12], "sha256:" + hex_id[:8],
                 f"user/app@{image.manifest_digest}"):
        assert store.resolve_id(name) == image.id, name
    store.add_repo_digest(image.id, "localhost:5000/app@sha256:" + "ab" * 32)
    assert store.resolve_id("localhost:5000/app@sha256:" + "ab" * 32) == image.id
    with pytest.raises(NotFound):
        store.resolve_id("user/app:3")
    with pytest.raises(NotFound):
        store.resolve_id("sha256:" + "0" * 64)


def test_an_ambiguous_id_prefix_is_refused(store: ImageStore) -> None:
    for tail in ("1" * 60, "2" * 60):
        store.root.index.put_image("sha256:abcd" + tail, size=0, meta={"manifest": "sha256:" + "f" * 64, "layers": []})
    with pytest.raises(ImageError, match="ambiguous"):
        store.resolve_id("abcd")
    assert store.resolve_id("abcd1") == "sha256:abcd" + "1" * 60


def test_a_name_only_untags_while_other_names_remain(store: ImageStore) -> None:
    image = image_of(store, [blob_layer(store, {"a": b"1"})], ["app:1", "app:2"])
    removal = store.delete("app:1")
    assert removal.untagged == ("app:1",) and removal.deleted == ()
    assert store.get("app:2").id == image.id
    removal = store.delete("app:2")
    assert removal.untagged == ("app:2",)
    assert removal.deleted == (image.id, image.layers[0].diff_id)  # a base layer's chain ID is its diffID
    with pytest.raises(NotFound):
        store.by_id(image.id)


def test_an_id_naming_several_repositories_needs_force(store: ImageStore) -> None:
    image = image_of(store, [blob_layer(store, {"a": b"1"})], ["one:1", "two:1"])
    with pytest.raises(ImageError, match=r"conflict: unable to delete [0-9a-f]{12} \(must be forced\) - image is referenced in multiple repositories"):
        store.delete(image.short_id)
    removal = store.delete(image.short_id, force=True)
    assert set(removal.untagged) == {"one:1", "two:1"} and removal.deleted[0] == image.id


def test_an_id_with_one_tag_and_its_digests_is_removed_without_force(store: ImageStore) -> None:
    image = image_of(store, [blob_layer(store, {"a": b"1"})], ["localhost:5000/app:1"])
    digest = "localhost:5000/app@sha256:" + "cd" * 32
    store.add_repo_digest(image.id, digest)
    removal = store.delete(image.id)
    assert removal.untagged == ("localhost:5000/app:1", digest)
    assert removal.deleted[0] == image.id


def test_the_last_tag_of_a_repository_takes_its_digests_along(store: ImageStore) -> None:
    image = image_of(store, [blob_layer(store, {"a": b"1"})], ["registry.example/app:1", "other:1"])
    store.add_repo_digest(image.id, "registry.example/app@sha256:" + "ef" * 32)
    removal = store.delete("registry.example/app:1")
    assert removal.untagged == ("registry.example/app:1", "registry.example/app@sha256:" + "ef" * 32)
    assert removal.deleted == ()
    assert store.get("other:1").repo_digests == ()


def test_layers_another_image_uses_stay(store: ImageStore, require_root: None) -> None:
    base = blob_layer(store, {"bin/sh": b"#!shell\n"})
    app = blob_layer(store, {"app": b"program\n"})
    tool = blob_layer(store, {"tool": b"toolchain\n"})
    kept = image_of(store, [base, app], ["kept:1"])
    gone = image_of(store, [base, tool], ["gone:1"])
    store.snapshots_for(kept)
    store.snapshots_for(gone)
    removal = store.delete("gone:1")
    top_chain = chain_ids([base.diff_id, tool.diff_id])[-1]
    assert removal.deleted == (gone.id, top_chain)  # the shared base layer is not deleted
    assert removal.reclaimed == len(b"toolchain\n")
    trees = [store.root.snapshots.tree(s) for s in store.snapshots_for(store.get("kept:1"))]
    assert (trees[0] / "app").read_bytes() == b"program\n" and (trees[1] / "bin" / "sh").exists()


def every_kind(tree: Path) -> None:
    """A layer tree with each kind of entry Docker sizes differently: directories,
    a 10-byte file with a hard link, a symlink with an 11-byte target, an empty
    file and a whiteout (a character device 0/0, as overlayfs writes one)."""
    (tree / "dir" / "sub").mkdir(parents=True)
    (tree / "dir" / "ten").write_bytes(b"0123456789")
    os.link(tree / "dir" / "ten", tree / "dir" / "link")
    os.symlink("/0123456789", tree / "x")
    (tree / "empty").write_bytes(b"")
    os.mknod(tree / "gone", stat.S_IFCHR | 0o600, 0)


def every_kind_tar() -> bytes:
    """The same entries as ``every_kind`` as another tool's layer tar (the whiteout as ``.wh.gone``)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, target in [
            ("dir", tarfile.DIRTYPE, b"", ""), ("dir/sub", tarfile.DIRTYPE, b"", ""),
            ("dir/ten", tarfile.REGTYPE, b"0123456789", ""), ("dir/link", tarfile.LNKTYPE, b"", "dir/ten"),
            ("x", tarfile.SYMTYPE, b"", "/0123456789"), ("empty", tarfile.REGTYPE, b"", ""),
            (".wh.gone", tarfile.REGTYPE, b"", ""),
        ]:  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.size, info.linkname, info.mtime = kind, len(data), target, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_a_built_layer_counts_file_bytes_once_and_no_symlink_targets(store: ImageStore, require_root: None) -> None:
    """A layer BuildKit builds inside dockerd is sized as it is registered:
    builder-next's EnsureLayer (moby builder/builder-next/adapters/snapshot/layer.go)
    calls the layer store's ChecksumForGraphID (moby layer/migration.go), whose
    packSizeCounter sums the tar headers' sizes of the layer's diff: a regular
    file's length, 0 for its hard link, a symlink, a directory or a whiteout.
    Checked on dockerd 20.10.24: `RUN ln -s /0123456789 /x && printf 0123456789 >
    /ten && ln /ten /tenlink && rm /etc/group` makes a 10-byte layer."""
    active = store.root.snapshots.new_active()
    every_kind(Path(active.upper))
    snapshot = store.root.snapshots.commit(active, None)
    built = store.layer_for_snapshot(snapshot)
    assert store.layer_sizes(image_of(store, [built], ["b:1"])) == [10]
    assert store.get("b:1").size == 10
    # the layer writer counts it while it archives (no second walk of the tree)
    assert write_layer(store.root.snapshots.tree(snapshot), io.BytesIO()).docker_size == 10


def test_an_unpacked_layer_counts_symlink_targets_as_overlay2_does(store: ImageStore, require_root: None) -> None:
    """A layer Docker unpacks (docker load, pull, import) is sized by the graph
    driver's ApplyDiff: overlay2 with native diff returns pkg/directory's Size of
    the applied diff directory (moby daemon/graphdriver/overlay2/overlay.go
    ApplyDiff; pkg/directory/directory_unix.go): lstat sizes of all but
    directories, an inode once, so a symlink weighs its target's length and a
    whiteout nothing.  Checked on dockerd 20.10.24: `docker load` of BuildKit's
    own `docker save` of the layer above shows 21 bytes, not 10."""
    plain = every_kind_tar()
    layer = Layer("sha256:" + hashlib.sha256(plain).hexdigest(), store.root.blobs.put(plain), len(plain), "application/vnd.docker.image.rootfs.diff.tar")
    image = image_of(store, [layer], ["loaded:1"])
    (snapshot,) = store.snapshots_for(image)
    assert store.layer_sizes(store.get("loaded:1")) == [10 + 11]
    assert unpacked_layer_size(store.root.snapshots.tree(snapshot)) == 10 + 11


def test_an_imported_layer_is_sized_as_docker_import_registers_it(store: ImageStore, require_root: None) -> None:
    """`docker import` registers its layer through the layer store's Register,
    so the graph driver's ApplyDiff sizes it (moby daemon/images/image_import.go
    ImportImage; overlay2's ApplyDiff: pkg/directory Size): symlink targets
    count.  Checked on dockerd 20.10.24: the busybox root filesystem of the
    tests imports as its files' lstat sizes, 3,637 bytes of symlink targets included."""
    image = store.import_tarball(io.BytesIO(every_kind_tar()), ["imported:1"])
    assert store.layer_sizes(image) == [10 + 11] and store.get("imported:1").size == 10 + 11


def test_a_layer_adopted_from_a_remote_cache_is_sized_as_built(store: ImageStore) -> None:
    """A layer a remote cache gives a build stands for a step's result: BuildKit
    in dockerd registers it like any layer it built (moby
    builder/builder-next/adapters/snapshot/layer.go EnsureLayer ->
    layer/migration.go ChecksumForGraphID: the tar headers' sizes), so its
    symlink targets do not count -- and a lazily adopted blob, never unpacked
    here, is sized by its content rather than by its compressed length."""
    plain = every_kind_tar()
    packed = gzip.compress(plain, mtime=0)
    diff_id = "sha256:" + hashlib.sha256(plain).hexdigest()
    layer = Layer(diff_id, store.root.blobs.put(packed), len(packed), "application/vnd.oci.image.layer.v1.tar+gzip")
    SnapshotLayers(store).adopt("ab" * 16, layer)
    assert store.layer_sizes(image_of(store, [layer], ["cached:1"])) == [10]
    # the plain tar's length is remembered exactly (a plain layer of the same diffID is named by it)
    assert store._tar_size(diff_id) == len(plain)


def test_the_two_measures_differ_by_the_symlink_targets(tmp_path: Path, require_root: None) -> None:
    """What `docker load` of a built layer shows more than the build did: its symlinks' target lengths."""
    tree = tmp_path / "tree"
    every_kind(tree)
    os.symlink("dir", tree / "dir" / "sub" / "up")
    stats = write_layer(tree, io.BytesIO())
    assert stats.link_target_bytes == len("/0123456789") + len("dir")
    assert unpacked_layer_size(tree) == stats.docker_size + stats.link_target_bytes == 10 + 14
    assert stats.unpacked_size == unpacked_layer_size(tree)  # found while archiving, no second walk


def test_sizes_are_dockers_for_built_and_unpacked_layers(store: ImageStore, require_root: None, tmp_path: Path) -> None:
    pulled = blob_layer(store, {"x": b"x" * 1000, "y": b"yy"})
    image = image_of(store, [pulled], ["p:1"])
    assert store.layer_sizes(image) == [pulled.size]  # not unpacked yet: the blob's size stands in
    store.snapshots_for(image)
    assert store.layer_sizes(store.get("p:1")) == [1002]
    assert store.get("p:1").size == 1002
    active = store.root.snapshots.new_active()
    (Path(active.upper) / "f").write_bytes(b"z" * 5000)
    snapshot = store.root.snapshots.commit(active, None)
    built = store.layer_for_snapshot(snapshot)
    assert store.layer_sizes(image_of(store, [built], ["b:1"])) == [5000]


def test_an_unpacked_layer_is_reused_not_archived_again(store: ImageStore, require_root: None) -> None:
    pulled = blob_layer(store, {"etc/hostname": b"box\n"})
    image = image_of(store, [pulled], ["p:1"])
    (snapshot,) = store.snapshots_for(image)
    again = store.layer_for_snapshot(snapshot, "gzip")
    assert (again.digest, again.diff_id) == (pulled.digest, pulled.diff_id)
    assert store.layer_for_snapshot(snapshot, "zstd") == again  # a base layer keeps its compression
    built = image_of(store, [again], ["built:1"])  # a build on it: the OCI twin of the Docker media type
    assert built.layers[0].media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert built.layers[0].digest == pulled.digest


def test_a_plain_unpacked_layer_is_compressed_as_asked(store: ImageStore, require_root: None) -> None:
    plain = tar_of({"etc/hostname": b"box\n"})
    digest = store.root.blobs.put(plain)
    layer = Layer("sha256:" + hashlib.sha256(plain).hexdigest(), digest, len(plain), "application/vnd.docker.image.rootfs.diff.tar")
    (snapshot,) = store.snapshots_for(image_of(store, [layer], ["loaded:1"]))
    zstd = store.layer_for_snapshot(snapshot, "zstd")
    assert zstd.diff_id == layer.diff_id and zstd.media_type.endswith("+zstd") and zstd.digest != digest
    assert store.layer_for_snapshot(snapshot, "zstd") == zstd


def test_origins_are_remembered_per_blob(store: ImageStore) -> None:
    digest = "sha256:" + "12" * 32
    assert store.origins(digest) == ()
    store.remember_origin([digest, digest], "registry.example/team/base")
    store.remember_origin([digest], "registry.example/other")
    store.remember_origin([digest], "registry.example/team/base")
    assert store.origins(digest) == ("registry.example/other", "registry.example/team/base")


def test_a_digest_reference_cannot_be_a_tag(store: ImageStore) -> None:
    image = image_of(store, [blob_layer(store, {"a": b"1"})], [])
    with pytest.raises(ImageError, match="digest"):
        store.tag(image.id, "app@sha256:" + "00" * 32)


def committed_chain(store: ImageStore, length: int) -> list[str]:
    """``length`` empty snapshots, each the parent of the next (bottom first)."""
    chain: list[str] = []
    for _ in range(length):
        chain.append(store.root.snapshots.commit(store.root.snapshots.new_active(), chain[-1] if chain else None))
    return chain


def test_remembering_a_chain_walks_its_snapshots_once(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots = committed_chain(store, 30)
    diff_ids = ["sha256:" + hashlib.sha256(str(i).encode()).hexdigest() for i in range(30)]
    reads: list[str] = []
    parent = store.root.snapshots.parent
    monkeypatch.setattr(store.root.snapshots, "parent", lambda s: reads.append(s) or parent(s))
    store.remember_chain(diff_ids, snapshots)
    assert len(reads) == 30  # no records yet: one look for a snapshot named by each chain ID
    assert [store.snapshot_of_chain(c) for c in chain_ids(diff_ids)] == snapshots
    reads.clear()
    store.remember_chain(diff_ids, snapshots)  # as every build's export does for its base's layers
    assert len(reads) == 30  # each snapshot's metadata once (each prefix walking down: 465)
    assert [store.snapshot_of_chain(c) for c in chain_ids(diff_ids)] == snapshots


def test_a_chain_record_is_kept_while_its_snapshot_is_complete_and_replaced_after(store: ImageStore) -> None:
    first, second = committed_chain(store, 1), committed_chain(store, 2)
    diff_ids = ["sha256:" + "a" * 64, "sha256:" + "b" * 64]
    store.remember_chain(diff_ids[:1], first)
    store.remember_chain(diff_ids, second)
    bottom, top = chain_ids(diff_ids)
    assert (store.snapshot_of_chain(bottom), store.snapshot_of_chain(top)) == (first[0], second[1])  # the first one stays
    store.root.snapshots.remove(first[0])
    store.remember_chain(diff_ids, second)
    assert store.snapshot_of_chain(bottom) == second[0]


def test_an_images_snapshots_are_found_walking_its_chain_once(store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshots = committed_chain(store, 20)
    diff_ids = ["sha256:" + hashlib.sha256(str(i).encode()).hexdigest() for i in range(20)]
    store.remember_chain(diff_ids, snapshots)
    layers = [Layer(d, "sha256:" + "0" * 64, 1, "application/vnd.oci.image.layer.v1.tar") for d in diff_ids]
    image = store.add_image({"rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": []}, layers)
    reads: list[str] = []
    parent = store.root.snapshots.parent
    monkeypatch.setattr(store.root.snapshots, "parent", lambda s: reads.append(s) or parent(s))
    assert store.snapshots_for(image) == tuple(reversed(snapshots))
    assert len(reads) == 20  # each snapshot's metadata once (each layer walking down: 210)
