"""Writing a cache export: the artifact manifest, an OCI layout directory, a push.

The records and the layer blobs come from the build (``dag`` collects them
and makes the blobs with ``oci``); this module only lays them out.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._format import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, RemoteLayer
from ._sources import CacheRegistry
from .._content import ContentStore


def canonical_json(value: Any) -> bytes:
    """The encoding every document pybuild writes has (``oci``'s too: the same bytes give the same digests)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


async def write_cache(
    directory: Path | None, ref: Any, config: bytes, layers: Sequence[RemoteLayer], blobs: ContentStore,
    *, client: CacheRegistry | None = None, mount_from: Mapping[str, Any] | None = None,
) -> None:
    """One cache export: into the OCI layout ``directory``, or pushed to ``ref``
    (blobs another repository of that registry has are mounted from there)."""
    import trio

    if directory is not None:
        await trio.to_thread.run_sync(write_local, directory, config, layers, blobs)
        return
    assert client is not None and ref is not None, "a registry cache is pushed with a client and a parsed reference"
    config_digest = await trio.to_thread.run_sync(blobs.put, config)
    manifest = cache_manifest(config, layers)
    pushed = [RemoteLayer(config_digest, len(config), CONFIG_MEDIA_TYPE, "")] + _unique(layers)
    await client.push(ref, manifest=manifest, media_type=MANIFEST_MEDIA_TYPE, blobs=pushed, store=blobs, mount_from=mount_from or {})


# ------------------------------------------------------------------ export


def cache_manifest(config: bytes, layers: Sequence[RemoteLayer]) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": CONFIG_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [layer.descriptor() for layer in _unique(layers)],
    }
    return canonical_json(document)


def _unique(layers: Sequence[RemoteLayer]) -> list[RemoteLayer]:
    seen: dict[str, RemoteLayer] = {}
    for layer in layers:
        seen.setdefault(layer.digest, layer)
    return list(seen.values())


def write_local(directory: Path, config: bytes, layers: Sequence[RemoteLayer], store: ContentStore) -> None:
    """An OCI layout with the cache artifact (tagged pybuild-cache) and its blobs."""
    directory.mkdir(parents=True, exist_ok=True)  # the user's own path: a symlink there is followed, once
    blobs = _real_directory(_real_directory(directory / "blobs") / "sha256")
    manifest = cache_manifest(config, layers)

    def put(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        _atomic_write(blobs / digest.split(":", 1)[1], data)
        return digest

    put(config)
    manifest_digest = put(manifest)
    for layer in _unique(layers):
        target = blobs / layer.digest.split(":", 1)[1]
        present = _lstat(target)
        if present is not None and stat.S_ISREG(present.st_mode) and present.st_size == layer.size:
            continue
        with store.open(layer.digest, verify=True) as source:
            _atomic_write(target, source.read())
    _atomic_write(directory / "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": CONFIG_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "pybuild-cache"},
        }],
    }
    _atomic_write(directory / "index.json", canonical_json(index))


def _atomic_write(path: Path, data: bytes) -> None:
    """``data`` as the file ``path``, made whole beside it and renamed in.

    The cache directory may hold anything (a CI cache restored from an
    artifact): the temp file is new (``O_EXCL``, a random name) and the rename
    replaces a symlink at ``path`` rather than writing where it points.
    """
    import secrets

    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with open(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _real_directory(path: Path) -> Path:
    """``path`` as a directory of its own: a symlink found there is replaced, never followed."""
    found = _lstat(path)
    if found is not None and stat.S_ISLNK(found.st_mode):
        path.unlink()
    path.mkdir(exist_ok=True)
    return path


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None
