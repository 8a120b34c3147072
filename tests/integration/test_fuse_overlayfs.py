"""Layers mounted through fuse-overlayfs give the kernel overlay's layers and image ID.

Rootless pybuild falls back to fuse-overlayfs where the kernel refuses overlayfs in a user
namespace; ``PYBUILD_OVERLAY_DRIVER=fuse-overlayfs`` forces it, which lets this machine (whose
kernel accepts it) build the same Dockerfile both ways.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .._peers import require_tool
from .conftest import pybuild

DOCKERFILE = """FROM busybox
RUN mkdir -p /d/sub /gone && echo a > /d/sub/f && echo b > /d/g && echo c > /gone/x
RUN rm /d/g && rm -rf /d/sub /gone && mkdir /d/sub && echo new > /d/sub/n
COPY file.txt /d/sub/copied
"""
REPRODUCIBLE = ["build", "--progress=plain", "--network=none", "--output", "type=image,rewrite-timestamp=true"]


@pytest.mark.usefixtures("busybox_image")
def test_fuse_overlayfs_builds_the_kernel_overlays_image(root: Path, tmp_path: Path) -> None:
    """BuildKit's rootless mode uses the fuse-overlayfs snapshotter where the kernel cannot mount
    overlayfs unprivileged (moby/buildkit docs/rootless.md, "Known limitations"); its layers are
    the same OCI changesets.  The reason is shown once in ``--progress=plain``."""
    require_tool("fuse-overlayfs")
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(DOCKERFILE)
    (tmp_path / "ctx" / "file.txt").write_text("copied\n")
    env = {"SOURCE_DATE_EPOCH": "1700000000"}
    kernel = pybuild(*REPRODUCIBLE, "-t", "kernel:1", str(tmp_path / "ctx"), root=root, env=env)
    assert "fuse-overlayfs" not in kernel.stderr
    fuse = pybuild(*REPRODUCIBLE, "--no-cache", "-t", "fuse:1", str(tmp_path / "ctx"), root=root,
                   env={**env, "PYBUILD_OVERLAY_DRIVER": "fuse-overlayfs"})  # fmt: skip
    assert fuse.stderr.count("layers mounted through fuse-overlayfs") == 1, fuse.stderr
    assert image_id(kernel.stderr) == image_id(fuse.stderr)
    # Every fuse-overlayfs daemon leaves with its step's mount (it may take a moment to exit).
    for _ in range(200):
        left = [cmd for cmd in _command_lines() if "fuse-overlayfs" in cmd and str(root) in cmd]
        if not left:
            break
        time.sleep(0.05)
    assert left == []


def _command_lines() -> list[str]:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue
    return lines


def image_id(progress: str) -> str:
    (line,) = [line for line in progress.splitlines() if "writing image sha256:" in line]
    return line.rsplit(" ", 1)[-1]
