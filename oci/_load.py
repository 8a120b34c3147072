"""``pybuild load``: images from a docker-archive or an OCI layout tar into the store.

Blobs are copied as the archive holds them (a docker-archive's plain layer
tars stay plain; a push compresses them), each checked against its digest
on the way in, so the image ID stays the one ``docker save`` or the
exporter wrote.  Names come from ``RepoTags`` (docker-archive) or the
``io.containerd.image.name`` annotation (OCI; a bare
``org.opencontainers.image.ref.name`` is used when it is a whole
reference, not just a tag).  A multi-platform index is loaded whole and
kept under its names, as ``docker load`` on the containerd store keeps it
(each platform's image untagged, listed by the index); with ``platform``
only that platform's image is loaded, under the names.  The layers are
unpacked at once, as Docker does, so the image is ready to build on and its
size is known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pybuild.errors import ImageError

from ._archive import Archive, LoadedImage, read_archive
from ._formats import ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME, INDEX_MEDIA_TYPES, Index
from ._platforms import host_platform, key_text, normalize_arch, pick_platform, platform_key
from ._reference import parse_reference
from ._store import ImageStore, Layer, StoredImage, StoredIndex

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadResult:
    image: StoredImage
    names: tuple[str, ...]  # normalized references given to it
    replaced: tuple[tuple[str, str], ...] = ()  # (reference, image ID it was taken from)
    index: StoredIndex | None = None  # the index the names point at, when one was loaded whole


def _names(loaded: LoadedImage, kind: str) -> list[str]:
    if kind == "docker":
        candidates = list(loaded.names)
    else:
        full = loaded.top.annotation(ANNOTATION_CONTAINERD_NAME)
        short = loaded.top.annotation(ANNOTATION_REF_NAME)
        candidates = [full] if full else [short] if short and ("/" in short or ":" in short) else []
    names = []
    for candidate in candidates:
        try:
            ref = parse_reference(candidate)
        except ImageError:
            continue  # a tag-only or odd name: the image loads untagged
        if ref.digest is None:
            names.append(str(ref))
    return names


def _groups(images: Sequence[LoadedImage]) -> list[list[LoadedImage]]:
    """The archive's entries: the images each names (an index's, several)."""
    groups: dict[str, list[LoadedImage]] = {}
    for image in images:
        groups.setdefault(image.top.digest + "|" + ",".join(image.names), []).append(image)
    return list(groups.values())


def _platform_of(image: LoadedImage) -> str:
    p = image.config.platform
    architecture, variant = normalize_arch(p.architecture, p.variant)
    return key_text((p.os.lower(), architecture, variant))


def _for_platform(group: Sequence[LoadedImage], platform: str) -> LoadedImage:
    """Of an index's images, the one for ``platform`` (as the store picks); a single image whatever its platform."""
    if len(group) == 1:
        return group[0]
    chosen = pick_platform([platform_key(_platform_of(image)) for image in group], platform_key(platform))
    if chosen is None:
        has = ", ".join(_platform_of(image) for image in group)
        raise ImageError(f"the archive's image has no {platform} manifest: it has {has}", hint="choose one of those with --platform")
    return group[chosen]


def _copy_blob(store: ImageStore, archive: Archive, digest: str, size: int) -> None:
    if store.root.blobs.has(digest):
        return
    with archive.open(digest) as source, store.root.blobs.writer(expected_digest=digest, expected_size=size) as writer:
        while chunk := source.read(_CHUNK):
            writer.write(chunk)
        writer.commit()


def load_archive(store: ImageStore, path: Path, *, platform: str | None = None) -> list[LoadResult]:
    """Load every image of the archive at ``path``; ``ImageError`` if it is not one.

    An index is loaded whole when no ``platform`` is asked (and it lists its
    images itself, not through an index nested in it), else the image for
    ``platform`` (default: this machine's) is.
    """
    results = []
    with read_archive(Path(path), tmp_dir=store.root.tmp_dir("load-")) as archive:
        for group in _groups(archive.images):
            names = _names(group[0], archive.format)
            index = _index_listing(archive, group) if platform is None else None
            if index is not None:
                results.append(_load_index(store, archive, group, index, names))
                continue
            image = _register(store, archive, _for_platform(group, platform or host_platform()))
            replaced = _tag(store, image.id, names)
            results.append(LoadResult(store.by_id(image.id), tuple(names), tuple(replaced)))
    return results


def _index_listing(archive: Archive, group: Sequence[LoadedImage]) -> Index | None:
    """The index an archive entry names, if it lists each of the group's manifests itself."""
    top = group[0].top
    if top.media_type not in INDEX_MEDIA_TYPES:
        return None
    with archive.open(top.digest) as f:
        index = Index.from_json(f.read(), top.media_type, f"image index {top.digest}")
    listed = {d.digest for d in index.manifests}
    return index if all(image.descriptor.digest in listed for image in group) else None


def _load_index(store: ImageStore, archive: Archive, group: Sequence[LoadedImage], index: Index, names: list[str]) -> LoadResult:
    top = group[0].top
    images = [_register(store, archive, loaded) for loaded in group]
    with store.root.index.lease([top.digest]):
        _copy_blob(store, archive, top.digest, top.size)
        entries = [(image.platform, image.id, image.manifest_digest) for image in images]
        before = {name: store.root.index.get_tag(name) for name in names}
        stored = store.register_index(top.digest, index.media_type, entries, names)
    replaced = [(name, old) for name, old in before.items() if old is not None and old != stored.digest]
    chosen = store.get(stored.digest)
    return LoadResult(chosen, tuple(names), tuple(replaced), stored)


def _register(store: ImageStore, archive: Archive, loaded: LoadedImage) -> StoredImage:
    """The image's blobs into the store, registered (untagged) and unpacked."""
    manifest = loaded.manifest
    descriptors = (loaded.descriptor, manifest.config, *manifest.layers)
    # leased before looking: a blob found stored stays until the image is registered
    with store.root.index.lease([d.digest for d in descriptors]):
        for descriptor in descriptors:
            _copy_blob(store, archive, descriptor.digest, descriptor.size)
        with store.root.blobs.open(manifest.config.digest) as f:
            config = json.loads(f.read())
        layers = [
            Layer(diff_id, d.digest, d.size, d.media_type) for diff_id, d in zip(loaded.config.diff_ids, manifest.layers, strict=True)
        ]
        image = store.register(manifest.config.digest, loaded.descriptor.digest, config, layers)
    store.snapshots_for(image)
    return image


def _tag(store: ImageStore, image_id: str, names: Sequence[str]) -> list[tuple[str, str]]:
    replaced = []
    for name in names:
        previous = store.tag(image_id, name)
        if previous is not None:
            replaced.append((name, previous))
    return replaced
