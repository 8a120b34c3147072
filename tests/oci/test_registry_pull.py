"""Pulling from the fault-injecting Python registry: resolution, verification,
faults and retries.  No wall time: retries sleep on trio's MockClock."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from pybuild.errors import NotFound, RegistryError
from pybuild.oci._network import NetworkLimits
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import BlobProgress, LayerDescriptor, RegistryClient
from pybuild.oci.registry._manifest import DOCKER_MANIFEST_LIST

from .registry_server import (
    OCI_INDEX,
    DictStore,
    FakeRegistry,
    Fault,
    Response,
    error_body,
    image_index,
    on,
    sha256,
    tiny_image,
)

def ref(registry: FakeRegistry, name: str) -> object:
    return parse_reference(f"{registry.netloc}/{name}")


def blob_path(image_blob: bytes) -> str:
    return f"/blobs/{sha256(image_blob)}$"


async def pull(registry: FakeRegistry, name: str, store: DictStore, platform: str = "linux/amd64", **options):  # type: ignore[no-untyped-def]
    async with RegistryClient(**options) as client:
        return await client.pull(ref(registry, name), platform, store)


# --- the happy paths -----------------------------------------------------------


async def test_pull_stores_manifest_config_and_layers(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"etc/hello": b"hello\n"}, {"usr/bin/tool": b"#!/bin/sh\n" * 100})
    fake_registry.add_image("team/app", "1", image)
    store = DictStore()
    progress: list[BlobProgress] = []

    async with RegistryClient() as client:
        resolved = await client.pull(ref(fake_registry, "team/app:1"), "linux/amd64", store, on_progress=progress.append)

    assert resolved.digest == image.digest
    assert resolved.manifest == image.manifest
    assert resolved.config == image.config
    assert resolved.config_digest == sha256(image.config)
    assert resolved.index_digest is None
    assert [layer.digest for layer in resolved.layers] == [sha256(layer) for layer in image.layers]
    assert set(store.blobs) == {image.digest, *image.blobs}
    for digest, data in store.blobs.items():
        assert sha256(data) == digest
    finished = {p.digest for p in progress if p.done == p.size}
    assert finished == {sha256(layer) for layer in image.layers}
    assert store.open_writers == 0


async def test_index_is_resolved_to_the_build_platform(fake_registry: FakeRegistry) -> None:
    amd64 = tiny_image({"arch": b"amd64"}, architecture="amd64")
    arm64 = tiny_image({"arch": b"arm64"}, architecture="arm64")
    armv7 = tiny_image({"arch": b"armv7"}, architecture="arm")
    for image in (amd64, arm64, armv7):
        fake_registry.add_image("multi", image.digest, image)
    index = image_index((armv7, "arm", "v7"), (arm64, "arm64", "v8"), (amd64, "amd64", ""))
    index_digest = fake_registry.add_manifest("multi", "latest", index, OCI_INDEX)

    async with RegistryClient() as client:
        chosen = {platform: await client.resolve(ref(fake_registry, "multi"), platform) for platform in
                  ("linux/amd64", "linux/arm64", "linux/arm/v7", "linux/arm")}
        with pytest.raises(NotFound) as missing:
            await client.resolve(ref(fake_registry, "multi"), "linux/s390x")

    assert chosen["linux/amd64"].digest == amd64.digest
    assert chosen["linux/arm64"].digest == arm64.digest
    assert chosen["linux/arm/v7"].digest == armv7.digest == chosen["linux/arm"].digest
    assert all(r.index_digest == index_digest for r in chosen.values())
    assert json.loads(chosen["linux/arm64"].config)["architecture"] == "arm64"
    assert "linux/s390x" in str(missing.value) and "linux/amd64" in str(missing.value)


async def test_docker_manifest_list_and_pull_by_digest(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"a": b"a"})
    fake_registry.add_image("listed", "x", image)
    listing = json.dumps({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": image.digest,
                       "size": len(image.manifest), "platform": {"os": "linux", "architecture": "amd64"}}],
    }).encode()
    list_digest = fake_registry.add_manifest("listed", None, listing, DOCKER_MANIFEST_LIST)
    store = DictStore()

    resolved = await pull(fake_registry, f"listed@{list_digest}", store)

    assert resolved.digest == image.digest and resolved.index_digest == list_digest
    assert image.digest in store.blobs


async def test_a_layer_pulled_once_is_shared(fake_registry: FakeRegistry) -> None:
    shared = {"shared/file": b"x" * 5000}
    first = tiny_image(shared, {"one": b"1"})
    second = tiny_image(shared, {"two": b"2"})
    fake_registry.add_image("one", "1", first)
    fake_registry.add_image("two", "1", second)
    shared_digest = sha256(first.layers[0])
    store = DictStore()

    async with RegistryClient() as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.pull, ref(fake_registry, "one:1"), "linux/amd64", store)
        nursery.start_soon(client.pull, ref(fake_registry, "two:1"), "linux/amd64", store)

    assert fake_registry.count("GET", f"/blobs/{shared_digest}$") == 1
    assert store.commits.count(shared_digest) == 1
    assert {*first.blobs, *second.blobs} <= set(store.blobs)

    layer_gets = sum(fake_registry.count("GET", f"/blobs/{sha256(layer)}$") for layer in {*first.layers, *second.layers})
    assert layer_gets == 3

    async with RegistryClient() as client:  # a later pull finds every layer in the store
        await client.pull(ref(fake_registry, "two:1"), "linux/amd64", store)
    assert sum(fake_registry.count("GET", f"/blobs/{sha256(layer)}$") for layer in second.layers) == 2


async def test_manifest_exists(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("exists", "yes", image)
    async with RegistryClient() as client:
        assert await client.manifest_exists(ref(fake_registry, "exists:yes")) == image.digest
        assert await client.manifest_exists(ref(fake_registry, "exists:no")) is None


# --- verification --------------------------------------------------------------


async def test_blob_with_wrong_digest_is_refused_and_not_stored(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"good": b"good"})
    fake_registry.add_image("bad", "1", image)
    layer = sha256(image.layers[0])
    data = bytearray(image.layers[0])
    data[len(data) // 2] ^= 0xFF  # same size, one byte changed
    fake_registry.blobs[layer] = bytes(data)
    store = DictStore()

    with pytest.raises(RegistryError) as caught:
        await pull(fake_registry, "bad:1", store)

    message = str(caught.value)
    assert message.startswith(f"digest mismatch for blob {layer}: registry sent sha256:")
    assert sha256(fake_registry.blobs[layer]) in message
    assert "\n" not in message
    assert not store.has(layer)
    assert layer not in store.commits
    assert store.open_writers == 0
    assert fake_registry.count("GET", f"/blobs/{layer}$") == 1  # a wrong digest is not retried


async def test_blob_larger_than_its_descriptor_is_refused(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("big", "1", image)
    layer = sha256(image.layers[0])
    fake_registry.blobs[layer] = image.layers[0] + b"extra"
    store = DictStore()

    with pytest.raises(RegistryError, match=f"size mismatch for blob {layer}"):
        await pull(fake_registry, "big:1", store)
    assert not store.has(layer)


async def test_manifest_that_does_not_match_its_digest_is_refused(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    other = tiny_image({"g": b"g"})
    fake_registry.add_image("m", "1", image)
    # The registry answers a request by digest with other content.
    fake_registry.manifests[("m", image.digest)] = ("application/vnd.oci.image.manifest.v1+json", other.manifest)
    store = DictStore()

    with pytest.raises(RegistryError, match=f"digest mismatch for manifest {image.digest}: registry sent {other.digest}"):
        await pull(fake_registry, f"m@{image.digest}", store)
    assert store.blobs == {}


async def test_index_entry_with_wrong_size_is_refused(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("sized", image.digest, image)
    index = json.loads(image_index((image, "amd64", "")))
    index["manifests"][0]["size"] += 1
    fake_registry.add_manifest("sized", "latest", json.dumps(index).encode(), OCI_INDEX)

    with pytest.raises(RegistryError, match="size mismatch for manifest"):
        await pull(fake_registry, "sized", DictStore())


# --- faults and retries --------------------------------------------------------


async def test_truncated_body_is_resumed(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"big": bytes(range(256)) * 400})
    fake_registry.add_image("cut", "1", image)
    layer = image.layers[0]
    fake_registry.faults.append(
        Fault(on("GET", blob_path(layer)), alter=lambda request, response: Response(
            response.status, response.headers, response.body, send_only=len(response.body) // 3))
    )
    store = DictStore()

    await pull(fake_registry, "cut:1", store)

    gets = [r for r in fake_registry.requests if r.method == "GET" and r.path.endswith(sha256(layer))]
    assert len(gets) == 2
    assert "range" not in gets[0].headers
    assert gets[1].headers["range"] == f"bytes={len(layer) // 3}-"
    assert store.blobs[sha256(layer)] == layer


async def test_resume_ignored_by_the_server_starts_over(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"big": bytes(range(256)) * 300})
    fake_registry.add_image("norange", "1", image)
    layer = image.layers[0]
    fake_registry.faults += [
        Fault(on("GET", blob_path(layer)), alter=lambda request, response: Response(
            200, response.headers, response.body, send_only=100)),
        # The second answer ignores Range and sends the whole blob with 200.
        Fault(on("GET", blob_path(layer)), respond=lambda request: Response(200, {}, layer)),
    ]
    store = DictStore()

    await pull(fake_registry, "norange:1", store)

    assert store.blobs[sha256(layer)] == layer


async def test_always_truncated_fails_cleanly(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"big": b"z" * 10000})
    fake_registry.add_image("cut", "1", image)
    layer = image.layers[0]
    fake_registry.faults.append(
        Fault(on("GET", blob_path(layer)), times=None,
              respond=lambda request: Response(200, {"Content-Length": str(len(layer))}, b"", send_only=0))
    )
    store = DictStore()

    with pytest.raises(RegistryError) as caught:
        await pull(fake_registry, "cut:1", store, retries=2)

    assert "tried 3 times" in str(caught.value)
    assert fake_registry.count("GET", blob_path(layer)) == 3
    assert not store.has(sha256(layer)) and store.open_writers == 0


async def test_500_then_success(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"f": b"f" * 100})
    fake_registry.add_image("flaky", "1", image)
    layer = image.layers[0]
    fake_registry.faults += [
        Fault(on("GET", "/manifests/1$"), times=2, respond=lambda r: Response(500, {}, error_body("UNKNOWN", "boom"))),
        Fault(on("GET", blob_path(layer)), times=1, respond=lambda r: Response(503)),
    ]
    store = DictStore()

    resolved = await pull(fake_registry, "flaky:1", store)

    assert resolved.digest == image.digest
    assert fake_registry.count("GET", "/manifests/1$") == 3
    assert fake_registry.count("GET", blob_path(layer)) == 2
    assert store.blobs[sha256(layer)] == layer


async def test_persistent_500_is_one_clear_line(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    fake_registry.faults.append(Fault(on("GET", "/manifests/"), times=None, respond=lambda r: Response(502)))

    with pytest.raises(RegistryError) as caught:
        await pull(fake_registry, "down:1", DictStore(), retries=3)

    assert fake_registry.count("GET", "/manifests/") == 4
    text = str(caught.value)
    assert "502 Bad Gateway" in text and "tried 4 times" in text and "\n" not in text
    assert caught.value.hint


async def test_429_waits_for_retry_after(fake_registry: FakeRegistry, mock_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("limited", "1", image)
    fake_registry.faults.append(
        Fault(on("GET", "/manifests/1$"), respond=lambda r: Response(429, {"Retry-After": "2"}, error_body("TOOMANYREQUESTS", "slow down")))
    )
    results: list[object] = []

    async def run() -> None:
        results.append(await pull(fake_registry, "limited:1", DictStore()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert fake_registry.count("GET", "/manifests/1$") == 1
        mock_clock.jump(1.9)
        await trio.testing.wait_all_tasks_blocked()
        assert fake_registry.count("GET", "/manifests/1$") == 1  # still waiting
        mock_clock.jump(0.2)
    first, second = [r for r in fake_registry.requests if r.path.endswith("/manifests/1")]
    assert second.time - first.time >= 2
    assert results and results[0].digest == image.digest  # type: ignore[attr-defined]


async def test_connection_refused_is_retried_then_one_line(autojump_clock: trio.testing.MockClock) -> None:
    """A refused port is tried three times with short waits whatever the
    client's retries for passing failures (see test_registry_unreachable.py
    for why, and BuildKit's retry handler, which does not retry it at all)."""
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now

    start = trio.current_time()
    with pytest.raises(RegistryError) as caught:
        async with RegistryClient() as client:  # 4 retries for 5xx and drops
            await client.resolve(parse_reference(f"127.0.0.1:{port}/nobody:1"), "linux/amd64")
    message = str(caught.value)
    assert f"cannot connect to 127.0.0.1:{port} (connection refused)" in message and "tried 3 times" in message
    assert "\n" not in message
    assert trio.current_time() - start < 1.0  # virtual seconds of waiting (MockClock), not 4 to 8


async def test_a_silent_server_times_out(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    accepted: list[trio.SocketStream] = []

    async def swallow(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    nursery.start_soon(trio.serve_listeners, swallow, listeners)

    with pytest.raises(RegistryError, match="no response within 5 s") as caught:
        async with RegistryClient(limits=NetworkLimits(connect_timeout=5, stall_timeout=5), retries=1) as client:
            await client.resolve(parse_reference(f"127.0.0.1:{port}/silent:1"), "linux/amd64")
    assert len(accepted) == 2
    assert "\n" not in str(caught.value)


# --- errors users see ----------------------------------------------------------


async def test_unknown_manifest_and_repository(fake_registry: FakeRegistry) -> None:
    fake_registry.add_image("known", "1", tiny_image({"f": b"f"}))
    async with RegistryClient() as client:
        with pytest.raises(NotFound) as manifest:
            await client.resolve(ref(fake_registry, "known:2"), "linux/amd64")
        with pytest.raises(NotFound) as repository:
            await client.resolve(ref(fake_registry, "unknown:1"), "linux/amd64")
    assert str(manifest.value) == f"manifest unknown: {fake_registry.netloc}/known:2"
    assert str(repository.value) == f"repository not found: {fake_registry.netloc}/unknown"


async def test_401_and_403_are_one_line_with_a_hint(fake_registry: FakeRegistry) -> None:
    fake_registry.faults += [
        Fault(on("GET", "/v2/private/manifests/"), times=None, respond=lambda r: Response(401, {}, error_body("UNAUTHORIZED", "no"))),
        Fault(on("GET", "/v2/secret/manifests/"), times=None, respond=lambda r: Response(403, {}, error_body("DENIED", "requested access to the resource is denied"))),
    ]
    async with RegistryClient() as client:
        with pytest.raises(RegistryError) as unauthorized:
            await client.resolve(ref(fake_registry, "private:1"), "linux/amd64")
        with pytest.raises(RegistryError) as denied:
            await client.resolve(ref(fake_registry, "secret:1"), "linux/amd64")
    assert str(unauthorized.value) == f"authentication required for {fake_registry.netloc}/private"
    assert "docker login" in unauthorized.value.hint and "config.json" in unauthorized.value.hint
    assert str(denied.value).startswith(f"access denied to {fake_registry.netloc}/secret")
    assert denied.value.hint


async def test_missing_blob_is_a_registry_error(fake_registry: FakeRegistry) -> None:
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("holes", "1", image)
    layer = sha256(image.layers[0])
    fake_registry.repo_blobs["holes"].discard(layer)
    store = DictStore()

    with pytest.raises(RegistryError, match=f"blob {layer} is unknown"):
        await pull(fake_registry, "holes:1", store)
    assert not store.has(layer)


async def test_fetch_blob_skips_what_the_store_has(fake_registry: FakeRegistry) -> None:
    store = DictStore()
    digest = fake_registry.add_blob("skip", b"payload")
    store.put(b"payload")
    async with RegistryClient() as client:
        await client.fetch_blob(ref(fake_registry, "skip"), LayerDescriptor(digest, 7, ""), store)
    assert fake_registry.count("GET", "/blobs/") == 0


async def test_with_the_cache_packages_memory_store(fake_registry: FakeRegistry) -> None:
    from pybuild.cache import MemoryContentStore

    good = tiny_image({"good": b"good" * 50})
    bad = tiny_image({"bad": b"bad" * 50})
    fake_registry.add_image("good", "1", good)
    fake_registry.add_image("bad", "1", bad)
    layer = sha256(bad.layers[0])
    fake_registry.blobs[layer] = bytes(reversed(bad.layers[0]))
    store = MemoryContentStore()

    async with RegistryClient() as client:
        await client.pull(ref(fake_registry, "good:1"), "linux/amd64", store)
        with pytest.raises(RegistryError, match="digest mismatch"):
            await client.pull(ref(fake_registry, "bad:1"), "linux/amd64", store)

    assert {digest for digest, _ in store.list()} == {good.digest, *good.blobs, bad.digest, sha256(bad.config)}
    assert all(store.verify(digest) for digest, _ in store.list())


async def test_single_platform_image_of_another_platform_is_used_with_a_warning(
    fake_registry: FakeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    image = tiny_image({"f": b"f"}, architecture="arm64")
    fake_registry.add_image("armonly", "1", image)
    async with RegistryClient() as client:
        resolved = await client.resolve(ref(fake_registry, "armonly:1"), "linux/amd64")
    assert resolved.digest == image.digest
    assert any("linux/arm64" in r.getMessage() and "linux/amd64" in r.getMessage() for r in caplog.records)
