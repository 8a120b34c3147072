"""Fixtures shared by every test package.

Base images here are made from what Debian ships (no Docker Hub): a busybox
root filesystem from ``busybox-static``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
CONFORMANCE = SHARED / "conformance"

BUSYBOX = shutil.which("busybox") or "/bin/busybox"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
app:x:1000:1000:app user:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """\
root:x:0:
daemon:x:1:
app:x:1000:
extra:x:2000:app
nogroup:x:65534:
"""


def make_busybox_rootfs(dest: Path) -> Path:
    """Write a minimal busybox root filesystem into ``dest`` and return it."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home/app", "tmp", "var/www", "dev", "proc", "sys"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, dest / "bin" / "busybox")
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = dest / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(dest / "bin" / "busybox", link.parent)
        link.symlink_to(target)
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "os-release").write_text('NAME="pybuild busybox"\nID=busybox\n')
    if os.geteuid() == 0:
        os.chown(dest / "home" / "app", 1000, 1000)
    return dest


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
