"""The local image store: names, dangling images, docker rmi's rules, sizes, layer reuse."""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.errors import ImageError, NotFound
from pybuild.oci import ImageStore, Layer, chain_ids
from pybuild.oci._layers import write_layer
from pybuild.oci._store import docker_size


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


def test_docker_size_counts_files_and_symlinks_and_hard_links_once(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "dir" / "sub").mkdir(parents=True)
    (tree / "dir" / "ten").write_bytes(b"0123456789")
    os.link(tree / "dir" / "ten", tree / "dir" / "link")
    os.symlink("dir/ten", tree / "symlink")  # 7 bytes of target
    (tree / "empty").write_bytes(b"")
    assert docker_size(tree) == 10 + 7
    # the layer writer counts the same while it archives (no second walk)
    stats = write_layer(tree, io.BytesIO())
    assert stats.docker_size == docker_size(tree)


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
