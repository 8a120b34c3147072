"""The remote cache's wiring: what a build exports to it and takes from it.

The format, reading and writing live in ``pybuild.cache.remote``, which may
not import ``oci`` or ``dag``; this module hands it what only those know:
the records of a solved plan (with their layers made by ``oci``), parsed
registry references, the registry client, a fetched layer checked against
its diffID, and cache mounts packed and unpacked as layer tars.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from pybuild.cache.remote import (
    CACHE_MOUNT_BUDGET,
    CACHE_MOUNT_MEDIA_TYPE,
    CacheRegistry,
    CacheSpec,
    RemoteCache,
    RemoteLayer,
    RemoteRecord,
    import_cache as read_cache,
    records_to_json,
    write_cache,
)

from ._ops import ExecOp, FileOp

if TYPE_CHECKING:
    from pybuild.cache import ContentStore
    from pybuild.oci import Layer

    from ._convert import BuildPlan
    from ._runner import RemoteCacheRunner
    from ._solver import Result


async def import_remote_cache(
    spec: CacheSpec, *, client: CacheRegistry | None, platform: str, blob_client: CacheRegistry | None = None
) -> RemoteCache:
    """Read one ``--cache-from`` (its records only; layers come when needed)."""
    from pybuild.oci import parse_reference

    ref = parse_reference(spec.ref or "") if spec.kind == "registry" else None
    return await read_cache(spec, ref=ref, client=client, platform=platform, blob_client=blob_client)


def check_diff_id(blobs: ContentStore, layer: RemoteLayer) -> None:
    """The blob must be the layer the record says: another machine's word for the
    diffID goes into image configs only once its content agrees."""
    import hashlib

    from pybuild.errors import CorruptContent
    from pybuild.oci import UnpackBudget, open_decompressed, unpack_limit

    digest = hashlib.sha256()
    with blobs.open(layer.digest, verify=False) as raw:  # the fetch verified its digest
        plain = UnpackBudget(unpack_limit(layer.size), "the cache layer").reader(open_decompressed(raw))
        while chunk := plain.read(1 << 20):
            digest.update(chunk)
    if "sha256:" + digest.hexdigest() != layer.diff_id:
        raise CorruptContent(
            f"cache layer {layer.digest} is not the layer its record names ({layer.diff_id})",
            hint="the cache was written wrongly or tampered with; export it again",
        )


def as_layer(layer: RemoteLayer) -> Layer:
    """A cache record's layer as the image store's frozen value."""
    from pybuild.oci import Layer

    return Layer(layer.diff_id, layer.digest, layer.size, layer.media_type)


def _remote_layer(made: Layer) -> RemoteLayer:
    return RemoteLayer(made.digest, made.size, made.media_type, made.diff_id)


async def collect_records(
    spec: CacheSpec, plan: BuildPlan, results: Mapping[str, Result], runner: RemoteCacheRunner
) -> tuple[list[RemoteRecord], dict[str, Any]]:
    """The records a cache export holds (``mode=min``: the final image's steps;
    ``mode=max``: every step of every stage) and, for layers this runner only
    knows from another cache, where their blobs can be mounted from."""
    # several target platforms: every target's image is final
    targets = [t.target.op for t in (plan.targets or (plan,))]
    final_layers = {layer for op in targets if op and op in results for layer in results[op].chain}
    records: list[RemoteRecord] = []
    mount_from: dict[str, Any] = {}
    for digest, op in plan.definition.ops.items():
        if not isinstance(op, (ExecOp, FileOp)):
            continue
        result, key = results.get(digest), runner.keys.get(digest)
        if result is None or key is None or result.layer is None:
            continue
        if spec.mode == "min" and result.layer not in final_layers:
            continue
        snapshot = result.layer
        pending = runner.pending_remote.get(snapshot)
        if pending is not None and spec.kind == "registry":
            remote, cache, _ = pending
            layer = remote.layer
            source = cache.source.registry_ref()
            if source is not None:
                mount_from[layer.digest] = source
            else:
                await runner.adopt_remote_layer(snapshot)
        else:
            if pending is not None:
                await runner.adopt_remote_layer(snapshot)
            made = await trio.to_thread.run_sync(lambda: runner.layers.layer(snapshot, spec.compression))
            layer = _remote_layer(made)
        records.append(RemoteRecord(key, layer, result.created, snapshot))
    return records, mount_from


async def cache_mount_layers(runner: RemoteCacheRunner, blobs: ContentStore) -> dict[str, RemoteLayer]:
    """Each cache mount the build used, as a gzip layer tar in the content store."""
    from pybuild.oci import Compression, compress_layer

    def pack(directory: Path) -> RemoteLayer:
        with blobs.writer() as writer:
            blob = compress_layer(directory, Compression.GZIP, None, writer)
            writer.commit()
        return RemoteLayer(blob.digest, blob.size, CACHE_MOUNT_MEDIA_TYPE, blob.diff_id)

    out = {}
    for mount_id, directory in runner.used_cache_mounts.items():
        out[mount_id] = await trio.to_thread.run_sync(pack, directory)
    return out


async def export_cache(
    spec: CacheSpec, plan: BuildPlan, results: Mapping[str, Result], runner: RemoteCacheRunner, blobs: ContentStore,
    client: CacheRegistry | None,
) -> None:
    """One ``--cache-to`` (not inline): its records and blobs, written or pushed."""
    from pybuild.oci import canonical_json, parse_reference

    records, mount_from = await collect_records(spec, plan, results, runner)
    mounts = await cache_mount_layers(runner, blobs) if spec.cache_mounts else {}
    config = canonical_json(records_to_json(records, mounts))
    layers = [r.layer for r in records] + list(mounts.values())
    directory = Path(spec.path or "") if spec.kind == "local" else None
    ref = parse_reference(spec.ref or "") if directory is None else None
    await write_cache(directory, ref, config, layers, blobs, client=client, mount_from=mount_from)


def inline_records(plan: BuildPlan, results: Mapping[str, Result], keys: Mapping[str, str], layers: Mapping[str, Layer]) -> dict[str, Any]:
    """The records to embed in the image config (``type=inline``): the final
    image's steps (``mode=min``), each pointing at the image's own layer blob."""
    records = []
    for digest, op in plan.definition.ops.items():
        result, key = results.get(digest), keys.get(digest)
        if not isinstance(op, (ExecOp, FileOp)) or result is None or key is None or result.layer is None or result.layer not in layers:
            continue
        records.append(RemoteRecord(key, _remote_layer(layers[result.layer]), result.created, result.layer))
    return records_to_json(records)


def unpack_cache_mount(blobs: ContentStore, layer: RemoteLayer, directory: Path) -> None:
    """Fill an empty cache mount from an imported one: unpacked beside it, renamed in
    only when complete, so a fault never leaves a half-filled cache behind."""
    import shutil

    from pybuild.oci import apply_layer

    staging = directory.with_name(directory.name + ".import")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with blobs.open(layer.digest, verify=True) as stream:
            apply_layer(stream, staging, size_budget=CACHE_MOUNT_BUDGET)
        for entry in staging.iterdir():
            os.rename(entry, directory / entry.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
