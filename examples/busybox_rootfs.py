#!/usr/bin/env python3
"""Make a busybox root filesystem tarball from Debian's busybox-static (no Docker Hub needed).

    python3 examples/busybox_rootfs.py [--arch arm64] OUT.tar

The tree has /bin/busybox with a symlink per applet, /etc/passwd and
/etc/group (root, daemon, app 1000:1000 with a supplementary group extra,
nobody), /etc/os-release, /tmp (1777), /home/app and /var/www.  The tests
use the same function for their base image.

With ``--arch arm64`` the busybox is Debian's busybox-static:arm64, which .ci/setup downloads
and unpacks into build/debs/busybox-static-arm64 (import the tar with
``pybuild import --platform linux/arm64``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
DEBS = Path(__file__).resolve().parent.parent / "build" / "debs"


def foreign_busybox(arch: str) -> Path:
    """The busybox of Debian's busybox-static:ARCH, as .ci/setup unpacks it."""
    return DEBS / f"busybox-static-{arch}" / "bin" / "busybox"


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


def make_busybox_rootfs(dest: Path, arch: str | None = None) -> Path:
    """Write a minimal busybox root filesystem into ``dest`` and return it: the host's busybox,
    or with ``arch`` (``arm64``) that architecture's from build/debs."""
    binary = foreign_busybox(arch) if arch else Path(BUSYBOX)
    if not binary.is_file():
        raise FileNotFoundError(f"no {arch} busybox at {binary}: run .ci/setup")
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home/app", "tmp", "var/www", "dev", "proc", "sys"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    shutil.copy2(binary, dest / "bin" / "busybox")
    # The applet list from the host's busybox: a foreign one may not run here, and both come
    # from the same Debian source package, with the same applets.
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        link = dest / applet
        if applet == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(dest / "bin" / "busybox", link.parent))
    (dest / "etc" / "passwd").write_text(PASSWD)
    (dest / "etc" / "group").write_text(GROUP)
    (dest / "etc" / "os-release").write_text('NAME="pybuild busybox"\nID=busybox\nPRETTY_NAME="busybox (pybuild example base)"\n')
    if os.geteuid() == 0:
        os.chown(dest / "home" / "app", 1000, 1000)
    return dest


def write_tar(rootfs: Path, out: Path) -> Path:
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    return out


def main(argv: list[str]) -> int:
    arch = None
    if len(argv) == 3 and argv[0] == "--arch":
        arch, argv = argv[1], argv[2:]
    if len(argv) != 1:
        print("usage: busybox_rootfs.py [--arch ARCH] OUT.tar", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        try:
            rootfs = make_busybox_rootfs(Path(work) / "rootfs", arch)
        except FileNotFoundError as error:
            print(f"busybox_rootfs.py: {error}", file=sys.stderr)
            return 1
        write_tar(rootfs, Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
