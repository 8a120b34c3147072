"""Fixtures shared by every test package.

Base images here are made from what Debian ships (no Docker Hub): a busybox
root filesystem from ``busybox-static``.  Peer tools, the docker daemon and the
../shared conformance files are found through ``_peers.py``: a test marked
``@pytest.mark.tool("skopeo", ...)`` fails under CI (``PYBUILD_TEST_STRICT``)
and is skipped elsewhere when one is missing.
"""

from __future__ import annotations

import importlib.util
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tool(*names): needs these peer tools (a failure under PYBUILD_TEST_STRICT)")


# _peers is imported where it is used: tests/dag/golden/generate.py and benchmarks/ load this
# file by path, as a top-level module, for make_busybox_rootfs alone.


def pytest_runtest_setup(item: pytest.Item) -> None:
    from ._peers import require_tool

    for mark in item.iter_markers("tool"):
        for name in mark.args:
            require_tool(name)


@pytest.fixture(scope="session")
def docker_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment for Debian's docker CLI: the running daemon, or one started for the session."""
    from ._peers import docker_daemon

    with docker_daemon(tmp_path_factory.mktemp("dockerd")) as env:
        yield env
