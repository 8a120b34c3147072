"""``pybuild push`` and ``--push``: a stored image to a registry.

The blobs come from the content store: built layers were compressed when
the build stored the image; layers loaded from a docker-archive (plain
tars) are compressed with gzip first (same diffIDs, so the same image ID).
A layer the store knows came from another repository of the same registry
is mounted from there instead of uploaded.  After the push the image keeps
the reference ``registry/repository@digest``, and its blobs are known to
live in that repository too.

An image index (several platforms) is pushed as BuildKit pushes one: every
platform's manifest by its digest, then the index under the tag (the
registry checks that an index names only manifests it has).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ._export_layers import LayerSettings, export_manifest
from ._formats import MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_MANIFEST, Descriptor, index_document
from ._reference import Reference, parse_reference
from .registry import BlobOutcome, RegistryClient
from ._store import ImageStore, Layer, StoredImage, StoredIndex


@dataclass(frozen=True)
class PushedLayer:
    diff_id: str
    digest: str
    size: int
    outcome: BlobOutcome = BlobOutcome.PUSHED
    mounted_from: str | None = None  # registry/repository, when mounted


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str  # of the manifest pushed
    size: int  # of the manifest pushed
    layers: tuple[PushedLayer, ...]  # bottom first
    media_type: str = MEDIA_TYPE_OCI_MANIFEST  # of the manifest pushed
    platforms: tuple[PushResult, ...] = ()  # an index's: each platform's manifest, pushed first


def registry_client(insecure_registries: Sequence[str] = ()) -> RegistryClient:
    """A registry client with the user's ``docker login`` credentials."""
    from .registry import CredentialStore, RegistryClient

    return RegistryClient(insecure_registries=insecure_registries, credentials=CredentialStore.from_docker_config())


def _mount_source(store: ImageStore, digest: str, target: Reference) -> Reference | None:
    for origin in store.origins(digest):
        registry, _, repository = origin.partition("/")
        if registry == target.registry and repository and repository != target.repository:
            return Reference(registry, repository)
    return None


async def push_image(
    store: ImageStore,
    client: RegistryClient,
    image: StoredImage,
    ref: str | Reference,
    *,
    layers: LayerSettings = LayerSettings(),
) -> PushResult:
    """Push ``image`` as ``ref``; returns the manifest digest the registry stored."""
    import trio

    from .registry import LayerDescriptor

    reference = parse_reference(ref) if isinstance(ref, str) else ref
    if layers.compression is None:
        layers = replace(layers, compress_plain=True)
    exported = await trio.to_thread.run_sync(export_manifest, store, image, layers)
    if not store.root.blobs.has(exported.digest):
        await trio.to_thread.run_sync(store.root.blobs.put, exported.data)
    config = exported.config
    blobs = [LayerDescriptor(str(config["digest"]), int(config["size"]), str(config.get("mediaType", "")))]
    blobs += [LayerDescriptor(l.digest, l.size, l.media_type) for l in exported.layers]
    sources = {b.digest: source for b in blobs if (source := _mount_source(store, b.digest, reference)) is not None}
    outcomes: dict[str, BlobOutcome] = {}
    digest = await client.push(
        reference,
        manifest=exported.data,
        media_type=exported.media_type,
        blobs=blobs,
        store=store.root.blobs,
        mount_from=sources,
        on_blob=outcomes.__setitem__,
    )

    def remember() -> None:
        store.add_repo_digest(image.id, f"{reference.name}@{digest}")
        store.remember_origin([b.digest for b in blobs], reference.name)

    await trio.to_thread.run_sync(remember)
    def pushed(layer: Layer) -> PushedLayer:
        outcome = outcomes.get(layer.digest, BlobOutcome.PUSHED)
        mounted_from = sources[layer.digest].name if outcome is BlobOutcome.MOUNTED else None
        return PushedLayer(layer.diff_id, layer.digest, layer.size, outcome, mounted_from)

    return PushResult(reference, digest, len(exported.data), tuple(pushed(l) for l in exported.layers), exported.media_type)


async def push_index(
    store: ImageStore,
    client: RegistryClient,
    index: StoredIndex,
    ref: str | Reference,
    *,
    layers: LayerSettings = LayerSettings(),
) -> PushResult:
    """Push each platform's image of ``index`` by digest to ``ref``'s repository, then the index as ``ref``."""
    import trio

    reference = parse_reference(ref) if isinstance(ref, str) else ref
    by_digest = Reference(reference.registry, reference.repository)
    platforms = []
    for entry in index.manifests:
        platforms.append(await push_image(store, client, entry.image, by_digest, layers=layers))
    data = index_document([
        (entry.platform, Descriptor(result.media_type, result.digest, result.size))
        for entry, result in zip(index.manifests, platforms)
    ])
    digest = await client.push(reference, manifest=data, media_type=MEDIA_TYPE_OCI_INDEX, blobs=[], store=store.root.blobs)

    def remember() -> None:
        if digest == index.digest:  # the stored index itself (no layer was converted on the way)
            store.add_repo_digest(index.digest, f"{reference.name}@{digest}")

    await trio.to_thread.run_sync(remember)
    return PushResult(reference, digest, len(data), (), MEDIA_TYPE_OCI_INDEX, tuple(platforms))
