"""Manifests a client could read two ways are refused, as the distribution
spec asks: both ``manifests`` and ``layers``/``config``, or a ``mediaType``
field that differs from the Content-Type they are served with."""

from __future__ import annotations

import json
import re

import pytest

from pybuild.errors import ImageError, RegistryError
from pybuild.oci._formats import parse_image_document
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import RegistryClient
from pybuild.oci.registry._manifest import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST

from .registry_server import OCI_INDEX, OCI_MANIFEST, DictStore, FakeRegistry, image_index, tiny_image


async def pull(registry: FakeRegistry, name: str, store: DictStore) -> object:
    async with RegistryClient() as client:
        return await client.pull(parse_reference(f"{registry.netloc}/{name}"), "linux/amd64", store)


def ambiguous(image: object) -> bytes:
    """An image manifest that also carries an index's ``manifests``."""
    document = json.loads(image.manifest)  # type: ignore[attr-defined]
    document["manifests"] = [{"mediaType": OCI_MANIFEST, "digest": "sha256:" + "a" * 64, "size": 1,
                              "platform": {"os": "linux", "architecture": "amd64"}}]
    return json.dumps(document).encode()


@pytest.mark.parametrize("served_as", [OCI_MANIFEST, OCI_INDEX, "application/json"])
async def test_a_manifest_with_both_manifests_and_layers_is_refused(fake_registry: FakeRegistry, served_as: str) -> None:
    image = tiny_image({"f": b"f"})
    for blob in image.blobs.values():
        fake_registry.add_blob("both", blob)
    fake_registry.add_manifest("both", "1", ambiguous(image), served_as)
    store = DictStore()

    with pytest.raises(RegistryError, match="both manifests and layers") as caught:
        await pull(fake_registry, "both:1", store)
    assert "\n" not in str(caught.value)
    assert store.blobs == {}


@pytest.mark.parametrize(
    ("declared", "served_as"),
    [(OCI_INDEX, OCI_MANIFEST), (DOCKER_MANIFEST, OCI_MANIFEST), (OCI_MANIFEST, DOCKER_MANIFEST_LIST)],
)
async def test_a_media_type_that_differs_from_the_content_type_is_refused(
    fake_registry: FakeRegistry, declared: str, served_as: str
) -> None:
    image = tiny_image({"f": b"f"})
    for blob in image.blobs.values():
        fake_registry.add_blob("mixed", blob)
    document = json.loads(image.manifest)
    document["mediaType"] = declared
    fake_registry.add_manifest("mixed", "1", json.dumps(document).encode(), served_as)
    store = DictStore()

    with pytest.raises(RegistryError, match=re.escape(f"its mediaType is '{declared}' but the registry served it as '{served_as}'")):
        await pull(fake_registry, "mixed:1", store)
    assert store.blobs == {}


async def test_a_manifest_served_as_an_index_is_refused(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    document = json.loads(image.manifest)
    del document["mediaType"]  # nothing to compare: the shape must fit the Content-Type
    for blob in image.blobs.values():
        fake_registry.add_blob("shape", blob)
    fake_registry.add_manifest("shape", "1", json.dumps(document).encode(), OCI_INDEX)

    with pytest.raises(RegistryError, match="has the fields of an image manifest"):
        await pull(fake_registry, "shape:1", DictStore())


async def test_an_index_entry_leading_to_an_index_typed_as_a_manifest_is_refused(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("nested", image.digest, image)
    inner = image_index((image, "amd64", ""))
    inner_digest = fake_registry.add_manifest("nested", None, inner, OCI_INDEX)
    outer = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": inner_digest, "size": len(inner), "platform": {"os": "linux", "architecture": "amd64"}},
    ]}).encode()
    fake_registry.add_manifest("nested", "1", outer, OCI_INDEX)

    with pytest.raises(RegistryError, match="the index lists it as"):
        await pull(fake_registry, "nested:1", DictStore())


async def test_a_generic_content_type_leaves_the_media_type_to_the_document(fake_registry: FakeRegistry) -> None:
    # Static file servers and some proxies answer application/json or octet-stream.
    image = tiny_image({"f": b"f"})
    for blob in image.blobs.values():
        fake_registry.add_blob("plain", blob)
    fake_registry.add_manifest("plain", "1", image.manifest, "application/octet-stream")
    store = DictStore()

    resolved = await pull(fake_registry, "plain:1", store)

    assert resolved.media_type == OCI_MANIFEST  # type: ignore[attr-defined]
    assert image.digest in store.blobs


def test_an_ambiguous_document_in_an_archive_is_refused() -> None:
    image = tiny_image({"f": b"f"})
    with pytest.raises(ImageError, match="both manifests and layers"):
        parse_image_document(ambiguous(image), OCI_MANIFEST, "manifest in the archive")
    index_with_layers = json.loads(image_index((image, "amd64", "")))
    index_with_layers["layers"] = []
    with pytest.raises(ImageError, match="both manifests and layers"):
        parse_image_document(json.dumps(index_with_layers).encode(), None, "index.json")
