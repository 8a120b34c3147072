"""``pybuild pull`` and the builds' ``Puller``: a registry image into the store.

The image is stored as the registry serves it: the manifest of the build
platform (chosen from an index if the reference names one) under its own
digest -- the digest builds pin -- the config (whose digest is the image
ID) and the compressed layer blobs.  Snapshots are made later, when
something needs the files (``ImageStore.snapshots_for``).

The image gets the tag it was pulled by and the repo digest
``registry/repository@digest`` (the index's digest when there was one, as
Docker records it); a tag that moves leaves its old image dangling.

A reference naming an index keeps that index, as containerd's image store
does: the index blob as the registry sent it, under the tag, with the
platforms pulled so far (pulling another platform of the same tag adds it);
each platform's image is untagged and kept by the index.  Every
blob is remembered as coming from that repository, for cross-repository
mounts on push.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pybuild.errors import ImageError

from ._reference import Reference, parse_reference
from ._store import ImageStore, Layer, StoredImage, StoredIndex

if TYPE_CHECKING:  # the registry package imports httpx: loaded when a pull runs
    from .registry import BlobProgress, RegistryClient


@dataclass(frozen=True)
class PulledLayer:
    digest: str
    size: int
    cached: bool  # the store had it already


@dataclass(frozen=True)
class PullResult:
    reference: Reference
    image: StoredImage
    digest: str  # the digest pulled by: the index's, or the manifest's
    up_to_date: bool  # the reference already named this image
    layers: tuple[PulledLayer, ...]  # bottom first
    replaced: str | None = None  # the image the tag left (now maybe dangling)
    index: StoredIndex | None = None  # the index the tag names, when the reference named one


async def pull_image(
    store: ImageStore,
    client: RegistryClient,
    ref: str | Reference,
    platform: str,
    *,
    on_progress: Callable[[BlobProgress], None] | None = None,
) -> PullResult:
    """Pull ``ref`` for ``platform`` (``linux/amd64``) into ``store``."""
    import trio

    reference = parse_reference(ref) if isinstance(ref, str) else ref
    cached: set[str] = set()

    def progress(event: BlobProgress) -> None:
        if event.cached:
            cached.add(event.digest)
        if on_progress is not None:
            on_progress(event)

    first: PullResult | None = None
    for _ in range(2):
        result = await _pull_once(store, client, reference, platform, progress, cached)
        first = first or result
        # A concurrent prune may have removed a blob the pull found stored before
        # the image was registered; registered now, it is kept: fetch it again.
        if not await trio.to_thread.run_sync(store.missing_blobs, result.image):
            return replace(result, up_to_date=first.up_to_date, replaced=first.replaced)
    raise ImageError(f"{reference}: blobs of the image keep vanishing from the store while it is pulled",
                     hint="is something deleting files in the pybuild root?")


async def _pull_once(
    store: ImageStore, client: RegistryClient, reference: Reference, platform: str, progress: Callable[[BlobProgress], None], cached: set[str],
) -> PullResult:
    import trio

    resolved = await client.pull(reference, platform, store.root.blobs, on_progress=progress)
    pinned = resolved.index_digest or resolved.digest

    def register() -> PullResult:
        try:
            config = json.loads(resolved.config)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError):
            raise ImageError(f"the config of {reference} has no rootfs.diff_ids", hint="this does not look like a container image") from None
        if len(diff_ids) != len(resolved.layers):
            raise ImageError(
                f"{reference}: the config lists {len(diff_ids)} layers, the manifest {len(resolved.layers)}",
                hint="the image in the registry is inconsistent",
            )
        layers = [Layer(d, l.digest, l.size, l.media_type) for d, l in zip(diff_ids, resolved.layers)]
        name = str(reference) if reference.tag and not reference.digest else None
        before = store.root.index.get_tag(name) if name else None
        known = store.root.index.get_image(resolved.config_digest)
        keep_index = bool(resolved.index) and resolved.index_digest is not None
        had_platform = keep_index and store.index_has(pinned, resolved.digest)
        with store.root.index.lease([pinned] if keep_index else []):
            if keep_index:
                store.root.blobs.put(resolved.index)
            image = store.register(
                resolved.config_digest, resolved.digest, config, layers,
                tags=[name] if name and not keep_index else [], repo_digests=[f"{reference.name}@{pinned}"],
            )
            index = None
            if keep_index:
                index = store.register_index(
                    pinned, resolved.index_media_type, [(image.platform, image.id, resolved.digest)],
                    [name] if name else [], source=reference.name, repo_digests=[f"{reference.name}@{pinned}"],
                )
        store.remember_origin([resolved.config_digest, *(l.digest for l in layers)], reference.name)
        named = pinned if keep_index else image.id
        up_to_date = (before == named if name else known is not None) and (had_platform or not keep_index)
        replaced = before if before is not None and before != named else None
        pulled = tuple(PulledLayer(l.digest, l.size, l.digest in cached) for l in resolved.layers)
        return PullResult(reference, store.by_id(image.id), pinned, up_to_date, pulled, replaced, index)

    return await trio.to_thread.run_sync(register)


class StorePuller:
    """The build's ``Puller``: brings a missing ``FROM`` image into the store.

    Uses ``client`` if given (the caller closes it), else a client of its
    own for each pull, with the user's ``docker login`` credentials.
    """

    def __init__(self, store: ImageStore, *, insecure_registries: Sequence[str] = (), client: RegistryClient | None = None) -> None:
        self.store = store
        self.insecure_registries = tuple(insecure_registries)
        self.client = client
        self.pulled: list[PullResult] = []

    async def pull(self, ref: str, platform: str) -> None:
        from ._push import registry_client

        client = self.client or registry_client(self.insecure_registries)
        try:
            self.pulled.append(await pull_image(self.store, client, ref, platform))
        finally:
            if self.client is None:
                await client.aclose()
