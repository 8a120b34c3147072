"""Build outputs: --output parsing, OCI and docker archives, load, the local and tar exporters."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
import trio

from pybuild.cache import Root
from pybuild.errors import CorruptContent, ImageError, NotFound, UsageError
from pybuild.oci import ImageStore
from pybuild.oci._archive import read_archive
from pybuild.oci._compression import open_decompressed
from pybuild.oci._export import Output, export_docker_archive, export_oci_archive, export_outputs, parse_output, parse_outputs
from pybuild.oci._export_layers import LayerSettings, export_manifest
from pybuild.oci._export_local import export_local
from pybuild.oci._load import load_archive


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    root = Root.open(tmp_path / "root")
    yield ImageStore(root)
    root.close()


@pytest.fixture
def app(store: ImageStore, busybox_tar: Path, require_root: None):  # type: ignore[no-untyped-def]
    """busybox plus a layer that adds /app/hello, replaces /etc/hostname and deletes /etc/motd-like files."""
    with open(busybox_tar, "rb") as stream:
        base = store.import_tarball(stream, ["busybox:latest"])
    (base_snapshot,) = store.snapshots_for(base)
    active = store.root.snapshots.new_active()
    upper = Path(active.upper)
    (upper / "app").mkdir()
    (upper / "app" / "hello").write_text("#!/bin/sh\necho hello\n")
    os.chmod(upper / "app" / "hello", 0o755)
    (upper / "etc").mkdir()
    (upper / "etc" / "hostname").write_text("exported\n")
    os.mknod(upper / "etc" / "group", 0o020000, 0)  # a whiteout: /etc/group is deleted
    snapshot = store.root.snapshots.commit(active, base_snapshot)
    top = store.layer_for_snapshot(snapshot)
    store.remember_chain([base.layers[0].diff_id, top.diff_id], [base_snapshot, snapshot])
    config = dict(base.config)
    config["rootfs"] = {"type": "layers", "diff_ids": [base.layers[0].diff_id, top.diff_id]}
    config["history"] = [*config["history"], {"created": config["created"], "created_by": "COPY app /app"}]
    config["config"] = {"Cmd": ["/app/hello"]}
    return store.add_image(config, [base.layers[0], top], ["app:1"])


# --- --output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("out", Output("local", "out")),
        ("-", Output("tar", "-")),
        ("type=local,dest=dir", Output("local", "dir")),
        ("type=tar,dest=-", Output("tar", "-")),
        ("type=oci,dest=x.tar,name=a:1", Output("oci", "x.tar", ("a:1",), layers=LayerSettings(compress_plain=True))),
        ('type=docker,dest=x.tar,"name=a:1,b:2"', Output("docker", "x.tar", ("a:1", "b:2"))),
        ("type=image,name=a:1,push=true", Output("image", None, ("a:1",), True)),
        ("type=registry,name=localhost:5000/a:1", Output("registry", None, ("localhost:5000/a:1",), True)),
        (
            "type=oci,dest=x.tar,compression=zstd,compression-level=9,force-compression=true",
            Output("oci", "x.tar", layers=LayerSettings("zstd", 9, True)),
        ),
        ("type=oci,dest=x.tar,compression=uncompressed,oci-mediatypes=true", Output("oci", "x.tar", layers=LayerSettings("none"))),
        ("type=image,rewrite-timestamp=true", Output("image", rewrite_timestamp=True)),
    ],
)
def test_output_values(text: str, expected: Output) -> None:
    assert parse_output(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("type=oci", "dest is required"),
        ("type=nope,dest=x", "unknown output type 'nope'"),
        ("dest=x", "type is required"),
        ("type=local,dest=-", "writes a directory"),
        ("type=oci,dest=x,tar=false", "not supported"),
        ("type=oci,dest=x,compression=lz4", "unknown compression"),
        ("type=oci,dest=x,colour=blue", "unknown option 'colour'"),
        ("type=oci,dest=x,force-compression=maybe", "true or false"),
    ],
)
def test_bad_outputs_are_usage_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_output(text)


def test_a_malformed_name_fails_before_the_build() -> None:
    with pytest.raises(ImageError, match="invalid reference"):
        parse_output("type=image,name=UPPER:1")


def test_push_and_defaults() -> None:
    assert parse_outputs([]) == (Output("image"),)
    assert parse_outputs([], push=True) == (Output("registry", push=True),)
    assert parse_outputs(["type=image,name=a:1"], push=True) == (Output("image", None, ("a:1",), True),)
    assert parse_outputs(["out"], push=True) == (Output("local", "out"), Output("registry", push=True))
    with pytest.raises(UsageError, match="standard output"):
        parse_outputs(["-", "type=oci,dest=-"])


# --- archives ---------------------------------------------------------------------


def test_oci_archive_carries_the_stored_manifest(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "app-oci.tar"
    export_oci_archive(store, app, path, ["app:1"])
    with read_archive(path) as archive:
        assert archive.format == "oci"
        (loaded,) = archive.images
        assert loaded.descriptor.digest == app.manifest_digest
        assert loaded.manifest.config.digest == app.id
        assert [l.digest for l in loaded.manifest.layers] == [l.digest for l in app.layers]
        assert loaded.names == ("docker.io/library/app:1",)
    names = tarfile.open(path).getnames()
    assert "manifest.json" in names and "oci-layout" in names  # docker load reads it too
    assert not any(n.startswith(".") for n in os.listdir(tmp_path)), "no temp file is left behind"


def test_oci_archive_recompresses_layers_keeping_the_image_id(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    zstd = LayerSettings("zstd", force=True)
    first, second = tmp_path / "a.tar", tmp_path / "b.tar"
    export_oci_archive(store, app, first, layers=zstd)
    export_oci_archive(store, app, second, layers=zstd)
    assert first.read_bytes() == second.read_bytes()  # converted once, then reused
    with read_archive(first) as archive:
        (loaded,) = archive.images
        assert loaded.manifest.config.digest == app.id
        assert {l.media_type for l in loaded.manifest.layers} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
        assert loaded.config.diff_ids == tuple(l.diff_id for l in app.layers)
        assert loaded.descriptor.digest != app.manifest_digest
    # Without force, compressed layers keep their compression.
    kept = export_manifest(store, app, LayerSettings("zstd"))
    assert kept.digest == app.manifest_digest


def test_layers_made_by_an_export_are_written_into_the_archive_not_copied(  # type: ignore[no-untyped-def]
    store: ImageStore, app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pybuild.oci import _archive

    copied: list[str] = []
    for method in ("copy_verified", "stream"):
        original = getattr(_archive._TarOut, method)

        def spy(self, name, *args, _original=original):  # type: ignore[no-untyped-def]
            copied.append(name.rsplit("/", 1)[-1])
            return _original(self, name, *args)

        monkeypatch.setattr(_archive._TarOut, method, spy)
    zstd = LayerSettings("zstd", force=True)
    made = tmp_path / "made.tar"
    export_oci_archive(store, app, made, ["app:1"], layers=zstd)
    with read_archive(made) as archive:
        (loaded,) = archive.images  # every blob verified against its digest
        layers = [l.digest.split(":")[1] for l in loaded.manifest.layers]
    assert not set(layers) & set(copied)  # compressed into the archive and the store at once
    assert loaded.manifest.config.digest.split(":")[1] in copied
    copied.clear()
    again = io.BytesIO()
    export_oci_archive(store, app, again, ["app:1"], layers=zstd)
    assert set(layers) <= set(copied)  # made before: copied from the store
    assert again.getvalue() == made.read_bytes()


def test_an_archive_file_and_an_archive_stream_hold_the_same_bytes(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # a file gets verified blobs by copy_file_range, a stream gets them read and hashed
    path = tmp_path / "app.tar"
    export_oci_archive(store, app, path, ["app:1"])
    stream = io.BytesIO()
    export_oci_archive(store, app, stream, ["app:1"])
    assert path.read_bytes() == stream.getvalue()
    with read_archive(path) as archive:
        (loaded,) = archive.images  # read_archive verifies every blob's digest
        assert [l.digest for l in loaded.manifest.layers] == [l.digest for l in app.layers]


def _damage(store: ImageStore, digest: str) -> None:
    blob = store.root.blobs.path(digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


def test_a_damaged_built_layer_is_made_again_from_its_snapshot(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    export_oci_archive(store, app, tmp_path / "first.tar")  # the blobs are now known intact
    _damage(store, app.layers[-1].digest)
    export_oci_archive(store, app, tmp_path / "second.tar")
    assert (tmp_path / "second.tar").read_bytes() == (tmp_path / "first.tar").read_bytes()
    assert store.root.blob_intact(app.layers[-1].digest, app.layers[-1].size)


def test_a_damaged_blob_that_cannot_be_made_again_is_not_copied_into_an_archive(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    export_oci_archive(store, app, tmp_path / "first.tar")
    (top_snapshot, _base) = store.snapshots_for(app)
    (Path(store.root.snapshots.tree(top_snapshot)) / "app" / "hello").write_text("changed under the store\n")
    _damage(store, app.layers[-1].digest)
    with pytest.raises((CorruptContent, NotFound)) as failure:
        export_oci_archive(store, app, tmp_path / "second.tar")
    assert app.layers[-1].digest in str(failure.value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".tar" or ".pybuild-" in p.name) == ["first.tar"]  # no half-written archive


def test_a_plain_stored_layer_is_recompressed_without_its_tree(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (top_snapshot, _base) = store.snapshots_for(app)
    plain = store.layer_for_snapshot(top_snapshot, "none")
    assert plain.digest == plain.diff_id == app.layers[-1].diff_id
    gzip_digest = app.layers[-1].digest
    store.root.blobs.delete(gzip_digest)
    tree = store.root.snapshots.tree(top_snapshot)
    os.rename(tree, tree.with_name(tree.name + ".away"))  # a tree walk would now fail
    try:
        remade = store.layer_for_snapshot(top_snapshot, "zstd")
    finally:
        os.rename(tree.with_name(tree.name + ".away"), tree)
    assert remade.diff_id == plain.diff_id
    assert remade.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert store.root.blob_intact(remade.digest, remade.size)
    with store.root.blobs.open(remade.digest) as reader:
        assert "sha256:" + hashlib.sha256(open_decompressed(reader).read()).hexdigest() == plain.diff_id


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_recompressing_a_stored_plain_layer_gives_the_blob_its_tree_gives(store: ImageStore, app, kind: str) -> None:  # type: ignore[no-untyped-def]
    from pybuild.oci._compression import Compression, compress_layer

    (top_snapshot, _base) = store.snapshots_for(app)
    plain = store.layer_for_snapshot(top_snapshot, "none")
    from_tree = io.BytesIO()
    expected = compress_layer(store.root.snapshots.tree(top_snapshot), kind, None, from_tree)
    from_blob = store.recompress(plain, Compression(kind), None)  # fed from a mapping of the plain blob
    assert (from_blob.digest, from_blob.size, from_blob.diff_id) == (expected.digest, expected.size, expected.diff_id)
    with store.root.blobs.open(from_blob.digest) as reader:
        assert reader.read() == from_tree.getvalue()


def test_docker_archive_and_load_round_trip(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "app-docker.tar"
    export_docker_archive(store, app, path, ["app:1", "registry.example/app:2"])
    manifest = json.loads(tarfile.open(path).extractfile("manifest.json").read())
    assert manifest[0]["Config"] == app.id.split(":")[1] + ".json"
    assert manifest[0]["RepoTags"] == ["app:1", "registry.example/app:2"]
    other_root = Root.open(tmp_path / "other-root")
    try:
        other = ImageStore(other_root)
        (result,) = load_archive(other, path)
        assert result.image.id == app.id
        assert set(result.names) == {"docker.io/library/app:1", "registry.example/app:2"}
        assert result.image.size == store.get("app:1").size
        top = other.root.snapshots.tree(other.snapshots_for(result.image)[0])
        assert (top / "app" / "hello").read_text() == "#!/bin/sh\necho hello\n"
        # plain layers from a docker-archive are compressed for a registry, same diffIDs
        pushed = export_manifest(other, result.image, LayerSettings(compress_plain=True))
        assert all(l.media_type.endswith("+gzip") for l in pushed.layers)
        assert [l.diff_id for l in pushed.layers] == [l.diff_id for l in app.layers]
        # loading again moves nothing
        (again,) = load_archive(other, path)
        assert again.replaced == ()
    finally:
        other_root.close()


def test_load_reports_a_name_taken_from_another_image(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "base.tar"
    export_docker_archive(store, store.get("busybox:latest"), path, ["app:1"])
    (result,) = load_archive(store, path)
    assert result.replaced == (("docker.io/library/app:1", app.id),)
    assert store.get("app:1").id == store.get("busybox:latest").id


# --- the final filesystem ------------------------------------------------------------


def test_local_export_merges_into_dest_without_leaving_it(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(outside, dest / "etc")  # a trap: writing through it would land outside dest
    (dest / "keep.txt").write_text("mine\n")
    (dest / "app").mkdir()
    (dest / "app" / "hello").write_text("old\n")
    export_local(store, app, dest)
    assert os.listdir(outside) == []
    assert not (dest / "etc").is_symlink() and (dest / "etc" / "hostname").read_text() == "exported\n"
    assert not (dest / "etc" / "group").exists() and (dest / "etc" / "passwd").exists()
    assert (dest / "app" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert (dest / "keep.txt").read_text() == "mine\n"
    assert os.path.islink(dest / "bin" / "sh")


def test_local_export_into_a_new_directory(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dest = tmp_path / "new" / "rootfs"
    stats = export_local(store, app, dest)
    assert stats.entries > 100
    assert os.stat(dest / "app" / "hello").st_mode & 0o777 == 0o755
    with pytest.raises(Exception, match="not a directory"):
        export_local(store, app, dest / "app" / "hello")


def test_tar_output_to_a_stream(store: ImageStore, app) -> None:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    results = trio.run(lambda: export_outputs(store, app, [parse_output("-")], stdout=out))
    assert results[0].output.type == "tar"
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
        assert "app/hello" in names and "etc/hostname" in names and "etc/group" not in names
        assert not any(".wh." in n for n in names)
        assert tar.extractfile("etc/hostname").read() == b"exported\n"


def test_outputs_tag_the_image_and_need_a_stream_for_stdout(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outputs = parse_outputs(["type=image,name=extra:1", f"type=docker,dest={tmp_path / 'x.tar'}"])
    trio.run(lambda: export_outputs(store, app, outputs, tags=["app:1"]))
    assert store.get("extra:1").id == app.id
    assert json.loads(tarfile.open(tmp_path / "x.tar").extractfile("manifest.json").read())[0]["RepoTags"] == ["app:1"]
    with pytest.raises(UsageError, match="standard output"):
        trio.run(lambda: export_outputs(store, app, [parse_output("type=oci,dest=-")]))
    with pytest.raises(UsageError, match="needs a name"):
        trio.run(lambda: export_outputs(store, app, [Output("registry", push=True)]))


