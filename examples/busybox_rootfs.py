#!/usr/bin/env python3
"""Make a busybox root filesystem tarball from Debian's busybox-static (no Docker Hub needed).

    python3 examples/busybox_rootfs.py OUT.tar

The tree has /bin/busybox with a symlink per applet, /etc/passwd and
/etc/group (root, daemon, app 1000:1000 with a supplementary group extra,
nobody), /etc/os-release, /tmp (1777), /home/app and /var/www.  The tests
use the same function for their base image.
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
    if len(argv) != 1:
        print("usage: busybox_rootfs.py OUT.tar", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as work:
        write_tar(make_busybox_rootfs(Path(work) / "rootfs"), Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
