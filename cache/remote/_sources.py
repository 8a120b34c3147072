"""Reading a cache export: from a registry (an artifact, or an image's inline
records) or an OCI layout directory.

Only small documents are read here; a layer's blob is fetched later, when a
build needs it (``BlobSource.fetch``).  What the registry must do is the
``CacheRegistry`` Protocol: ``oci``'s registry client satisfies it, and
``dag`` hands it in, since ``cache`` may not import ``oci``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from ._format import (
    CONFIG_MEDIA_TYPE,
    INLINE_KEY,
    CacheImportError,
    CacheSpec,
    RemoteCache,
    RemoteLayer,
    records_from_json,
)
from .._content import ContentStore


class CacheRegistry(Protocol):
    """What reading and writing a cache needs of a registry client (``oci.RegistryClient``)."""

    async def get_manifest(self, ref: Any) -> tuple[bytes, str, str]: ...

    async def resolve(self, ref: Any, platform: str) -> Any: ...

    async def fetch_blob(self, ref: Any, layer: Any, store: Any) -> Any: ...

    async def push(self, ref: Any, *, manifest: bytes, media_type: str, blobs: Any, store: Any, mount_from: Any) -> Any: ...


# ------------------------------------------------------------------ sources


class RegistrySource:
    def __init__(self, client: CacheRegistry, ref: Any) -> None:
        self.client = client
        self.ref = ref
        self.name = str(ref)

    async def fetch(self, layer: RemoteLayer, store: ContentStore) -> None:
        await self.client.fetch_blob(self.ref, layer, store)

    def registry_ref(self) -> Any:
        return self.ref


class LocalSource:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = str(directory)

    async def fetch(self, layer: RemoteLayer, store: ContentStore) -> None:
        import trio

        def copy() -> None:
            if store.has(layer.digest):
                return
            path = self.directory / "blobs" / "sha256" / layer.digest.split(":", 1)[1]
            with open(path, "rb") as source, store.writer(layer.digest, layer.size) as writer:
                while chunk := source.read(1 << 20):
                    writer.write(chunk)
                writer.commit()

        await trio.to_thread.run_sync(copy)

    def registry_ref(self) -> None:
        return None


async def import_cache(
    spec: CacheSpec, *, ref: Any = None, client: CacheRegistry | None, platform: str, blob_client: CacheRegistry | None = None
) -> RemoteCache:
    """Read the records of one cache source (small documents only: no layer is
    downloaded; ``blob_client``, if given, fetches them later).  ``ref`` is
    ``spec.ref`` parsed (by ``oci``), for a registry source.  Its cache mounts
    are used only if the user asked (cache-mounts=true)."""
    cache = await _read_cache(spec, client, platform, ref)
    cache.ignore_error = spec.ignore_error
    if blob_client is not None and isinstance(cache.source, RegistrySource):
        cache.source.client = blob_client
    if not spec.cache_mounts:
        cache.cache_mounts = {}
    return cache


async def _read_cache(spec: CacheSpec, client: CacheRegistry | None, platform: str, ref: Any) -> RemoteCache:
    if spec.kind == "local":
        return _import_local(Path(spec.path or ""))
    assert client is not None and ref is not None, "a registry cache is read with a client and a parsed reference"
    data, media_type, _ = await client.get_manifest(ref)
    manifest = json.loads(data)
    config = manifest.get("config") or {}
    if config.get("mediaType") == CONFIG_MEDIA_TYPE:
        blob = await _small_blob(client, ref, config)
        records, mounts = records_from_json(json.loads(blob), str(ref))
        return RemoteCache(RegistrySource(client, ref), records, mounts)
    # an image (or an index of images) with inline cache records in its config
    resolved = await client.resolve(ref, platform)
    image_config = json.loads(resolved.config)
    inline = image_config.get(INLINE_KEY)
    if inline is None:
        raise CacheImportError(f"{ref} has no pybuild cache records", hint="build it with --cache-to type=inline")
    records, mounts = records_from_json(inline, str(ref))
    return RemoteCache(RegistrySource(client, ref), records, mounts)


async def _small_blob(client: CacheRegistry, ref: Any, descriptor: Mapping[str, Any]) -> bytes:
    from .._content import MemoryContentStore

    memory = MemoryContentStore()
    layer = RemoteLayer(descriptor["digest"], int(descriptor["size"]), descriptor.get("mediaType", ""), "")
    await client.fetch_blob(ref, layer, memory)
    with memory.open(layer.digest, verify=True) as f:
        return f.read()


def _import_local(directory: Path) -> RemoteCache:
    try:
        index = json.loads((directory / "index.json").read_text())
        [entry] = [m for m in index.get("manifests", []) if m.get("artifactType") == CONFIG_MEDIA_TYPE or m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "pybuild-cache"]
        manifest = json.loads(_local_blob(directory, entry["digest"]))
        config = json.loads(_local_blob(directory, manifest["config"]["digest"]))
    except (OSError, ValueError, KeyError) as error:
        raise CacheImportError(f"{directory}: not a readable pybuild cache ({error})") from None
    records, mounts = records_from_json(config, str(directory))
    return RemoteCache(LocalSource(directory), records, mounts)


def _local_blob(directory: Path, digest: str) -> bytes:
    import hashlib

    data = (directory / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ValueError(f"blob {digest} is corrupt")
    return data

