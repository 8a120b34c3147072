"""``pybuild build --pull``: base images come from the registry even when the store has them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .conftest import pybuild, read_image_file

pytestmark = pytest.mark.peers


def test_pull_brings_a_moved_tag_and_the_miss_says_why(docker_registry, busybox_tar: Path, tmp_path: Path, require_root: None) -> None:  # noqa: F811
    base = f"{docker_registry.host}/pull-{uuid.uuid4().hex[:8]}/base:1"
    publisher, builder = tmp_path / "publisher", tmp_path / "builder"
    pybuild("import", str(busybox_tar), base, root=publisher)
    pybuild("push", base, root=publisher)

    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nRUN cat /version 2>/dev/null || echo none > /seen; cp /version /seen 2>/dev/null; true\n")
    pybuild("build", "-t", "app:1", str(context), root=builder)  # pulls the missing base

    # the publisher moves the tag to a new image
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "Dockerfile").write_text(f"FROM {base}\nRUN echo 2 > /version\n")
    pybuild("build", "-t", base, str(tmp_path / "v2"), root=publisher)
    pybuild("push", base, root=publisher)

    stale = pybuild("build", "--progress=plain", "-t", "app:1", str(context), root=builder)
    assert "CACHED" in stale.stderr and "pulling" not in stale.stderr  # the local base is used as is

    fresh = pybuild("build", "--progress=plain", "--pull", "-t", "app:1", str(context), root=builder)
    assert f"pulling {base}" in fresh.stderr
    assert "cache miss: base image digest changed" in fresh.stderr
    assert read_image_file(builder, "app:1", "/seen") == "2\n"
