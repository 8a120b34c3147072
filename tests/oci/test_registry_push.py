"""Pushing to the fault-injecting Python registry: uploads, skips, mounts, restarts."""

from __future__ import annotations

import random

import pytest
import trio.testing

from pybuild.errors import CorruptContent, ImageError, NotFound, RegistryError
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import BlobOutcome, LayerDescriptor, RegistryClient
from pybuild.oci.registry._manifest import OCI_MANIFEST

from .registry_server import (
    DictStore,
    FakeRegistry,
    Fault,
    Response,
    TinyImage,
    sha256,
    tiny_image,
)


def descriptors(image: TinyImage) -> list[LayerDescriptor]:
    return [LayerDescriptor(d, s, m) for d, s, m in image.descriptors()]


async def push(registry: FakeRegistry, name: str, image: TinyImage, store: DictStore, *, mount_from=None, outcomes=None, **options) -> str:  # type: ignore[no-untyped-def]
    """Push ``image``; ``outcomes`` (a dict) learns what happened to each blob."""
    async with RegistryClient(**options) as client:
        return await client.push(
            parse_reference(f"{registry.netloc}/{name}"),
            manifest=image.manifest,
            media_type=OCI_MANIFEST,
            blobs=descriptors(image),
            store=store,
            mount_from=mount_from or {},
            on_blob=None if outcomes is None else outcomes.__setitem__,
        )


def image_with_big_layer() -> TinyImage:
    noise = random.Random(6).randbytes(60_000)  # gzip cannot shrink it
    return tiny_image({"noise": noise})


async def test_monolithic_push(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"hello": b"hello"})
    store = DictStore()
    image.store_into(store)

    digest = await push(fake_registry, "app:1", image, store)

    assert digest == image.digest
    assert fake_registry.manifests[("app", "1")] == (OCI_MANIFEST, image.manifest)
    for blob_digest, data in image.blobs.items():
        assert fake_registry.blobs[blob_digest] == data
    assert fake_registry.count("PATCH") == 0
    puts = [r for r in fake_registry.requests if r.method == "PUT" and "/uploads/" in r.path]
    assert len(puts) == 2 and all(r.param("_state") == "opaque" for r in puts)  # the registry's query is kept


async def test_chunked_push_above_the_threshold(fake_registry: FakeRegistry) -> None:
    image = image_with_big_layer()
    store = DictStore()
    image.store_into(store)
    layer = image.layers[0]

    await push(fake_registry, "chunky:1", image, store, monolithic_upload_limit=10_000, upload_chunk_size=16_384)

    assert fake_registry.blobs[sha256(layer)] == layer
    patches = [r for r in fake_registry.requests if r.method == "PATCH"]
    assert len(patches) == -(-len(layer) // 16_384)
    ranges = [r.headers["content-range"] for r in patches]
    assert ranges[0] == f"0-{16_384 - 1}" and ranges[-1].endswith(f"-{len(layer) - 1}")
    assert fake_registry.manifests[("chunky", "1")][1] == image.manifest


async def test_second_push_skips_existing_blobs(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"a": b"a"}, {"b": b"b"})
    store = DictStore()
    image.store_into(store)

    first: dict = {}
    await push(fake_registry, "again:1", image, store, outcomes=first)
    uploads_before = fake_registry.count("POST", "/blobs/uploads/")
    second: dict = {}
    await push(fake_registry, "again:2", image, store, outcomes=second)

    assert first == {d: BlobOutcome.PUSHED for d in image.blobs}
    assert second == {d: BlobOutcome.EXISTS for d in image.blobs}

    assert uploads_before == 3
    assert fake_registry.count("POST", "/blobs/uploads/") == 3
    assert fake_registry.manifests[("again", "2")][1] == image.manifest


async def test_cross_repository_mount(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"shared": b"shared"})
    store = DictStore()
    image.store_into(store)
    await push(fake_registry, "base:1", image, store)
    source = parse_reference(f"{fake_registry.netloc}/base:1")
    puts_before = fake_registry.count("PUT", "/uploads/")

    outcomes: dict = {}
    await push(fake_registry, "derived:1", image, store, mount_from={d: source for d in image.blobs}, outcomes=outcomes)

    assert outcomes == {d: BlobOutcome.MOUNTED for d in image.blobs}

    mounts = [r for r in fake_registry.requests if r.method == "POST" and r.param("mount")]
    assert sorted(r.param("mount") for r in mounts) == sorted(image.blobs)
    assert all(r.param("from") == "base" for r in mounts)
    assert fake_registry.count("PUT", "/uploads/") == puts_before  # nothing uploaded again
    assert image.blobs.keys() <= fake_registry.repo_blobs["derived"]


async def test_mount_refused_falls_back_to_upload(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    store = DictStore()
    image.store_into(store)
    elsewhere = parse_reference(f"{fake_registry.netloc}/does-not-have-it:1")

    outcomes: dict = {}
    await push(fake_registry, "fallback:1", image, store, mount_from={d: elsewhere for d in image.blobs}, outcomes=outcomes)

    assert outcomes == {d: BlobOutcome.PUSHED for d in image.blobs}  # the registry did not mount: uploaded

    assert fake_registry.count("POST", "/blobs/uploads/") == 2
    assert fake_registry.count("PUT", "/uploads/") == 2  # uploaded into the session the mount opened
    assert image.blobs.keys() <= fake_registry.repo_blobs["fallback"]


async def test_mount_from_another_registry_is_not_attempted(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    store = DictStore()
    image.store_into(store)
    foreign = parse_reference("registry.example.com/base:1")

    await push(fake_registry, "own:1", image, store, mount_from={d: foreign for d in image.blobs})

    assert not any(r.param("mount") for r in fake_registry.requests)


async def test_failed_chunk_restarts_the_upload(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    image = image_with_big_layer()
    store = DictStore()
    image.store_into(store)
    fake_registry.faults.append(Fault(lambda r: r.method == "PATCH" and r.headers["content-range"].startswith("16384-"),
                                      respond=lambda r: Response(500)))

    await push(fake_registry, "restart:1", image, store, monolithic_upload_limit=10_000, upload_chunk_size=16_384)

    assert fake_registry.blobs[sha256(image.layers[0])] == image.layers[0]
    assert fake_registry.count("POST", "/blobs/uploads/") == 3  # config, layer, layer again


async def test_dropped_connection_during_upload_is_retried(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"f": b"f" * 3000})
    store = DictStore()
    image.store_into(store)
    layer = sha256(image.layers[0])
    fake_registry.faults.append(Fault(lambda r: r.method == "PUT" and r.param("digest") == layer,
                                      respond=lambda r: Response(500, drop=True)))

    await push(fake_registry, "dropped:1", image, store)

    assert fake_registry.blobs[layer] == image.layers[0]
    assert fake_registry.count("POST", "/blobs/uploads/") == 3  # config, layer, layer again


async def test_corrupt_local_blob_is_never_completed(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f" * 3000})
    store = DictStore()
    image.store_into(store)
    layer = sha256(image.layers[0])
    damaged = bytearray(image.layers[0])
    damaged[10] ^= 1
    store.blobs[layer] = bytes(damaged)

    with pytest.raises(CorruptContent, match=layer):
        await push(fake_registry, "corrupt:1", image, store)

    assert layer not in fake_registry.blobs
    assert ("corrupt", "1") not in fake_registry.manifests


async def test_push_refuses_missing_or_mismatched_input(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    with pytest.raises(NotFound, match="not in the content store"):
        await push(fake_registry, "missing:1", image, DictStore())

    store = DictStore()
    image.store_into(store)
    async with RegistryClient() as client:
        with pytest.raises(ImageError, match="not sha256:"):
            await client.push(
                parse_reference(f"{fake_registry.netloc}/pinned@sha256:{'0' * 64}"),
                manifest=image.manifest, media_type=OCI_MANIFEST, blobs=descriptors(image), store=store,
            )
    assert fake_registry.requests == []


async def test_registry_rejecting_the_manifest_is_one_line(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    store = DictStore()
    image.store_into(store)
    layer_only = [d for d in descriptors(image) if d.digest != sha256(image.config)]

    with pytest.raises(RegistryError) as caught:
        async with RegistryClient() as client:
            await client.push(
                parse_reference(f"{fake_registry.netloc}/incomplete:1"),
                manifest=image.manifest, media_type=OCI_MANIFEST, blobs=layer_only, store=store,
            )
    assert "400" in str(caught.value) and "blob unknown" in str(caught.value) and "\n" not in str(caught.value)


async def test_push_by_digest(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    store = DictStore()
    image.store_into(store)

    digest = await push(fake_registry, f"bydigest@{image.digest}", image, store)

    assert digest == image.digest
    assert [r.path for r in fake_registry.requests if r.method == "PUT" and "/manifests/" in r.path] == [
        f"/v2/bydigest/manifests/{image.digest}"
    ]
