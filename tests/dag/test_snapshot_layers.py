"""The layer of a snapshot: oci's SnapshotLayers and dag's fake behave alike,
and the one compression rule decides every place's layers."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.dag._layers import MemorySnapshotLayers, check_snapshot_layers
from pybuild.oci import ImageStore, Layer, LayerSettings, SnapshotLayers, compress_layer, layer_compression


def test_the_image_stores_snapshot_layers_conform(tmp_path: Path) -> None:
    counter = itertools.count()
    roots: list[Root] = []

    def make() -> tuple[SnapshotLayers, str, Layer]:
        root = Root.open(tmp_path / f"root{next(counter)}")
        roots.append(root)
        active = root.snapshots.new_active()
        Path(active.upper, "hello.txt").write_text("hello\n")
        snapshot = root.snapshots.commit(active, None, snapshot_id="a" * 64)
        other = tmp_path / f"tree{next(counter)}"
        other.mkdir()
        (other / "fetched.txt").write_text("from another machine\n")
        with root.blobs.writer() as writer:
            blob = compress_layer(other, "gzip", None, writer)
            writer.commit()
        return SnapshotLayers(ImageStore(root)), snapshot, Layer(blob.diff_id, blob.digest, blob.size, blob.media_type)

    try:
        check_snapshot_layers(make)
    finally:
        for root in roots:
            root.close()


def test_the_fake_snapshot_layers_conform() -> None:
    def make() -> tuple[MemorySnapshotLayers, str, Layer]:
        fake = MemorySnapshotLayers()
        fake.add("a" * 64)
        fetched = Layer("sha256:" + "1" * 64, "sha256:" + "2" * 64, 10, "application/vnd.oci.image.layer.v1.tar+gzip")
        return fake, "a" * 64, fetched

    check_snapshot_layers(make)


def test_adopting_a_remote_layer_is_what_the_image_store_exports(tmp_path: Path) -> None:
    root = Root.open(tmp_path / "root")
    try:
        tree = tmp_path / "tree"
        tree.mkdir()
        (tree / "f").write_text("x")
        with root.blobs.writer() as writer:
            blob = compress_layer(tree, "zstd", None, writer)
            writer.commit()
        fetched = Layer(blob.diff_id, blob.digest, blob.size, blob.media_type)
        layers = SnapshotLayers(ImageStore(root))
        layers.adopt("c" * 64, fetched)
        # the store's own view agrees: the blob keeps its compression when gzip is asked for
        assert ImageStore(root).layer_for_snapshot("c" * 64, "gzip") == fetched
        assert ImageStore(root).layer_by_reference("c" * 64) == fetched
    finally:
        root.close()


@pytest.mark.parametrize(
    ("requested", "outputs", "flags", "expected"),
    [
        (LayerSettings(), (), {}, LayerSettings()),
        (LayerSettings("zstd"), (), {}, LayerSettings("zstd")),
        (LayerSettings(), (), {"cache_export": True}, LayerSettings("gzip")),
        (LayerSettings(), (), {"inline_cache": True}, LayerSettings("gzip")),
        (LayerSettings(), (), {"rewrite_timestamp": True}, LayerSettings("gzip")),
        (LayerSettings(level=3), (), {}, LayerSettings("gzip", 3)),
        (LayerSettings("zstd"), (), {"cache_export": True}, LayerSettings("zstd")),
        # an output asking for a compression has the layers made that way once
        (LayerSettings("gzip", 5), (LayerSettings(), LayerSettings("zstd")), {}, LayerSettings("zstd", 5)),
        (LayerSettings("gzip", 5), (LayerSettings("zstd", 9),), {}, LayerSettings("zstd", 9)),
        (LayerSettings(), (LayerSettings(),), {}, LayerSettings()),
    ],
)
def test_one_rule_decides_the_build_layers_compression(requested, outputs, flags, expected) -> None:  # type: ignore[no-untyped-def]
    assert layer_compression(requested, outputs=outputs, **flags) == expected


def test_an_oci_archive_gzips_plain_layers_by_default() -> None:
    assert layer_compression(LayerSettings(), output_type="oci") == LayerSettings(compress_plain=True)
    assert layer_compression(LayerSettings("zstd"), output_type="oci") == LayerSettings("zstd")
    assert layer_compression(LayerSettings(), output_type="docker") == LayerSettings()
