"""Layer trees for the layer tests: every kind of entry a layer can hold, and
a description of a tree that two trees can be compared by.

(Helpers, not fixtures: ``tests/oci/conftest.py`` belongs to the registry tests.)
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

BIG_ID = 3_000_000  # does not fit ustar's 7 octal digits: goes to PAX
FAR_FUTURE = 2**33 + 5  # does not fit 11 octal digits: PAX mtime
CAPABILITY = bytes.fromhex("0100000200200000000000000000000000000000")  # cap_net_bind_service+ep


def _set_time(path: Path, seconds: int) -> None:
    os.utime(path, ns=(seconds * 10**9 + 123, seconds * 10**9 + 456_789), follow_symlinks=False)


def build_rich_tree(root: Path) -> Path:
    """A layer tree (overlay upper-dir format) with every entry kind a layer can hold."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("box\n")
    (root / "empty").write_bytes(b"")
    for size in (1, 511, 512, 513, 2 * 1024 * 1024 + 3):
        (root / f"size-{size}").write_bytes(hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))
        os.truncate(root / f"size-{size}", size)
    suid = root / "usr" / "bin" / "tool"
    suid.parent.mkdir(parents=True)
    suid.write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(suid, 0o4755)
    (root / "usr" / "bin" / "ping").write_bytes(b"ping")
    os.setxattr(root / "usr" / "bin" / "ping", "security.capability", CAPABILITY)
    os.setxattr(root / "etc" / "hostname", "user.comment", b"binary\xff\x00value")
    os.setxattr(root / "etc", "trusted.pybuild", b"dir-xattr")
    links = root / "links"
    links.mkdir()
    (links / "a").write_text("shared\n")
    os.link(links / "a", links / "b")
    os.link(links / "a", root / "etc" / "c-hardlink")
    os.symlink("../etc/hostname", links / "relative")
    os.symlink("/etc/passwd", links / "absolute")
    os.symlink("nowhere/at/all", links / "dangling")
    long_dir = root / ("d" * 120)
    long_dir.mkdir()
    (long_dir / ("f" * 200)).write_text("long name\n")
    os.symlink("t" * 150, root / "long-target")
    (root / os.fsdecode(b"latin1-\xe9")).write_text("not utf-8\n")
    (root / "unicode-\u00e9\u4e2d").write_text("utf-8\n")
    owned = root / "owned"
    owned.write_text("big ids\n")
    os.chown(owned, BIG_ID, BIG_ID + 1)
    os.chown(root / "links" / "relative", 1000, 1000, follow_symlinks=False)
    dev = root / "dev"
    dev.mkdir()
    os.mknod(dev / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(dev / "loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    os.mkfifo(dev / "fifo", 0o640)
    # Whiteouts: a deleted file and a deleted directory, as overlayfs writes them.
    os.mknod(root / "deleted", stat.S_IFCHR, 0)
    os.mknod(root / "etc" / "deleted-dir", stat.S_IFCHR, 0)
    opaque = root / "var" / "cache"
    opaque.mkdir(parents=True)
    os.setxattr(opaque, "trusted.overlay.opaque", b"y")
    (opaque / "new").write_text("only this survives\n")
    os.chmod(root / "var", 0o750)
    for index, path in enumerate(sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True)):
        _set_time(path, 1_600_000_000 + index)
    _set_time(root / "empty", 0)
    _set_time(root / "owned", FAR_FUTURE)
    return root


def describe(root: Path) -> dict[str, Any]:
    """Path → everything a layer preserves (times in whole seconds; hard links as groups)."""
    inodes: dict[tuple[int, int], list[str]] = {}
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            xattrs = {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}
            record: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime": st.st_mtime_ns // 10**9,
                "xattrs": xattrs,
            }
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    record["sha256"] = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                record["target"] = os.readlink(path)
                del record["mode"]  # symlink modes are always 0777 on Linux
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                record["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
            out[rel] = record
    for group in inodes.values():
        for rel in group:
            out[rel]["links"] = tuple(sorted(group))
    return out
