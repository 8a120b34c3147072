"""Build outputs: --output parsing, OCI and docker archives, load, the local and tar exporters."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from pathlib import Path

import pytest
import trio

from pybuild.cache import Root
from pybuild.errors import CorruptContent, ImageError, NotFound, UsageError
from pybuild.oci import ImageStore
from pybuild.oci._archive import read_archive
from pybuild.oci._compression import open_decompressed
from pybuild.oci._export import (
    Output,
    export_docker_archive,
    export_oci_archive,
    export_outputs,
    parse_output,
    parse_outputs,
    write_images_archive,
)
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




# --- output paths: what is at dest is written through, never replaced ------------------------


EXPORT_KINDS = ("save", "oci", "docker", "tar")


def _export(store: ImageStore, image, kind: str, dest: Path) -> None:  # type: ignore[no-untyped-def]
    """Write ``image`` to ``dest`` the way ``pybuild save -o`` (kind ``save``) or ``--output type=KIND`` does."""
    if kind == "save":
        write_images_archive(store, [(image, ["app:1"])], dest, format="docker")
    else:
        trio.run(lambda: export_outputs(store, image, [parse_output(f"type={kind},dest={dest}")], tags=["app:1"]))


def _check_exported(kind: str, path: Path, image) -> None:  # type: ignore[no-untyped-def]
    if kind == "tar":
        with tarfile.open(path) as tar:
            assert tar.extractfile("app/hello").read() == b"#!/bin/sh\necho hello\n"
        return
    with read_archive(path) as archive:  # every blob checked against its digest
        (loaded,) = archive.images
        assert loaded.manifest.config.digest == image.id


def _leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".pybuild-" in name)


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_an_output_path_that_is_a_symlink_writes_its_target_and_keeps_the_link(store: ImageStore, app, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "image.tar").write_text("old\n")
    link = tmp_path / "link.tar"
    os.symlink(elsewhere / "image.tar", link)
    _export(store, app, kind, link)
    assert os.readlink(link) == str(elsewhere / "image.tar")
    _check_exported(kind, elsewhere / "image.tar", app)
    assert _leftovers(tmp_path) == _leftovers(elsewhere) == []


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_an_output_path_that_is_a_dangling_symlink_creates_its_target(store: ImageStore, app, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    link = tmp_path / "link.tar"
    os.symlink("made.tar", link)
    _export(store, app, kind, link)
    assert os.readlink(link) == "made.tar"
    _check_exported(kind, tmp_path / "made.tar", app)


def _drain_fifo_while(fifo: Path, work) -> bytes:  # type: ignore[no-untyped-def]
    """Run ``work`` in a thread while reading ``fifo``: the bytes it wrote there.

    The FIFO is opened before ``work`` starts (non-blocking, so nothing waits
    for a writer that never comes): if ``work`` never opens it, this returns
    what was read by the time ``work`` ended, nothing.
    """
    import select
    import threading

    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as error:  # noqa: BLE001 -- re-raised in the test's thread
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    chunks = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    try:
        while True:
            if poller.poll(50):  # data, or the writer has closed (no POLLHUP before a first writer)
                try:
                    data = os.read(fd, 1 << 20)
                except BlockingIOError:
                    continue
                if not data:
                    break
                chunks.append(data)
            elif not thread.is_alive() and not poller.poll(0):
                break  # the work ended without ever opening the FIFO
    finally:
        os.close(fd)
        thread.join()
    if failures:
        raise failures[0]
    return b"".join(chunks)


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_an_output_path_that_is_a_fifo_is_streamed_into(store: ImageStore, app, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    data = _drain_fifo_while(fifo, lambda: _export(store, app, kind, fifo))
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the FIFO was replaced"
    received = tmp_path / "received.tar"
    received.write_bytes(data)
    _check_exported(kind, received, app)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_an_output_path_that_is_a_character_device_stays_a_device(store: ImageStore, app, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    null = tmp_path / "null"  # this test's own /dev/null: the host's is never at risk
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _export(store, app, kind, null)
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert _leftovers(tmp_path) == []


def test_a_device_that_fails_writes_gives_a_clear_error(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    full = tmp_path / "full"  # a /dev/full: every write fails with ENOSPC
    os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    with pytest.raises(UsageError, match="No space left"):
        _export(store, app, "save", full)
    assert stat.S_ISCHR(os.lstat(full).st_mode)


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_an_output_path_that_is_a_directory_is_refused(store: ImageStore, app, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "mine").write_text("mine\n")
    with pytest.raises(UsageError, match="is a directory"):
        _export(store, app, kind, directory)
    assert os.listdir(directory) == ["mine"]
    assert _leftovers(tmp_path) == []


def test_a_local_output_follows_a_symlinked_dest_once(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, real / "app")  # planted inside dest: replaced, never followed
    export_local(store, app, tmp_path / "link")
    assert (tmp_path / "link").is_symlink()
    assert (real / "app" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert not (real / "app").is_symlink() and os.listdir(outside) == []


# --- exports to another filesystem ----------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Path, require_root: None):  # type: ignore[no-untyped-def]
    """A tmpfs of its own: another filesystem than the root's (which is in tmp_path)."""
    import subprocess

    mount = tmp_path / "tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "pybuild-test", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.parametrize("kind", EXPORT_KINDS)
def test_an_archive_exports_to_another_filesystem(store: ImageStore, app, tmp_path: Path, tmpfs: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    assert os.stat(tmpfs).st_dev != os.stat(store.root.path).st_dev
    _export(store, app, kind, tmpfs / "image.tar")
    _check_exported(kind, tmpfs / "image.tar", app)
    _export(store, app, kind, tmp_path / "same.tar")
    assert (tmpfs / "image.tar").read_bytes() == (tmp_path / "same.tar").read_bytes()
    assert _leftovers(tmpfs) == []


def test_a_local_output_exports_to_another_filesystem(store: ImageStore, app, tmpfs: Path) -> None:  # type: ignore[no-untyped-def]
    trio.run(lambda: export_outputs(store, app, [parse_output(f"type=local,dest={tmpfs / 'rootfs'}")]))
    assert (tmpfs / "rootfs" / "app" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert os.path.islink(tmpfs / "rootfs" / "bin" / "sh")


@pytest.mark.parametrize("fails_after", [0, 4096])
def test_a_copy_the_kernel_refuses_falls_back_to_the_same_bytes(  # type: ignore[no-untyped-def]
    store: ImageStore, app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails_after: int
) -> None:
    import errno

    expected = tmp_path / "expected.tar"
    export_oci_archive(store, app, expected, ["app:1"])
    real_copy = os.copy_file_range
    calls = []

    def cross_device(src: int, dst: int, count: int, offset_src=None, offset_dst=None) -> int:  # type: ignore[no-untyped-def]
        calls.append(count)
        if fails_after and len(calls) == 1:
            return real_copy(src, dst, min(count, fails_after), offset_src, offset_dst)
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "copy_file_range", cross_device)
    fallen_back = tmp_path / "fallen-back.tar"
    export_oci_archive(store, app, fallen_back, ["app:1"])
    assert calls, "the export did not try copy_file_range"
    assert fallen_back.read_bytes() == expected.read_bytes()
    export_local(store, app, tmp_path / "rootfs")
    assert (tmp_path / "rootfs" / "app" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    assert (tmp_path / "rootfs" / "bin" / "busybox").read_bytes() == Path("/bin/busybox").read_bytes()


# --- failed and killed exports ---------------------------------------------------------------


def test_a_failed_export_leaves_the_old_destination_and_no_temp_file(store: ImageStore, app, tmp_path: Path, require_root: None) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    small = tmp_path / "small"  # a disk too small for the archive
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "pybuild-test", str(small)], check=True)
    try:
        (small / "image.tar").write_text("old\n")
        for kind in EXPORT_KINDS:
            with pytest.raises(UsageError, match="No space left"):
                _export(store, app, kind, small / "image.tar")
            assert (small / "image.tar").read_text() == "old\n"
            assert os.listdir(small) == ["image.tar"]
    finally:
        subprocess.run(["umount", "-l", str(small)], check=True)


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_temp_files_of_a_killed_export_are_removed_by_the_next_one(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    dead = _dead_pid()
    old_style = tmp_path / f".image.tar.pybuild-{dead}"
    new_style = tmp_path / f".image.tar.pybuild-{dead}-0123abcd"
    reused_pid = tmp_path / ".image.tar.pybuild-1-89abcdef"  # pid 1 lives, but is not the writer: old and unlocked
    for leftover in (old_style, new_style, reused_pid):
        leftover.write_bytes(b"half an archive")
    os.utime(reused_pid, (0, 0))
    other = tmp_path / f".other.tar.pybuild-{dead}"  # another destination's: not this export's business
    other.write_bytes(b"x")
    _export(store, app, "save", tmp_path / "image.tar")
    assert _leftovers(tmp_path) == [other.name]
    _check_exported("save", tmp_path / "image.tar", app)


def test_the_temp_file_of_an_export_still_running_is_left_alone(store: ImageStore, app, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    busy = tmp_path / f".image.tar.pybuild-{_dead_pid()}-0123abcd"  # even with its pid gone, the lock says it is written
    busy.write_bytes(b"being written")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'rb'); fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); sys.stdin.read()", busy],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        holder.stdout.readline()  # the lock is held
        fresh = tmp_path / f".image.tar.pybuild-{os.getppid()}-fedcba98"  # a live pid, made a moment ago: not locked yet
        fresh.write_bytes(b"just created")
        _export(store, app, "save", tmp_path / "image.tar")
        assert _leftovers(tmp_path) == sorted([busy.name, fresh.name])
        assert busy.read_bytes() == b"being written"
    finally:
        holder.stdin.close()
        holder.wait()


def test_a_local_output_merges_into_a_filesystem_mounted_inside_dest(store: ImageStore, app, tmp_path: Path, require_root: None) -> None:  # type: ignore[no-untyped-def]
    import subprocess

    dest = tmp_path / "dest"
    (dest / "app").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "pybuild-test", str(dest / "app")], check=True)
    try:
        (dest / "app" / "mine").write_text("mine\n")
        export_local(store, app, dest)  # a rename into dest/app would cross filesystems
        assert (dest / "app" / "hello").read_text() == "#!/bin/sh\necho hello\n"
        assert (dest / "app" / "mine").read_text() == "mine\n"
        assert os.stat(dest / "app" / "hello").st_dev != os.stat(dest).st_dev
    finally:
        subprocess.run(["umount", "-l", str(dest / "app")], check=True)
