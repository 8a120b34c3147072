"""Interoperability with the real CNCF distribution registry and skopeo.

pybuild pushes, skopeo inspects and copies; skopeo pushes, pybuild pulls into
the real content store.  Requests are observed through a recording httpx
transport, so skip/mount behaviour is counted, not assumed.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import httpx
import pytest
import trio

from pybuild.cache import FileContentStore
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import LayerDescriptor, RegistryClient
from pybuild.oci.registry._manifest import OCI_MANIFEST

from .conftest import RunningRegistry
from .registry_server import (
    OCI_INDEX,
    TinyImage,
    image_index,
    sha256,
    tiny_image,
)

pytestmark = [
    pytest.mark.peers,
    pytest.mark.tool("skopeo"),
]


class RecordingTransport(httpx.AsyncBaseTransport):
    """httpx's own transport, recording (method, path, query, status) of each request."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.log: list[tuple[str, str, dict[str, str], int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self.log.append((request.method, request.url.path, dict(request.url.params), response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    def count(self, method: str, path_part: str, **params: str) -> int:
        return sum(
            1
            for m, path, query, _status in self.log
            if m == method and path_part in path and all(query.get(k) == v for k, v in params.items())
        )


async def skopeo(*args: str) -> str:
    done = await trio.run_process(["skopeo", *args], capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def descriptors(image: TinyImage) -> list[LayerDescriptor]:
    return [LayerDescriptor(d, s, m) for d, s, m in image.descriptors()]


def file_store(root: Path) -> FileContentStore:
    staging = root / "staging"
    staging.mkdir(parents=True, exist_ok=True)
    return FileContentStore(root / "blobs", lambda: staging)


def store_image(image: TinyImage, root: Path) -> FileContentStore:
    store = file_store(root)
    for blob in image.blobs.values():
        store.put(blob)
    return store


async def push(client: RegistryClient, registry: RunningRegistry, name: str, image: TinyImage, store: FileContentStore, **kw) -> str:  # type: ignore[no-untyped-def]
    return await client.push(
        parse_reference(f"{registry.host}/{name}"),
        manifest=image.manifest,
        media_type=OCI_MANIFEST,
        blobs=descriptors(image),
        store=store,
        **kw,
    )


def write_oci_layout(directory: Path, blobs: list[bytes], entry: dict) -> None:
    """An OCI image layout with the given blobs and one index.json entry."""
    (directory / "blobs" / "sha256").mkdir(parents=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    for blob in blobs:
        (directory / "blobs" / "sha256" / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


async def test_pushed_image_passes_skopeo(docker_registry: RunningRegistry, tmp_path: Path) -> None:
    image = tiny_image({"etc/greeting": b"hello from pybuild\n"}, label="push")
    store = store_image(image, tmp_path)

    async with RegistryClient() as client:
        digest = await push(client, docker_registry, "test/img:1", image, store)

    assert digest == image.digest
    inspected = json.loads(await skopeo("inspect", "--tls-verify=false", f"docker://{docker_registry.host}/test/img:1"))
    assert inspected["Digest"] == image.digest
    assert inspected["Labels"] == {"test": "push"}
    raw = await skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{docker_registry.host}/test/img:1")
    assert raw.encode() == image.manifest
    # skopeo copies (and so verifies) every blob back out.
    await skopeo("copy", "--src-tls-verify=false", f"docker://{docker_registry.host}/test/img:1", f"oci:{tmp_path / 'out'}:copy")
    copied = json.loads((tmp_path / "out" / "index.json").read_text())
    assert copied["manifests"][0]["digest"] == image.digest


async def test_image_pushed_by_skopeo_is_pulled(docker_registry: RunningRegistry, tmp_path: Path) -> None:
    image = tiny_image({"bin/tool": random.Random(1).randbytes(3000)}, {"etc/conf": b"x=1\n"}, label="skopeo")
    write_oci_layout(tmp_path / "layout", [image.manifest, *image.blobs.values()], {
        "mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest),
        "annotations": {"org.opencontainers.image.ref.name": "v1"},
    })
    target = f"{docker_registry.host}/test/from-skopeo:v1"
    await skopeo("copy", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:v1", f"docker://{target}")
    expected = json.loads(await skopeo("inspect", "--tls-verify=false", f"docker://{target}"))["Digest"]
    store = file_store(tmp_path / "store")

    async with RegistryClient() as client:
        resolved = await client.pull(parse_reference(target), "linux/amd64", store)

    assert resolved.digest == expected
    wanted = {resolved.digest, resolved.config_digest, *(layer.digest for layer in resolved.layers)}
    assert {digest for digest, _size in store.list()} == wanted
    for digest in wanted:
        assert store.verify(digest)
    for layer in resolved.layers:
        assert store.size(layer.digest) == layer.size
    assert json.loads(resolved.config)["config"]["Labels"] == {"test": "skopeo"}


async def test_index_pushed_by_skopeo_resolves_to_the_platform(docker_registry: RunningRegistry, tmp_path: Path) -> None:
    amd64 = tiny_image({"arch": b"amd64"}, architecture="amd64")
    arm64 = tiny_image({"arch": b"arm64"}, architecture="arm64")
    index = image_index((amd64, "amd64", ""), (arm64, "arm64", "v8"))
    blobs = [index, amd64.manifest, arm64.manifest, *amd64.blobs.values(), *arm64.blobs.values()]
    write_oci_layout(tmp_path / "layout", blobs, {
        "mediaType": OCI_INDEX, "digest": sha256(index), "size": len(index),
        "annotations": {"org.opencontainers.image.ref.name": "multi"},
    })
    target = f"{docker_registry.host}/test/multi:1"
    await skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{tmp_path / 'layout'}:multi", f"docker://{target}")

    async with RegistryClient() as client:
        on_arm = await client.resolve(parse_reference(target), "linux/arm64")
        on_amd = await client.resolve(parse_reference(target), "linux/amd64")

    assert on_arm.digest == arm64.digest and on_amd.digest == amd64.digest
    assert on_arm.index_digest == on_amd.index_digest == sha256(index)


async def test_second_push_skips_blobs_and_other_repository_mounts(docker_registry: RunningRegistry, tmp_path: Path) -> None:
    image = tiny_image({"a": b"layer a"}, {"b": b"layer b"}, label="mount")
    store = store_image(image, tmp_path)
    transport = RecordingTransport()

    async with RegistryClient(transport=transport) as client:
        await push(client, docker_registry, "test/base:1", image, store)
        first_uploads = transport.count("POST", "/blobs/uploads/")
        await push(client, docker_registry, "test/base:2", image, store)
        second_uploads = transport.count("POST", "/blobs/uploads/") - first_uploads
        source = parse_reference(f"{docker_registry.host}/test/base:1")
        await push(client, docker_registry, "test/derived:1", image, store, mount_from={d: source for d in image.blobs})

    assert first_uploads == 3 and second_uploads == 0
    mounts = [entry for entry in transport.log if entry[0] == "POST" and entry[2].get("mount")]
    assert sorted(query["mount"] for _m, _p, query, _s in mounts) == sorted(image.blobs)
    assert all(query["from"] == "test/base" and status == 201 for _m, _p, query, status in mounts)
    assert transport.count("PUT", "/v2/test/derived/blobs/uploads/") == 0
    inspected = json.loads(await skopeo("inspect", "--tls-verify=false", f"docker://{docker_registry.host}/test/derived:1"))
    assert inspected["Digest"] == image.digest


async def test_chunked_upload_to_the_real_registry(docker_registry: RunningRegistry, tmp_path: Path) -> None:
    image = tiny_image({"noise": random.Random(2).randbytes(200_000)})
    store = store_image(image, tmp_path)
    transport = RecordingTransport()

    async with RegistryClient(transport=transport, monolithic_upload_limit=50_000, upload_chunk_size=64 * 1024) as client:
        await push(client, docker_registry, "test/chunked:1", image, store)

    assert transport.count("PATCH", "/v2/test/chunked/blobs/uploads/") == -(-len(image.layers[0]) // (64 * 1024))
    await skopeo("copy", "--src-tls-verify=false", f"docker://{docker_registry.host}/test/chunked:1", f"oci:{tmp_path / 'out'}:c")
    pulled = tmp_path / "out" / "blobs" / "sha256" / sha256(image.layers[0]).removeprefix("sha256:")
    assert pulled.read_bytes() == image.layers[0]
