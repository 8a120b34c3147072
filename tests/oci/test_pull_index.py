"""Pulling a multi-platform image keeps its index, as containerd's image store does.

containerd stores the image under its tag as the index the registry served
(``images.Image.Target`` is the index descriptor) and fetches content per
platform pulled (``remotes/handlers.go`` with a platform filter); Docker's
containerd store shows the index digest as the image's digest and a second
platform pulled later joins the same image (moby ``daemon/containerd/image_pull.go``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.errors import ImageError
from pybuild.oci import ImageStore, pull_image
from pybuild.oci.registry import RegistryClient

from .registry_server import OCI_INDEX, FakeRegistry, image_index, tiny_image


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    root = Root.open(tmp_path / "root")
    yield ImageStore(root)
    root.close()


def multi(fake_registry: FakeRegistry) -> tuple[str, bytes, dict[str, str]]:
    images = {"amd64": tiny_image({"arch": b"amd64"}, architecture="amd64"), "arm64": tiny_image({"arch": b"arm64"}, architecture="arm64")}
    for image in images.values():
        fake_registry.add_image("multi", image.digest, image)
    index = image_index((images["amd64"], "amd64", ""), (images["arm64"], "arm64", "v8"))
    fake_registry.add_manifest("multi", "1", index, OCI_INDEX)
    return f"{fake_registry.netloc}/multi:1", index, {arch: image.digest for arch, image in images.items()}


async def test_the_tag_names_the_registrys_index_and_a_second_platform_joins_it(store: ImageStore, fake_registry: FakeRegistry) -> None:
    name, index_bytes, manifests = multi(fake_registry)
    async with RegistryClient() as client:
        first = await pull_image(store, client, name, "linux/amd64")
        assert first.index is not None and first.index.platforms == ("linux/amd64",)
        assert store.index_bytes(first.index) == index_bytes  # the registry's bytes, so its digest
        assert store.root.index.get_tag(str(first.reference)) == first.digest == first.index.digest
        assert not first.image.dangling and first.image.tags == ()
        second = await pull_image(store, client, name, "linux/arm64")
        again = await pull_image(store, client, name, "linux/arm64")
    assert second.index is not None and second.index.digest == first.index.digest
    assert second.index.platforms == ("linux/amd64", "linux/arm64") and not second.up_to_date and second.replaced is None
    assert again.up_to_date
    assert store.get(name, "linux/arm64").manifest_digest == manifests["arm64"]
    assert store.get(name, "linux/amd64").manifest_digest == manifests["amd64"]
    assert second.index.repo_digests == (f"{fake_registry.netloc}/multi@{first.digest}",)


async def test_a_platform_not_pulled_yet_is_pulled_by_a_build_not_refused(store: ImageStore, fake_registry: FakeRegistry) -> None:
    """A build's FROM finds no local image for a platform the pulled index lacks (None: the
    build pulls it), where a command asking for it names the platforms the store has."""
    name, _, _ = multi(fake_registry)
    async with RegistryClient() as client:
        pulled = await pull_image(store, client, name, "linux/amd64")
    assert store.lookup(str(pulled.reference), "linux/arm64") is None
    assert store.lookup(str(pulled.reference), "linux/amd64") is not None
    with pytest.raises(ImageError, match=r"has no image for linux/arm64: it has linux/amd64"):
        store.get(name, "linux/arm64")


async def test_rmi_of_a_pulled_index_removes_its_platforms(store: ImageStore, fake_registry: FakeRegistry) -> None:
    name, _, _ = multi(fake_registry)
    async with RegistryClient() as client:
        for platform in ("linux/amd64", "linux/arm64"):
            pulled = await pull_image(store, client, name, platform)
    removal = store.delete(name)
    assert removal.deleted[0] == pulled.digest
    assert store.images() == [] and store.indexes() == []
