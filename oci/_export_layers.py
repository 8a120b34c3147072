"""An image's layers in the compression an export or a push asks for.

A stored image keeps the layer blobs it was built, pulled or loaded with.
An output may want others: ``compression=zstd`` for an OCI archive, or
compressed layers for a registry when the image came from a docker-archive
(whose layers are plain tars).  A converted layer keeps its diffID, so the
image config -- and the image ID -- do not change; only the manifest does.

A layer is converted the cheapest way that keeps its diffID:

1. a conversion made before (recorded per diffID and compression);
2. the build's own snapshot of the layer, when pybuild wrote that layer
   from it (``layer_for_snapshot`` then gives the same tar, compressed
   as asked, and keeps the blob with the build cache);
3. otherwise the stored blob, decompressed and compressed again.

BuildKit's rule for which layers change: without ``force``, a layer that
is already compressed keeps its compression; plain layers are always
compressed when the output wants compressed ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pybuild._frozen import frozen
from pybuild.errors import ImageError, UsageError

from ._compression import ByteSink, Compression, layer_media_type
from ._formats import MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_MANIFEST, canonical_json, sha256_digest
from ._store import ImageStore, Layer, StoredImage, chain_ids, compression_of

CONVERT_RECORD = "convert:"  # cache-index records: diffID -> the layer's blobs in other compressions


@frozen
class LayerSettings:
    """How an output wants layers: ``compression`` None keeps each layer's own
    (plain layers get gzip when ``compress_plain``); ``force`` recompresses
    layers compressed otherwise."""

    compression: str | None = None
    level: int | None = None
    force: bool = False
    compress_plain: bool = False

    def __post_init__(self) -> None:
        if self.compression is not None:
            kind = Compression.parse(self.compression)  # UsageError for unknown names
            object.__setattr__(self, "compression", kind.value)


@frozen
class ExportManifest:
    """The manifest an output carries: the stored one, or one made for converted layers."""

    data: bytes
    media_type: str
    config: Mapping[str, Any]  # the config descriptor as a dict
    layers: tuple[Layer, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)


class PendingLayer(ByteSink, Protocol):
    """Where a layer's blob is written while it is made; ``restart`` forgets what it got."""

    def restart(self) -> None: ...


class LayerArchive(Protocol):
    """An archive taking each layer as soon as the export has it (``OciArchiveWriter``)."""

    def pending_blob(self) -> PendingLayer | None:
        """A member for the next layer's bytes while they are made, if the archive can take them so."""
        ...

    def add_layer(self, layer: Layer) -> None:
        """The next layer: the pending member's bytes if they are its blob, else the stored blob."""
        ...


def _wanted(layer: Layer, settings: LayerSettings) -> Compression | None:
    """The compression to convert ``layer`` to, or None to keep it."""
    current = compression_of(layer.media_type)
    if settings.compression is None:
        return Compression.GZIP if settings.compress_plain and current is Compression.NONE else None
    wanted = Compression(settings.compression)
    if current is wanted:
        return None
    if current is not Compression.NONE and not settings.force:
        return None
    return wanted


def convert_layer(
    store: ImageStore, layer: Layer, chain_id: str, kind: Compression, level: int | None, *, tee: PendingLayer | None = None
) -> Layer:
    """``layer`` (the top of chain ``chain_id``) as a blob compressed with ``kind``;
    a blob made here is written into ``tee`` too."""
    from pybuild.cache import BlobRef, CacheRecord

    key = CONVERT_RECORD + layer.diff_id
    record = store.root.index.lookup(key)
    if record is not None:
        blob = record.blobs.get(kind.value)
        if blob is not None and store.root.blobs.has(blob.digest):
            return Layer(layer.diff_id, blob.digest, blob.size, blob.media_type)
    snapshot = store.snapshot_of_chain(chain_id)
    if snapshot is not None and store.snapshot_layer_diff_id(snapshot) == layer.diff_id:
        converted = store.layer_for_snapshot(snapshot, kind.value, level, tee=tee)
        if converted.diff_id == layer.diff_id:
            return converted
        if tee is not None:
            tee.restart()
    made = store.recompress(layer, kind, level, tee=tee)
    ref = BlobRef(made.digest, made.size, made.media_type)
    if record is None:
        store.root.index.record(key, CacheRecord(snapshot_id=None, diff_id=layer.diff_id, blobs={kind.value: ref}))
    else:
        store.root.index.add_blob(key, kind.value, ref)
    return Layer(layer.diff_id, made.digest, made.size, made.media_type)


def export_manifest(
    store: ImageStore, image: StoredImage, settings: LayerSettings = LayerSettings(), *, archive: LayerArchive | None = None
) -> ExportManifest:
    """The manifest (and layers) to export ``image`` with under ``settings``.

    Unchanged layers keep the stored manifest byte for byte, so its digest
    (pinned by pulls and builds) survives an export.  Each layer goes into
    ``archive`` as soon as it is ready; one made now is written into it
    while it is made and stored, not copied afterwards.
    """
    stored = store.manifest_bytes(image)
    document = _load_manifest(stored, image)
    chain = chain_ids([layer.diff_id for layer in image.layers])
    layers: list[Layer] = []
    changed = False
    for layer, chain_id in zip(image.layers, chain, strict=True):
        kind = _wanted(layer, settings)
        tee = archive.pending_blob() if archive is not None else None
        if kind is None:
            store.materialize(layer, chain_id, tee=tee)
        else:
            changed = True
            layer = convert_layer(store, layer, chain_id, kind, settings.level, tee=tee)
        layers.append(layer)
        if archive is not None:
            archive.add_layer(layer)
    if not changed:
        return ExportManifest(stored, str(document.get("mediaType") or MEDIA_TYPE_OCI_MANIFEST), document["config"], tuple(layers))
    config = dict(document["config"])
    config["mediaType"] = MEDIA_TYPE_OCI_CONFIG  # same bytes: Docker's config is OCI's
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_OCI_MANIFEST,
        "config": config,
        "layers": [_oci_layer(l) for l in layers],
    }
    return ExportManifest(canonical_json(manifest), MEDIA_TYPE_OCI_MANIFEST, config, tuple(layers))


def _oci_layer(layer: Layer) -> dict[str, Any]:
    # Docker's gzip/plain layer types have OCI twins; write those in an OCI manifest.
    media_type = layer_media_type(compression_of(layer.media_type))
    return {"mediaType": media_type, "digest": layer.digest, "size": layer.size}


def _load_manifest(data: bytes, image: StoredImage) -> dict[str, Any]:
    import json

    try:
        document = json.loads(data)
    except ValueError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict) or not isinstance(document.get("layers"), list):
        raise ImageError(f"the stored manifest of image {image.short_id} is malformed", hint="pull or build the image again")
    if [l.get("digest") for l in document["layers"]] != [l.digest for l in image.layers]:
        raise ImageError(f"the stored manifest of image {image.short_id} does not match its record", hint="pull or build the image again")
    return document


def parse_compression_options(attrs: Mapping[str, str], what: str) -> LayerSettings:
    """``compression=``, ``compression-level=``, ``force-compression=`` of an ``--output``."""
    level_text = attrs.get("compression-level")
    level = None
    if level_text is not None:
        if not level_text.lstrip("-").isdigit():
            raise UsageError(f"{what}: compression-level must be a number, not {level_text!r}")
        level = int(level_text)
    return LayerSettings(
        compression=attrs.get("compression"),
        level=level,
        force=_bool(attrs.get("force-compression", "false"), "force-compression", what),
    )


def _bool(text: str, key: str, what: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", ""):
        return True
    if value in ("false", "0", "no"):
        return False
    raise UsageError(f"{what}: {key} must be true or false, not {text!r}")


def bool_option(attrs: Mapping[str, str], key: str, default: bool, what: str) -> bool:
    return _bool(attrs[key], key, what) if key in attrs else default


__all__: Sequence[str] = ["ExportManifest", "LayerArchive", "LayerSettings", "PendingLayer", "compression_of", "convert_layer", "export_manifest"]
