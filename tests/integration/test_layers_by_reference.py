"""A build stores its new layers once (as snapshots); blobs are made when an export or push needs them."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from pybuild.cache import Root
from pybuild.oci import ImageStore

from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .conftest import pybuild

PLAIN = "application/vnd.oci.image.layer.v1.tar"
GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def _image_layers(root: Path, ref: str) -> tuple[list[Any], list[bool]]:
    with Root.open(root) as opened:
        image = ImageStore(opened).get(ref)
        return list(image.layers), [opened.blobs.has(layer.digest) for layer in image.layers]


@pytest.fixture
def app(cli, busybox_image: str, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "data.txt").write_text("some data\n" * 1000)
    (context / "Dockerfile").write_text("FROM busybox\nCOPY data.txt /data.txt\nRUN wc -l /data.txt > /count\n")
    cli("build", "-t", "app:1", str(context))
    return context


def test_new_layers_are_named_by_diff_id_and_no_blob_is_written(root: Path, app: Path) -> None:
    layers, stored = _image_layers(root, "app:1")
    base, *new = layers
    assert base.media_type == GZIP and stored[0]  # the base keeps the blob it came with
    assert len(new) == 2
    for layer, has_blob in zip(new, stored[1:]):
        assert layer.media_type == PLAIN and layer.digest == layer.diff_id
        assert not has_blob


def test_saving_makes_the_blobs_and_the_archive_checks_out(root: Path, app: Path, tmp_path: Path) -> None:
    for kind in ("docker", "oci"):
        archive = tmp_path / f"app-{kind}.tar"
        pybuild("save", "--format", kind, "-o", str(archive), "app:1", root=root)
        with tarfile.open(archive) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
            config = json.loads(tar.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
            diff_ids = config["rootfs"]["diff_ids"]
            assert len(diff_ids) == len(manifest[0]["Layers"]) == 3
            for name, diff_id in zip(manifest[0]["Layers"], diff_ids):
                digest = hashlib.sha256(tar.extractfile(name).read()).hexdigest()  # type: ignore[union-attr]
                if kind == "oci":
                    assert name.endswith(digest)  # blobs/sha256/<digest of the bytes>
                else:
                    assert "sha256:" + digest == diff_id  # docker-archive layers are the plain tars
    layers, stored = _image_layers(root, "app:1")
    assert all(stored)  # made once, kept for the next export
    pybuild("load", "-i", str(tmp_path / "app-oci.tar"), root=tmp_path / "other-root")
    listed = pybuild("images", "--format", "{{.ID}}", root=tmp_path / "other-root").stdout.split()
    ours = pybuild("images", "--format", "{{.ID}}", "app:1", root=root).stdout.split()
    assert ours[0] in listed


def test_explicit_compression_writes_blobs_at_build_time(root: Path, app: Path) -> None:
    pybuild("build", "--compression", "gzip", "-t", "app:gz", str(app), root=root)
    layers, stored = _image_layers(root, "app:gz")
    assert all(stored) and {layer.media_type for layer in layers} == {GZIP}
    by_reference, _ = _image_layers(root, "app:1")
    assert [l.diff_id for l in layers] == [l.diff_id for l in by_reference]  # same layers, same image ID
    ids = pybuild("images", "-q", "--no-trunc", "app:gz", root=root).stdout.split()
    assert ids == pybuild("images", "-q", "--no-trunc", "app:1", root=root).stdout.split()


def test_an_oci_output_gzips_new_layers_as_buildkit_does(root: Path, app: Path, tmp_path: Path) -> None:
    archive = tmp_path / "out.tar"
    pybuild("build", "-q", "-t", "app:1", "--output", f"type=oci,dest={archive}", str(app), root=root)
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))  # type: ignore[arg-type]
        config = json.load(tar.extractfile("blobs/sha256/" + manifest["config"]["digest"].split(":")[1]))  # type: ignore[arg-type]
        assert [l["mediaType"] for l in manifest["layers"]] == [GZIP] * 3
        for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"]):
            data = tar.extractfile("blobs/sha256/" + layer["digest"].split(":")[1]).read()  # type: ignore[union-attr]
            assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["digest"]
            assert "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest() == diff_id
    plain = tmp_path / "plain.tar"
    pybuild("build", "-q", "-t", "app:1", "--output", f"type=oci,dest={plain},compression=uncompressed", str(app), root=root)
    with tarfile.open(plain) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(tar.extractfile("blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))  # type: ignore[arg-type]
        assert [l["mediaType"] for l in manifest["layers"]][1:] == [PLAIN] * 2  # asked for: new layers stay plain


@pytest.mark.peers
def test_a_push_sends_compressed_layers(root: Path, app: Path, docker_registry, tmp_path: Path) -> None:  # noqa: F811
    target = f"{docker_registry.host}/byref-{uuid.uuid4().hex[:8]}/app:1"
    pybuild("tag", "app:1", target, root=root)
    pybuild("push", target, root=root)
    puller = tmp_path / "puller"
    pybuild("pull", target, root=puller)
    layers, stored = _image_layers(puller, target)
    assert all(stored) and {layer.media_type for layer in layers} == {GZIP}
    built, _ = _image_layers(root, "app:1")
    assert [l.diff_id for l in layers] == [l.diff_id for l in built]


def test_a_damaged_layer_blob_is_made_again_from_its_snapshot(root: Path, app: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.tar"
    pybuild("save", "--format", "oci", "-o", str(first), "app:1", root=root)
    layers, _ = _image_layers(root, "app:1")
    with Root.open(root) as opened:
        blob = opened.blobs.path(layers[-1].digest)
    assert blob is not None
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    second = tmp_path / "second.tar"
    pybuild("save", "--format", "oci", "-o", str(second), "app:1", root=root)
    assert second.read_bytes() == first.read_bytes()
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == layers[-1].digest.split(":", 1)[1]
