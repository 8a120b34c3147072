"""A chain of layer trees → the one merged filesystem (``type=local`` export,
squashing deep chains).

Works top layer first, so a file overwritten higher up is never copied:

- the first (highest) layer to have a path decides it; directories present
  in several layers merge, keeping the highest one's metadata;
- a whiteout (char device 0/0), or any non-directory, at ``p`` hides ``p``
  in every lower layer; an opaque directory hides everything below it in
  lower layers;
- whiteouts and overlayfs's own xattrs (``trusted.overlay.*``, rootless
  ``user.overlay.*``) are not copied: the result is a plain tree.

Files are copied with ``copy_file_range`` (in-kernel; a reflink where the
filesystem can; an ordinary copy where it refuses), or hard-linked to the
source when ``hardlink_files`` is set (for a result that, like the sources,
is never modified).  Hard links inside the chain stay hard links.  Nothing
is read from outside the given trees and nothing written outside ``dest``:
symlinks are copied as links, never followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pybuild.errors import StoreError

from ._copy_range import copy_range
from ._layers import is_whiteout, layer_xattrs

_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FlattenStats:
    """What the merged tree holds: entries created and file bytes copied or linked."""

    entries: int
    content_bytes: int


class _Flattener:
    def __init__(self, dest: bytes, hardlink_files: bool) -> None:
        self.dest = dest
        self.hardlink_files = hardlink_files
        self.merged: dict[bytes, bool] = {}  # path in dest -> is a directory
        self.hidden: set[bytes] = set()  # deleted or shadowed for lower layers
        self.sealed: set[bytes] = set()  # opaque: lower layers add nothing below
        self.links: dict[tuple[int, int], bytes] = {}
        self.dirs: list[tuple[bytes, os.stat_result, list[tuple[str, bytes]]]] = []
        self.entries = 0
        self.content_bytes = 0

    def layer(self, root: bytes) -> None:
        stack = [(b"", root)]
        while stack:
            prefix, directory = stack.pop()
            with os.scandir(directory) as it:
                children = list(it)
            for entry in children:
                rel = prefix + entry.name
                if rel in self.hidden:
                    continue
                if self._entry(entry.path, rel):
                    stack.append((rel + b"/", entry.path))

    def _entry(self, src: bytes, rel: bytes) -> bool:
        """Merge one entry; True to descend into it (a directory)."""
        st = os.lstat(src)
        is_dir = stat.S_ISDIR(st.st_mode)
        existing = self.merged.get(rel)
        if existing is not None:
            if not existing:
                return False  # a higher layer's non-directory wins and already hides it
            if not is_dir:
                self.hidden.add(rel)  # shadowed here by a file: lower layers are hidden
                return False
            if rel in self.sealed:
                return False
            if layer_xattrs(src)[1]:
                self.sealed.add(rel)
            return True
        if is_whiteout(st):
            self.hidden.add(rel)
            return False
        dst = self.dest + b"/" + rel
        self.merged[rel] = is_dir
        xattrs, opaque = layer_xattrs(src)
        mode = st.st_mode
        if is_dir:
            os.mkdir(dst, 0o700)
            self.dirs.append((dst, st, xattrs))
            if opaque:
                self.sealed.add(rel)
            self.entries += 1
            return True
        self.entries += 1
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in self.links:
            os.link(self.links[key], dst, follow_symlinks=False)
            return False
        if stat.S_ISREG(mode):
            self._regular(src, dst, st, xattrs)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), dst)
            self._metadata(dst, st, xattrs, chmod=False)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(dst, stat.S_IFMT(mode) | 0o600, st.st_rdev)
            self._metadata(dst, st, xattrs)
        else:
            self.entries -= 1  # sockets are not copied
            del self.merged[rel]
            return False
        if st.st_nlink > 1:
            self.links[key] = dst
        return False

    def _regular(self, src: bytes, dst: bytes, st: os.stat_result, xattrs: list[tuple[str, bytes]]) -> None:
        self.content_bytes += st.st_size
        if self.hardlink_files:
            os.link(src, dst, follow_symlinks=False)
            return
        sfd = os.open(src, _READ)
        try:
            dfd = os.open(dst, _CREATE, 0o600)
            try:
                copy_range(sfd, dfd, st.st_size)
                os.fchown(dfd, st.st_uid, st.st_gid)
                os.fchmod(dfd, stat.S_IMODE(st.st_mode))
                for key, value in xattrs:
                    os.setxattr(dfd, key, value)
                os.utime(dfd, ns=(st.st_atime_ns, st.st_mtime_ns))
            finally:
                os.close(dfd)
        finally:
            os.close(sfd)

    def _metadata(self, dst: bytes, st: os.stat_result, xattrs: list[tuple[str, bytes]], chmod: bool = True) -> None:
        os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
        if chmod:
            os.chmod(dst, stat.S_IMODE(st.st_mode))  # a device or fifo we just made: never a symlink
        for key, value in xattrs:
            os.setxattr(dst, key, value, follow_symlinks=False)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)

    def finish(self) -> None:
        # Children first (deepest paths last in the list), so setting a
        # directory's time is not undone by work inside it.
        for dst, st, xattrs in reversed(self.dirs):
            os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
            os.chmod(dst, stat.S_IMODE(st.st_mode))
            for key, value in xattrs:
                os.setxattr(dst, key, value, follow_symlinks=False)
            os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def flatten_into(trees_top_first: Sequence[Path], dest: Path, *, hardlink_files: bool = False) -> FlattenStats:
    """Write the merged filesystem of a chain of layer trees into ``dest``.

    ``trees_top_first[0]`` is the highest layer.  ``dest`` must be missing or
    an empty directory.  Raises ``StoreError`` naming the path that failed.
    """
    try:
        dest.mkdir(exist_ok=True)
        if any(os.scandir(dest)):
            raise StoreError(f"cannot flatten into {dest}: it is not empty", hint="use a new or empty directory")
        flattener = _Flattener(os.fsencode(dest.resolve()), hardlink_files)
        for tree in trees_top_first:
            flattener.layer(os.fsencode(tree))
        flattener.finish()
    except OSError as e:
        where = os.fsdecode(e.filename) if e.filename else os.fspath(dest)
        raise StoreError(f"cannot flatten layers: {where}: {e.strerror}", hint="a snapshot is damaged or the disk is full") from None
    return FlattenStats(entries=flattener.entries, content_bytes=flattener.content_bytes)
