"""Several pybuild processes on one root: builds share work, prune is safe (issue 5)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SHARED_STEP = (
    "FROM busybox\n"
    "RUN --mount=type=cache,target=/count,sharing=shared "
    "sh -c 'echo executing-the-shared-step; sleep 2; echo shared > /shared'\n"
)


def start(root: Path, context: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    return subprocess.Popen(
        [sys.executable, "-m", "pybuild", "build", "--progress=plain", *extra, str(context)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_concurrent_builds_and_prune(busybox_image: str, root: Path, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    same = tmp_path / "same"
    other = tmp_path / "other"
    for directory in (same, other):
        directory.mkdir()
    (same / "Dockerfile").write_text(SHARED_STEP)
    (other / "Dockerfile").write_text("FROM busybox\nRUN echo other > /other && sleep 1\n")

    builds = [start(root, same, "-t", "one"), start(root, same, "-t", "two"), start(root, other, "-t", "three")]
    pruner = subprocess.run(
        [sys.executable, "-c",
         "import time; from pybuild.cache import Root, prune; from pybuild.oci import ImageStore\n"
         "root = Root.open(); store = ImageStore(root)\n"
         "for _ in range(10):\n"
         "    prune(root, all=True, referenced=store.referenced, orphan_grace=0); time.sleep(0.3)\n"],
        env={**os.environ, "PYBUILD_ROOT": str(root)}, capture_output=True, text=True, timeout=120,
    )
    outputs = [b.communicate(timeout=300) for b in builds]
    for build, (out, err) in zip(builds, outputs):
        assert build.returncode == 0, err
    assert pruner.returncode == 0, pruner.stderr

    output_line = re.compile(r"^#\d+ \d+\.\d+ executing-the-shared-step$", re.M)
    ran = [err for _, err in outputs[:2] if output_line.search(err)]
    assert len(ran) == 1  # the shared step ran in one process; the other took its result
    assert "CACHED" in next(err for _, err in outputs[:2] if not output_line.search(err))
    assert open_image("one").read("/shared") == "shared\n"
    assert open_image("two").read("/shared") == "shared\n"
    assert open_image("three").read("/other") == "other\n"
    assert open_image("one").image.id == open_image("two").image.id
