"""Build cache shared between machines: ``--cache-to`` / ``--cache-from`` (issue 8).

A cache export is an OCI artifact: a manifest whose config (media type
``application/vnd.pybuild.cache.config.v1+json``) maps cache keys to the
layer each step made, and whose layers are those layer blobs.  It lives in
a registry (``type=registry,ref=…``), in an OCI layout directory
(``type=local,dest=…``), or inside the image config itself
(``type=inline``: the records only; the blobs are the image's layers).

Import is lazy: a runner that finds a key in a remote cache uses the
record at once and downloads the layer only when a later step runs on top
of it or an export needs its bytes.  Cache keys are computed from content
(context files, base image digests, commands), so they agree across
machines.

Faults in a cache source never fail the build unless the user asks
(``ignore-error=false``): pybuild warns and builds without that cache.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pybuild.errors import PybuildError, UsageError

CONFIG_MEDIA_TYPE = "application/vnd.pybuild.cache.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INLINE_KEY = "pybuild.cache.v1"
CACHE_MOUNT_MEDIA_TYPE = "application/vnd.pybuild.cache.mount.v1.tar+gzip"
FORMAT_VERSION = 1
CACHE_MOUNT_BUDGET = 16 << 30  # bytes an imported cache mount may unpack to


# ------------------------------------------------------------------ specs


@dataclass(frozen=True)
class CacheSpec:
    """One ``--cache-to`` or ``--cache-from`` value."""

    kind: str  # registry | local | inline
    ref: str | None = None
    path: str | None = None
    mode: str = "min"
    compression: str = "gzip"
    ignore_error: bool = True
    cache_mounts: bool = False


def parse_cache_spec(value: str, *, export: bool) -> CacheSpec:
    """``type=registry,ref=HOST/REPO:TAG,mode=max`` and friends; a bare name is an image ref."""
    flag = "--cache-to" if export else "--cache-from"
    if "=" not in value:
        return CacheSpec("registry", ref=value)  # --cache-from IMAGE (inline metadata or an artifact)
    fields: dict[str, str] = {}
    for part in value.split(","):
        key, eq, rest = part.partition("=")
        if not eq:
            raise UsageError(f"invalid {flag} {value!r}: {part!r} is not key=value")
        fields[key.strip().lower()] = rest.strip()
    kind = fields.pop("type", "registry")
    if kind not in ("registry", "local", "inline"):
        raise UsageError(f"{flag} type={kind} is not supported", hint="registry, local or inline")
    spec = CacheSpec(
        kind=kind,
        ref=fields.pop("ref", None),
        path=fields.pop("dest" if export else "src", None),
        mode=fields.pop("mode", "min"),
        compression=fields.pop("compression", "gzip"),
        ignore_error=fields.pop("ignore-error", "true").lower() != "false",
        cache_mounts=fields.pop("cache-mounts", "false").lower() == "true",
    )
    fields.pop("oci-mediatypes", None)  # accepted for BuildKit compatibility: pybuild always writes OCI
    if fields:
        raise UsageError(f"invalid {flag} {value!r}: unknown option {sorted(fields)[0]!r}")
    if spec.mode not in ("min", "max"):
        raise UsageError(f"invalid {flag} mode={spec.mode!r}", hint="mode=min or mode=max")
    if spec.compression not in ("gzip", "zstd", "none"):
        raise UsageError(f"invalid {flag} compression={spec.compression!r}", hint="gzip, zstd or none")
    if spec.kind == "registry" and not spec.ref:
        raise UsageError(f"{flag} type=registry needs ref=HOST/REPO:TAG")
    if spec.kind == "local" and not spec.path:
        raise UsageError(f"{flag} type=local needs {'dest' if export else 'src'}=DIR")
    if spec.kind == "inline" and not export:
        raise UsageError("--cache-from type=inline is not a thing: name the image instead (--cache-from IMAGE)")
    return spec


# ------------------------------------------------------------------ records


@dataclass(frozen=True)
class RemoteLayer:
    digest: str
    size: int
    media_type: str
    diff_id: str

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class RemoteRecord:
    key: str
    layer: RemoteLayer
    created: float
    snapshot: str  # the snapshot id the exporter gave the step's result: downstream keys include it


class BlobSource(Protocol):
    """Where the blobs of one imported cache can be read from."""

    name: str

    async def fetch(self, layer: RemoteLayer, store: Any) -> None:
        """Put the blob into the content store (verified)."""

    def registry_ref(self) -> Any | None:
        """The registry repository holding the blobs, for cross-repository mounts."""


@dataclass
class RemoteCache:
    """What one ``--cache-from`` provided: records by key, and where their blobs are."""

    source: BlobSource
    records: Mapping[str, RemoteRecord]
    cache_mounts: Mapping[str, RemoteLayer] = field(default_factory=dict)
    ignore_error: bool = True  # a broken layer drops this cache (False: fails the build)

    def lookup(self, key: str) -> RemoteRecord | None:
        return self.records.get(key)


def records_to_json(records: Iterable[RemoteRecord], cache_mounts: Mapping[str, RemoteLayer] | None = None) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "records": {
            r.key: {**r.layer.descriptor(), "diffID": r.layer.diff_id, "created": r.created, "snapshot": r.snapshot}
            for r in records
        },
        "cacheMounts": {
            name: {**layer.descriptor(), "diffID": layer.diff_id} for name, layer in (cache_mounts or {}).items()
        },
    }


def records_from_json(data: Mapping[str, Any], what: str) -> tuple[dict[str, RemoteRecord], dict[str, RemoteLayer]]:
    if not isinstance(data, Mapping) or data.get("version") != FORMAT_VERSION:
        raise CacheImportError(f"{what}: not a pybuild cache (version {data.get('version') if isinstance(data, Mapping) else '?'})")
    try:
        records = {}
        for key, entry in (data.get("records") or {}).items():
            layer = _layer(entry)
            snapshot = str(entry.get("snapshot") or _hex(key))
            if not _is_hex64(snapshot) or not _is_digest(key) or not _is_diff_id(layer.diff_id):
                raise ValueError(f"record {key!r} is malformed")
            records[key] = RemoteRecord(key, layer, float(entry.get("created", 0.0)), snapshot)
        mounts = {}
        for name, entry in (data.get("cacheMounts") or {}).items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"cache mount {name!r} is malformed")
            mounts[name] = _layer(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise CacheImportError(f"{what}: malformed pybuild cache ({error})") from None
    return records, mounts


def _layer(entry: Mapping[str, Any]) -> RemoteLayer:
    layer = RemoteLayer(str(entry["digest"]), int(entry["size"]), str(entry["mediaType"]), str(entry.get("diffID", "")))
    if not _is_digest(layer.digest) or layer.size < 0:
        raise ValueError(f"blob {layer.digest!r} is malformed")
    return layer


def _hex(digest: str) -> str:
    return digest.split(":", 1)[-1]


def _is_hex64(text: str) -> bool:
    # names that become paths under the root: nothing but 64 lowercase hex digits
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _is_digest(text: str) -> bool:
    return text.startswith("sha256:") and _is_hex64(text[7:])


def _is_diff_id(text: str) -> bool:
    return _is_digest(text)


class CacheImportError(PybuildError):
    reference = "cache-import"


class RemoteCacheBroken(PybuildError):
    """A layer of an imported cache cannot be fetched or is not what its record says."""

    reference = "cache-broken"

    def __init__(self, message: str, *, cache: RemoteCache) -> None:
        super().__init__(message)
        self.cache = cache


# ------------------------------------------------------------------ sources


class RegistrySource:
    def __init__(self, client: Any, ref: Any) -> None:
        self.client = client
        self.ref = ref
        self.name = str(ref)

    async def fetch(self, layer: RemoteLayer, store: Any) -> None:
        await self.client.fetch_blob(self.ref, layer, store)

    def registry_ref(self) -> Any:
        return self.ref


class LocalSource:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.name = str(directory)

    async def fetch(self, layer: RemoteLayer, store: Any) -> None:
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


async def import_cache(spec: CacheSpec, *, client: Any, platform: str, blob_client: Any = None) -> RemoteCache:
    """Read the records of one cache source (small documents only: no layer is
    downloaded; ``blob_client``, if given, fetches them later).  Its cache mounts
    are used only if the user asked (cache-mounts=true)."""
    cache = await _read_cache(spec, client, platform)
    cache.ignore_error = spec.ignore_error
    if blob_client is not None and isinstance(cache.source, RegistrySource):
        cache.source.client = blob_client
    if not spec.cache_mounts:
        cache.cache_mounts = {}
    return cache


async def _read_cache(spec: CacheSpec, client: Any, platform: str) -> RemoteCache:
    if spec.kind == "local":
        return _import_local(Path(spec.path or ""))
    from pybuild.oci import parse_reference

    ref = parse_reference(spec.ref or "")
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


async def _small_blob(client: Any, ref: Any, descriptor: Mapping[str, Any]) -> bytes:
    from pybuild.cache import MemoryContentStore

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


# ------------------------------------------------------------------ export


def cache_manifest(config: bytes, layers: Sequence[RemoteLayer]) -> bytes:
    import hashlib

    from pybuild.oci._formats import canonical_json

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


def write_local(directory: Path, config: bytes, layers: Sequence[RemoteLayer], store: Any) -> None:
    """An OCI layout with the cache artifact (tagged pybuild-cache) and its blobs."""
    import hashlib

    from pybuild.oci._formats import canonical_json

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


def check_diff_id(blobs: Any, layer: RemoteLayer) -> None:
    """The blob must be the layer the record says: another machine's word for the
    diffID goes into image configs only once its content agrees."""
    import hashlib

    from pybuild.errors import CorruptContent
    from pybuild.oci import UnpackBudget, unpack_limit
    from pybuild.oci._compression import open_decompressed

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


def adopt_layer(root: Any, snapshot_id: str, diff_id: str, digest: str, size: int, media_type: str) -> None:
    """Make a fetched blob *the* layer of ``snapshot_id`` for the image store.

    The store then exports or pushes that blob as is (same digest as on the
    machine that made it) instead of archiving the snapshot again -- and the
    snapshot itself need not exist for that.
    """
    from pybuild.cache import BlobRef, CacheRecord
    from pybuild.oci._store import SNAPSHOT_RECORD, compression_of

    blob = BlobRef(digest, size, media_type)
    root.index.record(
        SNAPSHOT_RECORD + snapshot_id,
        CacheRecord(snapshot_id=snapshot_id, diff_id=diff_id, blobs={compression_of(media_type).value: blob}, meta={"source": "blob"}),
    )


# ------------------------------------------------------------------ export, driven by the build


async def collect_records(spec: CacheSpec, plan: Any, results: Mapping[str, Any], worker: Any, store: Any) -> tuple[list[RemoteRecord], dict[str, Any]]:
    """The records a cache export holds (``mode=min``: the final image's steps;
    ``mode=max``: every step of every stage) and, for layers this runner only
    knows from another cache, where their blobs can be mounted from."""
    import trio

    from ._ops import ExecOp, FileOp

    target = plan.target.op
    final_layers = set(results[target].chain) if target and target in results else set()
    records: list[RemoteRecord] = []
    mount_from: dict[str, Any] = {}
    for digest, op in plan.definition.ops.items():
        if not isinstance(op, (ExecOp, FileOp)):
            continue
        result, key = results.get(digest), worker.keys.get(digest)
        if result is None or key is None or result.layer is None:
            continue
        if spec.mode == "min" and result.layer not in final_layers:
            continue
        pending = worker.pending_remote.get(result.layer)
        if pending is not None and spec.kind == "registry":
            remote, cache, _ = pending
            layer = remote.layer
            source = cache.source.registry_ref()
            if source is not None:
                mount_from[layer.digest] = source
            else:
                await worker.adopt_remote_layer(result.layer)
        else:
            if pending is not None:
                await worker.adopt_remote_layer(result.layer)
            made = await trio.to_thread.run_sync(lambda: store.layer_for_snapshot(result.layer, spec.compression))
            layer = RemoteLayer(made.digest, made.size, made.media_type, made.diff_id)
        records.append(RemoteRecord(key, layer, result.created, result.layer))
    return records, mount_from


async def cache_mount_layers(worker: Any, blobs: Any) -> dict[str, RemoteLayer]:
    """Each cache mount the build used, as a gzip layer tar in the content store."""
    import trio

    from pybuild.oci._compression import Compression, compress_layer

    def pack(directory: Path) -> RemoteLayer:
        with blobs.writer() as writer:
            blob = compress_layer(directory, Compression.GZIP, None, writer)
            writer.commit()
        return RemoteLayer(blob.digest, blob.size, CACHE_MOUNT_MEDIA_TYPE, blob.diff_id)

    out = {}
    for mount_id, directory in worker.used_cache_mounts.items():
        out[mount_id] = await trio.to_thread.run_sync(pack, directory)
    return out


async def export_cache(spec: CacheSpec, plan: Any, results: Mapping[str, Any], worker: Any, store: Any, client: Any) -> None:
    import trio

    from pybuild.oci._formats import canonical_json

    records, mount_from = await collect_records(spec, plan, results, worker, store)
    mounts = await cache_mount_layers(worker, store.root.blobs) if spec.cache_mounts else {}
    config = canonical_json(records_to_json(records, mounts))
    layers = [r.layer for r in records] + list(mounts.values())
    if spec.kind == "local":
        await trio.to_thread.run_sync(write_local, Path(spec.path or ""), config, layers, store.root.blobs)
        return
    from pybuild.oci import parse_reference

    ref = parse_reference(spec.ref or "")
    config_digest = await trio.to_thread.run_sync(store.root.blobs.put, config)
    manifest = cache_manifest(config, layers)
    blobs = [RemoteLayer(config_digest, len(config), CONFIG_MEDIA_TYPE, "")] + _unique(layers)
    await client.push(ref, manifest=manifest, media_type=MANIFEST_MEDIA_TYPE, blobs=blobs, store=store.root.blobs, mount_from=mount_from)


def inline_records(plan: Any, results: Mapping[str, Any], worker: Any, layers: Mapping[str, Any]) -> dict[str, Any]:
    """The records to embed in the image config (``type=inline``): the final
    image's steps (``mode=min``), each pointing at the image's own layer blob."""
    from ._ops import ExecOp, FileOp

    records = []
    for digest, op in plan.definition.ops.items():
        result, key = results.get(digest), worker.keys.get(digest)
        if not isinstance(op, (ExecOp, FileOp)) or result is None or key is None or result.layer not in layers:
            continue
        made = layers[result.layer]
        records.append(RemoteRecord(key, RemoteLayer(made.digest, made.size, made.media_type, made.diff_id), result.created, result.layer))
    return records_to_json(records)


def unpack_cache_mount(blobs: Any, layer: RemoteLayer, directory: Path) -> None:
    """Fill an empty cache mount from an imported one: unpacked beside it, renamed in
    only when complete, so a fault never leaves a half-filled cache behind."""
    import shutil

    from pybuild.oci._tar_apply import apply_layer

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
