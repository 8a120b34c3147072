"""Small images built from layer trees into a MemoryBlobSource, for the archive tests."""

from __future__ import annotations

import io
import os
import platform
import stat
from pathlib import Path

from pybuild.oci._archive import ArchiveImage, MemoryBlobSource
from pybuild.oci._compression import compress_layer
from pybuild.oci._formats import (
    MEDIA_TYPE_DOCKER_CONFIG,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_CONFIG,
    ContainerConfig,
    Descriptor,
    HistoryEntry,
    ImageConfig,
    Manifest,
)

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
EXTRA_CONTENT = "hello from the extra layer\n"


def extra_layer(root: Path) -> Path:
    """A layer over the busybox rootfs: adds /x, deletes /etc/os-release, empties /var/www (opaque)."""
    (root / "etc").mkdir(parents=True)
    (root / "x").write_text(EXTRA_CONTENT)
    os.mknod(root / "etc" / "os-release", stat.S_IFCHR, 0)
    www = root / "var" / "www"
    www.mkdir(parents=True)
    os.setxattr(www, "trusted.overlay.opaque", b"y")
    (www / "index.html").write_text("<p>hi</p>\n")
    return root


def build_image(
    source: MemoryBlobSource,
    trees_bottom_first: list[Path],
    *,
    compression: str = "gzip",
    docker: bool = False,
    names: tuple[str, ...] = (),
    architecture: str = ARCH,
) -> ArchiveImage:
    layers, diff_ids, history = [], [], []
    for tree in trees_bottom_first:
        sink = io.BytesIO()
        blob = compress_layer(tree, compression, None, sink, docker_media_types=docker)
        source.add(sink.getvalue())
        layers.append(blob)
        diff_ids.append(blob.diff_id)
        history.append(HistoryEntry(created="2024-01-01T00:00:00Z", created_by=f"COPY {tree.name} /"))
    config = ImageConfig(
        architecture=architecture,
        os="linux",
        diff_ids=tuple(diff_ids),
        config=ContainerConfig(env=("PATH=/usr/sbin:/usr/bin:/sbin:/bin",), cmd=("sh",), working_dir="/"),
        history=tuple(history),
        created="2024-01-01T00:00:00Z",
    )
    config_bytes = config.to_json()
    source.add(config_bytes)
    manifest = Manifest(
        Descriptor.of(MEDIA_TYPE_DOCKER_CONFIG if docker else MEDIA_TYPE_OCI_CONFIG, config_bytes),
        tuple(Descriptor(layer.media_type, layer.digest, layer.size) for layer in layers),
        **({"media_type": MEDIA_TYPE_DOCKER_MANIFEST} if docker else {}),
    )
    manifest_bytes = manifest.to_json()
    source.add(manifest_bytes)
    return ArchiveImage(Descriptor.of(manifest.media_type, manifest_bytes), names)
