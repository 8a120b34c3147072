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
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BINFMT_MISC = Path("/proc/sys/fs/binfmt_misc")

# Builds run in their own process, as before the fork server (cli/server): a test's build
# neither starts a server nor is served by one, and no server outlives the session.  The
# server's own tests (tests/cli/test_server*.py) turn it on for the builds they run.
os.environ["PYBUILD_SERVER"] = "off"


def _load_example_rootfs():  # type: ignore[no-untyped-def]
    """The same busybox rootfs maker the examples use (examples/busybox_rootfs.py)."""
    spec = importlib.util.spec_from_file_location("busybox_rootfs", REPO / "examples" / "busybox_rootfs.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


_rootfs = _load_example_rootfs()
make_busybox_rootfs = _rootfs.make_busybox_rootfs
write_rootfs_tar = _rootfs.write_tar
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


@pytest.fixture(scope="session")
def arm64_busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem for arm64, from Debian's busybox-static:arm64 (.ci/setup
    downloads it into build/debs), as an uncompressed tar: import it with
    ``pybuild import --platform linux/arm64``.  Its absence fails under PYBUILD_TEST_STRICT."""
    from ._peers import STRICT_VARIABLE, strict

    if not _rootfs.foreign_busybox("arm64").is_file():
        reason = "no arm64 busybox in build/debs: .ci/setup downloads Debian's busybox-static:arm64 (needs its arm64 index)"
        if strict():
            pytest.fail(f"{reason} ({STRICT_VARIABLE} is set)", pytrace=False)
        pytest.skip(reason)
    rootfs = make_busybox_rootfs(tmp_path_factory.mktemp("busybox-arm64") / "rootfs", "arm64")
    return write_rootfs_tar(rootfs, rootfs.parent / "busybox-arm64.tar")


@pytest.fixture(scope="session")
def qemu_handlers() -> Iterator[None]:
    """linux/arm64 binaries run here: QEMU's aarch64 handler registered with binfmt_misc (F flag)
    for the tests that need emulation.  What this session registered (and the binfmt_misc mount,
    if it made it) is removed at its end: benchmarks must find the machine as it was."""
    from pybuild.executors import emulation_status, install_handlers, uninstall_handlers

    from ._peers import peer_unavailable

    if emulation_status("linux/arm64").runnable:
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("needs root (registers binfmt_misc handlers)")
    if shutil.which("qemu-aarch64-static") is None:
        peer_unavailable("qemu-aarch64-static is not installed", "qemu-user-static")
    was_mounted = (BINFMT_MISC / "register").exists()
    registered = install_handlers(["linux/arm64"])
    try:
        status = emulation_status("linux/arm64")
        if not status.runnable:
            pytest.fail(f"linux/arm64 does not run after registering QEMU's handler: {status.reason}", pytrace=False)
        yield
    finally:
        if registered:
            uninstall_handlers(registered)
        if not was_mounted and not [p for p in BINFMT_MISC.iterdir() if p.name not in ("register", "status")]:
            subprocess.run(["umount", str(BINFMT_MISC)], check=False, capture_output=True)


@pytest.fixture(scope="session")
def unrunnable_platform() -> str:
    """A platform this machine can run neither natively nor through an emulator."""
    from pybuild.executors import runnable_platforms

    for status in runnable_platforms():
        if not status.runnable and status.platform != "linux/arm64":  # arm64 may be registered meanwhile
            return status.platform
    pytest.skip("every platform pybuild knows runs on this machine (all QEMU handlers registered)")


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
