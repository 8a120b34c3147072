"""Damaged cache data is noticed and rebuilt, never trusted (issue 5)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

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
