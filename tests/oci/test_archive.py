"""OCI layout and docker-archive tars: structure, round trips, verification.

Python's tarfile reads the archives independently; interop with docker,
skopeo and umoci is in test_interop.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from pybuild.errors import CorruptContent, ImageError, NotFound
from pybuild.oci._archive import (
    ArchiveImage,
    MemoryBlobSource,
    OciArchiveWriter,
    check_blob_source,
    read_archive,
    write_docker_archive,
    write_oci_archive,
)
from pybuild.oci._formats import (
    ANNOTATION_REF_NAME,
    MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP,
    MEDIA_TYPE_OCI_INDEX,
    Descriptor,
    ImageConfig,
    ImagePlatform,
    Index,
    Manifest,
)

from .images import ARCH, build_image, extra_layer


@pytest.fixture
def image(tmp_path: Path, busybox_rootfs: Path, require_root: None) -> tuple[MemoryBlobSource, ArchiveImage]:
    source = MemoryBlobSource()
    layer = extra_layer(tmp_path / "extra")
    return source, build_image(source, [busybox_rootfs, layer], names=("pybuild-test/app:1", "localhost:5000/app:v2"))


def tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def write(path: Path, writer, *args, **kwargs) -> bytes:
    with open(path, "wb") as out:
        writer(out, *args, **kwargs)
    return path.read_bytes()


def test_oci_archive_layout(image, tmp_path: Path) -> None:
    source, img = image
    data = write(tmp_path / "img.tar", write_oci_archive, source, [img])
    files = tar_members(data)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = Index.from_json(files["index.json"])
    assert index.media_type == MEDIA_TYPE_OCI_INDEX
    assert [m.annotation(ANNOTATION_REF_NAME) for m in index.manifests] == ["1", "v2"]
    assert [m.annotation("io.containerd.image.name") for m in index.manifests] == [
        "docker.io/pybuild-test/app:1",
        "localhost:5000/app:v2",
    ]
    assert {m.digest for m in index.manifests} == {img.descriptor.digest}
    for name, content in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(content).hexdigest() == name.rsplit("/", 1)[1]
    assert {f"sha256:{n.rsplit('/', 1)[1]}" for n in files if n.startswith("blobs/")} == set(source.blobs)
    docker = json.loads(files["manifest.json"])
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    assert docker == [
        {
            "Config": "blobs/sha256/" + manifest.config.digest.split(":")[1],
            "RepoTags": ["pybuild-test/app:1", "localhost:5000/app:v2"],
            "Layers": ["blobs/sha256/" + layer.digest.split(":")[1] for layer in manifest.layers],
        }
    ]


def test_archives_are_deterministic(image, tmp_path: Path) -> None:
    source, img = image
    assert write(tmp_path / "a", write_oci_archive, source, [img]) == write(tmp_path / "b", write_oci_archive, source, [img])
    assert write(tmp_path / "c", write_docker_archive, source, [img]) == write(tmp_path / "d", write_docker_archive, source, [img])
    with tarfile.open(tmp_path / "a") as tar:
        assert {(m.mtime, m.uid, m.uname) for m in tar.getmembers()} == {(0, 0, "")}


def test_oci_archive_puts_layers_first_and_the_layout_files_last(image, tmp_path: Path) -> None:
    source, img = image
    with tarfile.open(fileobj=io.BytesIO(write(tmp_path / "img.tar", write_oci_archive, source, [img]))) as tar:
        files = [m.name for m in tar.getmembers() if m.isfile()]
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    blob = "blobs/sha256/{}".format
    layers = [blob(l.digest.split(":")[1]) for l in manifest.layers]
    documents = [blob(img.descriptor.digest.split(":")[1]), blob(manifest.config.digest.split(":")[1])]
    assert files == [*layers, *documents, "index.json", "manifest.json", "oci-layout"]


def _layer_bytes(source: MemoryBlobSource, img: ArchiveImage) -> list[tuple[Descriptor, bytes]]:
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    return [(layer, source.blobs[layer.digest]) for layer in manifest.layers]


def _feed(writer: OciArchiveWriter, source: MemoryBlobSource, layers: list[tuple[Descriptor, bytes]], scenario: str) -> None:
    """Each layer through a pending member the way ``scenario`` says, then added."""
    for i, (layer, data) in enumerate(layers):
        pending = writer.pending_blob()
        assert pending is not None
        if scenario == "made while written":
            pending.write(data[:100])
            pending.write(data[100:])
        elif scenario == "restarted":
            pending.write(b"a first try that failed")
            pending.restart()
            pending.write(data)
        elif scenario == "wrong size":
            pending.write(data + b"extra")
        elif scenario == "made before" and i == 0:
            pass  # nothing written: the blob is copied from the source
        else:
            pending.write(data)
        writer.add_blob(source, layer)
    if scenario == "already in the archive":
        pending = writer.pending_blob()
        assert pending is not None
        pending.write(layers[0][1])
        writer.add_blob(source, layers[0][0])  # a second use of a layer is not written twice


@pytest.mark.parametrize("scenario", ["made while written", "restarted", "wrong size", "made before", "already in the archive"])
def test_a_blob_written_while_it_is_made_gives_the_same_archive_as_a_copy(image, tmp_path: Path, scenario: str) -> None:
    source, img = image
    expected = write(tmp_path / "copied.tar", write_oci_archive, source, [img])
    with open(tmp_path / "pending.tar", "wb") as out:
        writer = OciArchiveWriter(out, can_seek_back=True)
        _feed(writer, source, _layer_bytes(source, img), scenario)
        writer.finish(source, [img])
    assert (tmp_path / "pending.tar").read_bytes() == expected


def test_a_stream_gets_no_pending_blob_and_a_blob_cannot_stay_pending(image, tmp_path: Path) -> None:
    source, img = image
    assert OciArchiveWriter(io.BytesIO()).pending_blob() is None  # it may not seek back in a stream
    writer = OciArchiveWriter(io.BytesIO(), can_seek_back=True)
    assert writer.pending_blob() is not None
    with pytest.raises(RuntimeError):
        writer.pending_blob()
    with pytest.raises(RuntimeError):
        writer.finish(source, [img])


def test_oci_archive_round_trip(image, tmp_path: Path) -> None:
    source, img = image
    path = tmp_path / "img.tar"
    write(path, write_oci_archive, source, [img])
    with read_archive(path) as archive:
        assert archive.format == "oci"
        assert [i.names for i in archive.images] == [("docker.io/pybuild-test/app:1",), ("localhost:5000/app:v2",)]
        loaded = archive.images[0]
        assert loaded.descriptor.digest == img.descriptor.digest
        assert loaded.manifest == Manifest.from_json(source.blobs[img.descriptor.digest])
        assert loaded.config.diff_ids and len(loaded.config.diff_ids) == 2
        check_blob_source(archive, source.blobs, missing="sha256:" + "0" * 64)
        assert archive.digests == frozenset(source.blobs)


def test_docker_archive_as_docker_save_writes_it(image, tmp_path: Path) -> None:
    source, img = image
    files = tar_members(write(tmp_path / "d.tar", write_docker_archive, source, [img]))
    manifest_json = json.loads(files["manifest.json"])
    assert len(manifest_json) == 1
    entry = manifest_json[0]
    assert entry["RepoTags"] == ["pybuild-test/app:1", "localhost:5000/app:v2"]
    config = json.loads(files[entry["Config"]])
    assert entry["Config"] == hashlib.sha256(files[entry["Config"]]).hexdigest() + ".json"
    # Layers are stored uncompressed: each file's digest is its diffID.
    assert ["sha256:" + hashlib.sha256(files[path]).hexdigest() for path in entry["Layers"]] == config["rootfs"]["diff_ids"]
    top = config["rootfs"]["diff_ids"][-1].split(":")[1]
    assert json.loads(files["repositories"]) == {"pybuild-test/app": {"1": top}, "localhost:5000/app": {"v2": top}}
    with tarfile.open(fileobj=io.BytesIO(files[entry["Layers"][1]])) as layer:
        assert {"x", "etc/.wh.os-release", "var/www/.wh..wh..opq"} <= set(layer.getnames())


def test_docker_archive_round_trip(image, tmp_path: Path) -> None:
    source, img = image
    path = tmp_path / "d.tar"
    write(path, write_docker_archive, source, [img])
    with read_archive(path) as archive:
        assert archive.format == "docker"
        (loaded,) = archive.images
        assert loaded.names == ("pybuild-test/app:1", "localhost:5000/app:v2")
        assert loaded.config == build_config(source, img)
        assert [layer.media_type for layer in loaded.manifest.layers] == [MEDIA_TYPE_DOCKER_LAYER] * 2
        assert [layer.digest for layer in loaded.manifest.layers] == list(loaded.config.diff_ids)
        with archive.open(loaded.descriptor.digest) as f:
            assert Manifest.from_json(f.read()) == loaded.manifest
        for layer in loaded.manifest.layers:
            with archive.open(layer.digest) as f:
                assert "sha256:" + hashlib.sha256(f.read()).hexdigest() == layer.digest


def build_config(source: MemoryBlobSource, img: ArchiveImage) -> ImageConfig:
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    return ImageConfig.from_json(source.blobs[manifest.config.digest])


def test_compressed_layers_in_a_docker_archive_are_read(image, tmp_path: Path) -> None:
    # docker load accepts gzip'd layer files; so does read_archive (diffID checked after decompression).
    source, img = image
    files = tar_members(write(tmp_path / "d.tar", write_docker_archive, source, [img]))
    entry = json.loads(files["manifest.json"])[0]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in files.items():
            if name in entry["Layers"]:
                content = gzip.compress(content, mtime=0)
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    (tmp_path / "gz.tar").write_bytes(out.getvalue())
    with read_archive(tmp_path / "gz.tar") as archive:
        assert [layer.media_type for layer in archive.images[0].manifest.layers] == [MEDIA_TYPE_DOCKER_LAYER_GZIP] * 2


def test_a_compressed_archive_file_is_read(image, tmp_path: Path) -> None:
    source, img = image
    data = write(tmp_path / "img.tar", write_oci_archive, source, [img])
    (tmp_path / "img.tar.gz").write_bytes(gzip.compress(data))
    with read_archive(tmp_path / "img.tar.gz", tmp_dir=tmp_path) as archive:
        assert archive.images[0].descriptor == read_archive(tmp_path / "img.tar").images[0].descriptor


def rewrite(path: Path, change) -> None:
    """Rewrite the archive at ``path`` with ``change(name, bytes) -> bytes`` applied to its files."""
    out = io.BytesIO()
    with tarfile.open(path) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            if member.isfile():
                content = change(member.name, src.extractfile(member).read())  # type: ignore[union-attr]
                member.size = len(content)
                dst.addfile(member, io.BytesIO(content))
            else:
                dst.addfile(member)
    path.write_bytes(out.getvalue())


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def test_corrupt_oci_blob_is_refused(image, tmp_path: Path) -> None:
    source, img = image
    path = tmp_path / "img.tar"
    write(path, write_oci_archive, source, [img])
    layer = Manifest.from_json(source.blobs[img.descriptor.digest]).layers[1].digest.split(":")[1]
    rewrite(path, lambda name, data: flip_last_byte(data) if name.endswith(layer) else data)
    with pytest.raises(ImageError, match="does not match its digest"):
        read_archive(path)


def test_corrupt_docker_layer_is_refused(image, tmp_path: Path) -> None:
    source, img = image
    path = tmp_path / "d.tar"
    write(path, write_docker_archive, source, [img])
    rewrite(path, lambda name, data: data.replace(b"hello from the extra layer", b"HELLO from the extra layer"))
    with pytest.raises(ImageError, match="does not match its diffID"):
        read_archive(path)


def test_bad_source_content_is_refused_when_writing(image, tmp_path: Path) -> None:
    source, img = image
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    layer = manifest.layers[1].digest
    source.blobs[layer] = flip_last_byte(source.blobs[layer])
    with pytest.raises(CorruptContent):
        write(tmp_path / "a.tar", write_oci_archive, source, [img])
    with pytest.raises(CorruptContent):
        write(tmp_path / "b.tar", write_docker_archive, source, [img])
    del source.blobs[layer]
    with pytest.raises(NotFound):
        write(tmp_path / "c.tar", write_oci_archive, source, [img])


def test_not_an_image_archive(tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    (tmp_path / "plain.tar").write_bytes(out.getvalue())
    with pytest.raises(ImageError, match="not an image archive"):
        read_archive(tmp_path / "plain.tar")
    with pytest.raises(ImageError, match="cannot open archive"):
        read_archive(tmp_path / "missing.tar")


def test_multi_platform_index(tmp_path: Path, busybox_rootfs: Path, require_root: None) -> None:
    source = MemoryBlobSource()
    native = build_image(source, [busybox_rootfs])
    other = build_image(source, [busybox_rootfs], compression="zstd", architecture="riscv64")
    manifests = []
    for img, arch in ((other, "riscv64"), (native, ARCH)):
        manifests.append(Descriptor(img.descriptor.media_type, img.descriptor.digest, img.descriptor.size, platform=ImagePlatform(arch, "linux")))
    index_bytes = Index(tuple(manifests)).to_json()
    source.add(index_bytes)
    multi = ArchiveImage(Descriptor.of(MEDIA_TYPE_OCI_INDEX, index_bytes), ("multi:latest",))
    path = tmp_path / "multi.tar"
    with open(path, "wb") as out:
        write_oci_archive(out, source, [multi], platform=ImagePlatform(ARCH, "linux"))
    files = tar_members(path.read_bytes())
    (docker_entry,) = json.loads(files["manifest.json"])
    native_manifest = Manifest.from_json(source.blobs[native.descriptor.digest])
    assert docker_entry["Config"].endswith(native_manifest.config.digest.split(":")[1])
    with read_archive(path) as archive:
        assert sorted(i.config.architecture for i in archive.images) == sorted({"riscv64", ARCH})
        assert all(i.top.media_type == MEDIA_TYPE_OCI_INDEX for i in archive.images)
    with pytest.raises(NotFound, match="no manifest for linux/s390x"):
        with open(tmp_path / "none.tar", "wb") as out:
            write_docker_archive(out, source, [multi], platform=ImagePlatform("s390x", "linux"))


def test_memory_blob_source_conformance() -> None:
    source = MemoryBlobSource()
    digest = source.add(b"content")
    check_blob_source(source, {digest: b"content"}, missing="sha256:" + "1" * 64)


def test_descriptor_size_must_match_the_blob(image, tmp_path: Path) -> None:
    source, img = image
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    layer = manifest.layers[0]
    lying = Manifest(manifest.config, (Descriptor(layer.media_type, layer.digest, layer.size + 1), *manifest.layers[1:]))
    lying_bytes = lying.to_json()
    source.add(lying_bytes)
    path = tmp_path / "lying.tar"
    with open(path, "wb") as out:  # the writer copies exactly the descriptor's size: it refuses
        with pytest.raises(CorruptContent, match="is not"):
            write_oci_archive(out, source, [ArchiveImage(Descriptor.of(lying.media_type, lying_bytes))], docker_compatible=False)
    # Hand-made archive with the lying manifest: the reader refuses it.
    files = tar_members(write(tmp_path / "good.tar", write_oci_archive, source, [img], docker_compatible=False))
    index = Index((Descriptor.of(lying.media_type, lying_bytes),))
    files["index.json"] = index.to_json()
    files["blobs/sha256/" + Descriptor.of(lying.media_type, lying_bytes).digest.split(":")[1]] = lying_bytes
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    path.write_bytes(out.getvalue())
    with pytest.raises(ImageError, match="its descriptor says"):
        read_archive(path)
