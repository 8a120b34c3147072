"""Fixtures shared by every test package.

Base images here are made from what Debian ships (no Docker Hub): a busybox
root filesystem from ``busybox-static``.
"""

from __future__ import annotations

import importlib.util
import os
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance"


def _load_example_rootfs():  # type: ignore[no-untyped-def]
    """The same busybox rootfs maker the examples use (examples/busybox_rootfs.py)."""
    spec = importlib.util.spec_from_file_location("busybox_rootfs", REPO / "examples" / "busybox_rootfs.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_rootfs = _load_example_rootfs()
make_busybox_rootfs = _rootfs.make_busybox_rootfs
PASSWD, GROUP = _rootfs.PASSWD, _rootfs.GROUP


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem directory (session-wide; do not modify)."""
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def busybox_tar(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The busybox root filesystem as an uncompressed tar (like `docker export`)."""
    out = tmp_path_factory.mktemp("busybox-tar") / "busybox.tar"
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(busybox_rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    return out


@pytest.fixture
def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (namespaces, overlayfs)")
