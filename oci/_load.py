"""``pybuild load``: images from a docker-archive or an OCI layout tar into the store.

Blobs are copied as the archive holds them (a docker-archive's plain layer
tars stay plain; a push compresses them), each checked against its digest
on the way in, so the image ID stays the one ``docker save`` or the
exporter wrote.  Names come from ``RepoTags`` (docker-archive) or the
``io.containerd.image.name`` annotation (OCI; a bare
``org.opencontainers.image.ref.name`` is used when it is a whole
reference, not just a tag).  Of a multi-platform index only the manifest
for ``platform`` is loaded.  The layers are unpacked at once, as Docker
does, so the image is ready to build on and its size is known.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pybuild.errors import ImageError

from ._archive import Archive, LoadedImage, read_archive
from ._formats import ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME
from ._reference import parse_reference
from ._store import ImageStore, Layer, StoredImage

_CHUNK = 1 << 20


@dataclass(frozen=True)
class LoadResult:
    image: StoredImage
    names: tuple[str, ...]  # normalized references given to it
    replaced: tuple[tuple[str, str], ...] = ()  # (reference, image ID it was taken from)


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


def _for_platform(images: Sequence[LoadedImage], platform: str | None) -> list[LoadedImage]:
    """One image per archive entry: of an index's manifests, the one for ``platform``."""
    groups: dict[str, list[LoadedImage]] = {}
    for image in images:
        groups.setdefault(image.top.digest + "|" + ",".join(image.names), []).append(image)
    chosen = []
    for group in groups.values():
        pick = group[0]
        if len(group) > 1 and platform:
            os_name, _, rest = platform.partition("/")
            architecture, _, variant = rest.partition("/")
            for image in group:
                p = image.config.platform
                if (p.os, p.architecture) == (os_name, architecture) and (not variant or p.variant == variant):
                    pick = image
                    break
        chosen.append(pick)
    return chosen


def _copy_blob(store: ImageStore, archive: Archive, digest: str, size: int) -> None:
    if store.root.blobs.has(digest):
        return
    with archive.open(digest) as source, store.root.blobs.writer(expected_digest=digest, expected_size=size) as writer:
        while chunk := source.read(_CHUNK):
            writer.write(chunk)
        writer.commit()


def load_archive(store: ImageStore, path: Path, *, platform: str | None = None) -> list[LoadResult]:
    """Load every image of the archive at ``path``; ``ImageError`` if it is not one."""
    results = []
    with read_archive(Path(path), tmp_dir=store.root.tmp_dir("load-")) as archive:
        for loaded in _for_platform(archive.images, platform):
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
            names = _names(loaded, archive.format)
            replaced = []
            for name in names:
                previous = store.tag(image.id, name)
                if previous is not None:
                    replaced.append((name, previous))
            store.snapshots_for(image)
            results.append(LoadResult(store.by_id(image.id), tuple(names), tuple(replaced)))
    return results
