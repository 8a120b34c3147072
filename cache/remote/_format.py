"""The cache export format: specs, records and their JSON (``--cache-to`` / ``--cache-from``).

A cache export is an OCI artifact: a manifest whose config (media type
``application/vnd.pybuild.cache.config.v1+json``) maps cache keys to the
layer each step made, and whose layers are those layer blobs.  Records
come from other machines: every name that becomes a path is checked here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pybuild.errors import PybuildError, UsageError

from .._content import ContentStore

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

    async def fetch(self, layer: RemoteLayer, store: ContentStore) -> None:
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

