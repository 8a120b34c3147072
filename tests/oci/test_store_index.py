"""Image indexes in the local store: one tag, one image per platform.

The model is containerd's image store (what Docker 25+ uses with the
containerd snapshotters): the tag names the index, each platform's image is
content of its own that the index keeps, ``rmi`` of the tag removes what
nothing else uses (containerd ``images/image.go``, moby
``daemon/containerd/image_delete.go``).  The index is what BuildKit writes for
a multi-platform build (``exporter/containerimage/writer.go``: an OCI image
index, one manifest descriptor with ``platform`` per platform).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.errors import ImageError, NotFound
from pybuild.oci import ImageStore, Layer, StoredImage, StoredIndex

from .test_formats import schema_valid
from .test_store import blob_layer

HOST = {"x86_64": "amd64", "aarch64": "arm64"}


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    root = Root.open(tmp_path / "root")
    yield ImageStore(root)
    root.close()


def platform_image(store: ImageStore, architecture: str, files: dict[str, bytes], *, variant: str = "", tags: list[str] = ()) -> StoredImage:
    """A one-layer image whose config says ``linux/architecture[/variant]`` (no emulation needed)."""
    layer: Layer = blob_layer(store, files)
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "COPY . /"}],
    }
    if variant:
        config["variant"] = variant
    return store.add_image(config, [layer], tags)


def two_platforms(store: ImageStore, tags: list[str] = ["multi:1"]) -> tuple[StoredIndex, StoredImage, StoredImage]:  # noqa: B006
    amd64 = platform_image(store, "amd64", {"a": b"amd64"})
    arm64 = platform_image(store, "arm64", {"a": b"arm64"}, variant="v8")
    return store.add_index([amd64, arm64], tags), amd64, arm64


def host_arch() -> str:
    import platform

    return HOST.get(platform.machine(), platform.machine())


def test_the_index_blob_is_an_oci_image_index_with_a_platform_per_manifest(store: ImageStore) -> None:
    """BuildKit's multi-platform result: an OCI index (mediaType image.index.v1), one
    manifest descriptor per platform in the build's order, each with os/architecture
    (exporter/containerimage/writer.go); arm64's default variant v8 left out as BuildKit does."""
    index, amd64, arm64 = two_platforms(store)
    document = json.loads(store.index_bytes(index))
    assert schema_valid("image-index-schema.json", document)
    assert document["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["digest"] for m in document["manifests"]] == [amd64.manifest_digest, arm64.manifest_digest]
    assert [m["platform"] for m in document["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    assert all(m["size"] == len(store.manifest_bytes(i)) for m, i in zip(document["manifests"], (amd64, arm64)))
    assert index.digest == "sha256:" + __import__("hashlib").sha256(store.index_bytes(index)).hexdigest()
    assert index.platforms == ("linux/amd64", "linux/arm64") and index.tags == ("docker.io/library/multi:1",)


def test_the_tag_resolves_through_the_index_to_the_platform_asked(store: ImageStore) -> None:
    """containerd resolves an index to the manifest matching the platform (platforms.Only
    matcher, images/image.go Manifest); `aarch64` and `linux/arm64/v8` are arm64."""
    index, amd64, arm64 = two_platforms(store)
    for name in ("multi:1", index.digest, index.short_id, f"multi@{index.digest}"):
        assert store.get(name, "linux/arm64").id == arm64.id, name
        assert store.get(name, "linux/amd64").id == amd64.id, name
    assert store.get("multi:1", "linux/aarch64").id == arm64.id
    assert store.get("multi:1", "linux/arm64/v8").id == arm64.id
    resolved = store.lookup("docker.io/library/multi:1", "linux/arm64")
    assert resolved is not None and resolved.manifest_digest == arm64.manifest_digest
    assert store.index("multi:1") == index and store.index(amd64.id) is None


def test_no_platform_prefers_the_hosts_and_a_missing_one_names_those_it_has(store: ImageStore) -> None:
    """Docker's containerd store with no platform asked: the host's first, else any it has
    (moby daemon/containerd/platform_matchers.go matchAllWithPreference); a platform asked
    that the index lacks is an error listing what it has (BuildKit: "no match for platform")."""
    two_platforms(store)
    if host_arch() in ("amd64", "arm64"):
        assert store.get("multi:1").platform == f"linux/{host_arch()}"
    with pytest.raises(ImageError, match=r"multi:1 has no image for linux/s390x: it has linux/amd64, linux/arm64"):
        store.get("multi:1", "linux/s390x")
    with pytest.raises(ImageError, match=r"it has linux/amd64, linux/arm64"):
        store.lookup("docker.io/library/multi:1", "linux/riscv64")
    only_s390x = store.add_index([platform_image(store, "s390x", {"s": b"1"})], ["odd:1"])
    assert store.get("odd:1").id == only_s390x.manifests[0].image.id
    with pytest.raises(ImageError, match=r"odd:1 has no image for linux/amd64: it has linux/s390x"):
        store.get("odd:1", "linux/amd64")


def test_a_plain_image_asked_for_another_platform_is_refused_but_lookup_keeps_it(store: ImageStore) -> None:
    """docker inspect --platform on a single-platform image of another platform fails; a
    build's FROM uses a single-platform base whatever its platform, as BuildKit does
    (frontend/dockerfile/dockerfile2llb/convert.go warns, does not fail)."""
    image = platform_image(store, "arm64", {"a": b"1"}, tags=["one:1"])
    assert store.get("one:1", "linux/arm64").id == image.id
    with pytest.raises(ImageError, match=r"its platform \(linux/arm64\) does not match the specified platform \(linux/amd64\)"):
        store.get("one:1", "linux/amd64")
    resolved = store.lookup("docker.io/library/one:1", "linux/amd64")
    assert resolved is not None and resolved.manifest_digest == image.manifest_digest


def test_the_platform_images_are_neither_dangling_nor_listed_nor_pruned(store: ImageStore) -> None:
    """containerd's garbage collector keeps what an image (the index) references; Docker's
    `images` shows the index as one row (daemon/containerd/image_list.go)."""
    index, amd64, arm64 = two_platforms(store)
    listed = {image.id: image for image in store.images()}
    assert not listed[amd64.id].dangling and not listed[arm64.id].dangling
    assert listed[arm64.id].indexes == (index.digest,)
    assert [i.digest for i in store.indexes()] == [index.digest]
    keep = store.referenced()
    for digest in (index.digest, amd64.id, arm64.id, amd64.manifest_digest, arm64.manifest_digest,
                   *(l.digest for l in (*amd64.layers, *arm64.layers))):
        assert digest in keep, digest


def test_rmi_of_the_last_tag_removes_the_index_and_its_images(store: ImageStore) -> None:
    """`docker rmi tag` on the containerd store deletes the image (the index) when no other
    name is left, and its content unless something else uses it (image_delete.go)."""
    index, amd64, arm64 = two_platforms(store, ["multi:1", "multi:2"])
    shared = store.tag(arm64.id, "arm-only:1")
    assert shared is None
    removal = store.delete("multi:1")
    assert removal.untagged == ("multi:1",) and removal.deleted == ()
    assert store.index("multi:2") is not None
    removal = store.delete("multi:2")
    assert removal.untagged == ("multi:2",)
    assert removal.deleted[:2] == (index.digest, amd64.id)
    assert arm64.id not in removal.deleted  # it has a tag of its own
    with pytest.raises(NotFound):
        store.by_id(amd64.id)
    kept = store.get("arm-only:1")
    assert kept.id == arm64.id and kept.indexes == () and not kept.dangling
    with pytest.raises(NotFound):
        store.resolve_id(index.digest)


def test_rmi_of_an_index_id_with_several_names_needs_force(store: ImageStore) -> None:
    """The same rule as for an image: an ID naming several repositories needs -f (Docker's
    daemon/images/image_delete.go "referenced in multiple repositories")."""
    index, _, _ = two_platforms(store, ["one:1", "two:1"])
    with pytest.raises(ImageError, match="must be forced"):
        store.delete(index.short_id)
    removal = store.delete(index.short_id, force=True)
    assert set(removal.untagged) == {"one:1", "two:1"} and removal.deleted[0] == index.digest


def test_a_platform_image_of_an_index_is_not_removed_by_its_id_alone(store: ImageStore) -> None:
    """Removing content an image still references is a conflict in containerd's store (the
    index would name a manifest that is gone); -f removes it, the other platform stays."""
    index, amd64, arm64 = two_platforms(store)
    with pytest.raises(ImageError, match=r"must be forced.*linux/amd64 image of index"):
        store.delete(amd64.id)
    store.delete(amd64.id, force=True)
    assert store.index("multi:1").platforms == ("linux/arm64",)  # type: ignore[union-attr]
    assert store.get("multi:1", "linux/arm64").id == arm64.id


def test_a_tag_moved_from_an_index_to_a_new_one_leaves_a_dangling_index(store: ImageStore) -> None:
    """Rebuilding a tag leaves the old index untagged (`<none>` in docker images), its images still its own."""
    old, _, _ = two_platforms(store)
    new = store.add_index([platform_image(store, "amd64", {"b": b"2"}), platform_image(store, "arm64", {"b": b"3"})], ["multi:1"])
    by_digest = {i.digest: i for i in store.indexes()}
    assert by_digest[old.digest].dangling and not by_digest[new.digest].dangling


def test_two_images_of_one_platform_or_one_without_a_platform_are_refused(store: ImageStore) -> None:
    one, two = platform_image(store, "arm64", {"a": b"1"}), platform_image(store, "arm64", {"a": b"2"})
    with pytest.raises(ImageError, match="two images for linux/arm64"):
        store.add_index([one, two], ["x:1"])
    layer = blob_layer(store, {"b": b"1"})
    bare = store.add_image({"rootfs": {"type": "layers", "diff_ids": [layer.diff_id]}}, [layer])
    with pytest.raises(ImageError, match="has no os/architecture in its config"):
        store.add_index([one, bare], ["x:1"])
    assert store.indexes() == []


def test_a_plain_image_lookup_is_unchanged(store: ImageStore) -> None:
    """One platform: the tag still names the image itself (same ID, no index record)."""
    image = platform_image(store, host_arch(), {"a": b"1"}, tags=["plain:1"])
    assert store.resolve_id("plain:1") == image.id
    assert store.get("plain:1").id == image.id and store.index("plain:1") is None
    assert store.indexes() == []
