"""Damaged cache data is noticed and rebuilt, never trusted (issue 5)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import pybuild

EPOCH = "1700000000"
DOCKERFILE = "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n"


def digest_of(cli, context: Path) -> str:  # type: ignore[no-untyped-def]
    return cli("build", "-q", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", "-o", "type=image,rewrite-timestamp=true", str(context)).stdout.strip()


def test_a_deleted_snapshot_is_rebuilt(cli, busybox_image: str, tmp_path: Path, root: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    reference = digest_of(cli, tmp_path)
    from pybuild.cache import Root

    with Root.open(root) as opened:
        records = [record for _, record in opened.index.records() if record.snapshot_id]
        victim = max(records, key=lambda r: r.created).snapshot_id  # the last RUN's layer
    shutil.rmtree(root / "snapshots" / victim)
    rebuilt = cli("build", "--progress=plain", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", "-o", "type=image,rewrite-timestamp=true", str(tmp_path))
    step = re.search(r"^#(\d+) \[3/3\] RUN echo two > /two$", rebuilt.stderr, re.M)
    assert step is not None
    assert f"#{step.group(1)} DONE" in rebuilt.stderr  # ran again, not CACHED
    assert f"#{step.group(1)} cache miss: the cached result is gone or was pruned" in rebuilt.stderr
    assert digest_of(cli, tmp_path) == reference


def _damage(path: Path, how: str) -> None:
    if how == "flip":
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        os.truncate(path, path.stat().st_size // 2)


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_a_damaged_layer_blob_is_made_again_and_never_exported(cli, busybox_image: str, tmp_path: Path, root: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    reference = digest_of(cli, context)
    with Root.open(root) as opened:
        image = ImageStore(opened).by_id(reference)
        victim = image.layers[-1]
        blob = opened.blobs.path(victim.digest)
    assert blob is not None
    _damage(blob, how)

    # reading it out is refused, and leaves no archive behind
    archive = tmp_path / "out.tar"
    refused = cli("save", "-o", str(archive), reference, check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert not archive.exists()

    # the next build notices, makes the layer again from its snapshot: same bytes, same image
    assert digest_of(cli, context) == reference
    with Root.open(root) as opened:
        assert opened.blobs.verify(victim.digest)
    cli("save", "-o", str(archive), reference)
    assert archive.stat().st_size > victim.size


# -- a lost, emptied or damaged index ------------------------------------------------


def _break_index(root: Path, how: str) -> None:
    index = root / "index.db"
    if how == "garbage":
        index.write_bytes(os.urandom(64 * 1024))
    elif how == "empty":
        index.write_bytes(b"")
    elif how == "missing":
        index.unlink()
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["garbage", "empty", "missing"])
def test_a_lost_or_damaged_index_is_rebuilt_once_with_the_images_kept(cli, busybox_image: str, tmp_path: Path, root: Path, how: str) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    cli("build", "-q", "-t", "mine", str(context))
    before = cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    _break_index(root, how)

    rebuilt = cli("build", "-q", "-t", "again", str(context))  # the next build succeeds
    assert rebuilt.stderr.count("warning: the cache index") == 1, rebuilt.stderr
    assert "Traceback" not in rebuilt.stderr
    if how != "missing":
        assert list(root.glob("index.db.broken-*")), "the broken index is kept aside"
    listed = cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert "warning" not in listed.stderr  # said once, by the command that rebuilt it
    for line in before.splitlines():
        assert line in listed.stdout  # no image forgotten
    # the restored image is whole: its layers are found again, so it saves
    archive = tmp_path / "mine.tar"
    cli("save", "-o", str(archive), "mine", "busybox")
    assert archive.stat().st_size > 0


def test_a_truncated_wal_loses_no_image(cli, busybox_image: str, tmp_path: Path, root: Path) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    # a reader keeps the WAL from being checkpointed, as a crashed process would
    holder = sqlite3.connect(root / "index.db")
    holder.execute("BEGIN")
    holder.execute("SELECT count(*) FROM images").fetchone()
    cli("build", "-q", "-t", "walled", str(context))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    holder.close()
    wal = copy / "index.db-wal"
    assert wal.stat().st_size > 0
    os.truncate(wal, 32 + (wal.stat().st_size - 32) // 3)  # a torn tail: the last transactions are gone

    listed = pybuild("images", "--format", "{{.Repository}}:{{.Tag}}", root=copy)
    assert "walled:latest" in listed.stdout
    assert listed.stderr.count("warning:") == 1 and "restored them" in listed.stderr  # said once
    after = pybuild("build", "-q", "-t", "after", str(context), root=copy)
    assert "warning" not in after.stderr
    pybuild("save", "-o", str(tmp_path / "w.tar"), "walled", root=copy)


def test_a_damaged_index_found_mid_command_is_repaired_by_the_next(cli, busybox_image: str, tmp_path: Path, root: Path) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root

    with Root.open(root) as opened:
        opened.index.damage_marker.touch()  # as a command that met "database disk image is malformed" leaves it
    _break_index(root, "garbage")
    result = cli("prune", "--repair")
    assert result.stderr.count("warning: the cache index") == 1
    assert "busybox:latest" in cli("images", "--format", "{{.Repository}}:{{.Tag}}").stdout


def test_blobs_and_snapshots_of_a_stored_image_deleted(cli, busybox_image: str, tmp_path: Path, root: Path) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    cli("build", "-q", "-t", "mine", str(context))

    def parts() -> tuple[Path, str, str]:
        with Root.open(root) as opened:
            store = ImageStore(opened)
            base = store.get("busybox")
            blob = opened.blobs.path(base.layers[0].digest)
            assert blob is not None
            return blob, store.snapshots_for(base)[0], store.snapshots_for(store.get("mine"))[0]

    # the base layer's snapshot and the built image's top snapshot go: unpacked and built again
    _, base_snapshot, top = parts()
    shutil.rmtree(root / "snapshots" / base_snapshot)
    shutil.rmtree(root / "snapshots" / top)
    cli("build", "-q", "-t", "mine", str(context))
    cli("save", "-o", str(tmp_path / "mine.tar"), "mine", "busybox")

    # both go: the image is named as damaged, never a traceback, every time
    base_blob, base_snapshot, _ = parts()
    base_blob.unlink()
    shutil.rmtree(root / "snapshots" / base_snapshot)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "Dockerfile").write_text("FROM busybox\nRUN echo other > /other\n")
    for _ in range(2):
        failed = cli("build", "-q", str(tmp_path / "other"), check=False)
        assert failed.returncode != 0 and "Traceback" not in failed.stderr
        assert "image busybox:latest is damaged" in failed.stderr, failed.stderr
    repaired = cli("prune", "--repair", check=False)
    assert repaired.returncode == 1
    assert "damaged image busybox:latest" in repaired.stdout, repaired.stdout

    # a built image whose config blob is gone is named too
    with Root.open(root) as opened:
        config = opened.blobs.path(ImageStore(opened).get("mine").id)
    assert config is not None
    config.unlink()
    refused = cli("save", "-o", str(tmp_path / "again.tar"), "mine", check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "image mine:latest is damaged" in refused.stderr, refused.stderr


def test_a_lost_index_without_image_records_gets_the_images_back_from_their_manifests(cli, busybox_image: str, root: Path) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    with Root.open(root) as opened:
        busybox = ImageStore(opened).get("busybox")
    shutil.rmtree(root / "records")  # a root from before image records were kept as files
    _break_index(root, "garbage")
    listed = cli("images", "-q", "--no-trunc")
    assert listed.stderr.count("warning: the cache index") == 1
    assert "registered 1 untagged images again" in listed.stderr and busybox.short_id in listed.stderr
    assert busybox.id in listed.stdout
    cli("tag", busybox.id, "busybox")
    cli("save", "-o", str(root.parent / "busybox.tar"), "busybox")
