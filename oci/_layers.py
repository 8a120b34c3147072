"""Layer tree (overlayfs upper-dir format) → layer tar, deterministically.

A layer tree marks a deleted path with a character device 0/0 of that name
and an opaque directory (lower contents hidden) with the xattr
``trusted.overlay.opaque=y`` (``user.overlay.opaque=y`` when pybuild runs
rootless, in a user namespace, where overlayfs mounts with ``userxattr``:
``overlay_xattr_prefix``).  In the tar, as the OCI image-spec's layer
changeset section says, a deleted ``x`` becomes an empty file ``.wh.x`` and an
opaque ``d`` becomes the directory entry followed by ``d/.wh..wh..opq``.

Determinism: entries come in depth-first order with each directory's names
sorted bytewise (so parents precede children); ids are numeric with empty
user and group names; times are whole seconds and only mtime is written; the
headers come from ``_tar_format.encode_header``.  The same tree gives the
same bytes, and with ``mtime`` (SOURCE_DATE_EPOCH) every time is clamped to
at most that value.

Output goes to ``out.write`` in chunks of about ``CHUNK`` bytes: small
entries are gathered in one buffer, big files stream through.  From the
second chunk on, ``out.write`` is called by a thread of its own (``_Pipe``), in
order: hashing and compressing release the GIL, so they go on beside the walk
of the tree, whose per-file work holds it (the two took turns before: a third
of the diffID of a 400 MB layer of 20,000 files was its sha256).
"""

from __future__ import annotations

import os
import queue
import stat
import threading
from pathlib import Path
from typing import BinaryIO, TypedDict

from pybuild._frozen import frozen
from pybuild.errors import StoreError

from ._tar_format import (
    BLOCKDEV,
    CHARDEV,
    DIRECTORY,
    END_OF_ARCHIVE,
    FIFO,
    HARDLINK,
    REGULAR,
    SYMLINK,
    encode_header,
    padding,
)

CHUNK = 1 << 20
OPAQUE_XATTR = "trusted.overlay.opaque"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
USERNS_OVERLAY_XATTR_PREFIX = "user.overlay."  # overlayfs's ``userxattr`` (rootless)
WHITEOUT_PREFIX = b".wh."
OPAQUE_MARKER = b".wh..wh..opq"

_NS = 1_000_000_000
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # NONBLOCK: never hang on a special file
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_ZEROS = b"\0" * 512


@frozen
class LayerStats:
    """What a layer held: tar entries, file bytes, the tar's length, whiteouts.

    ``whiteouts`` counts deleted paths and opaque directories.  ``diff_id``
    (``sha256:`` of the uncompressed tar) is set by ``apply_layer``.
    """

    entries: int
    content_bytes: int
    tar_bytes: int
    whiteouts: int
    diff_id: str | None = None
    link_target_bytes: int = 0  # symlink targets' lengths (their lstat sizes)

    @property
    def docker_size(self) -> int:
        """Docker's size of a layer a build made: its tar headers' sizes.

        BuildKit in dockerd registers a layer it built through the layer
        store's ChecksumForGraphID (moby builder/builder-next/adapters/snapshot/
        layer.go EnsureLayer; layer/migration.go packSizeCounter), which sums
        the tar headers' sizes: regular files' bytes, hard links once, symlinks
        0.  Unpacked by ``docker load`` the same layer weighs
        ``link_target_bytes`` more: ``unpacked_size``.
        """
        return self.content_bytes

    @property
    def unpacked_size(self) -> int:
        """Docker's size of the layer unpacked (load, pull, import, commit):
        what ``oci._store.unpacked_layer_size`` counts in the tree, found while archiving it."""
        return self.content_bytes + self.link_target_bytes


def is_whiteout(st: os.stat_result) -> bool:
    """True for overlayfs's whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


class _HeaderFields(TypedDict):
    """The header fields every entry of one file shares (``encode_header``'s keywords)."""

    mode: int
    uid: int
    gid: int
    mtime: int
    xattrs: list[tuple[bytes, bytes]] | None


class _Writer:
    """Walks a tree through directory descriptors (each name looked up once,
    relative to its open directory, never through a symlink) and gathers the
    tar's pieces in a list joined once per ``CHUNK``."""

    def __init__(self, out: _Pipe, mtime: int | None) -> None:
        self._out = out
        self._clamp = mtime
        self._root = b""
        self._parts: list[bytes] = []
        self._pending = 0
        self._links: dict[tuple[int, int], bytes] = {}
        self.entries = 0
        self.content_bytes = 0
        self.link_target_bytes = 0
        self.tar_bytes = 0
        self.whiteouts = 0

    def _emit(self, data: bytes) -> None:
        self._parts.append(data)
        self._pending += len(data)
        if self._pending >= CHUNK:
            self._flush()

    def _flush(self) -> None:
        if self._parts:
            data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts.clear()
            self._pending = 0
            self.tar_bytes += len(data)
            self._out.write(data)

    def _mtime(self, st: os.stat_result) -> int:
        seconds = st.st_mtime_ns // _NS
        if self._clamp is not None and seconds > self._clamp:
            return self._clamp
        return seconds

    def run(self, root: bytes) -> None:
        # Iterative depth-first walk: a stack of (prefix, directory fd, sorted names, index).
        self._root = root
        top = os.open(root, _DIR_FLAGS)
        stack = [(b"", top, _sorted_names(top), 0)]
        try:
            while stack:
                prefix, fd, names, index = stack[-1]
                if index == len(names):
                    stack.pop()
                    os.close(fd)
                    continue
                stack[-1] = (prefix, fd, names, index + 1)
                name = prefix + names[index]
                try:
                    below = self._entry(fd, names[index], name)
                    if below is not None:
                        stack.append((name + b"/", below, _sorted_names(below), 0))
                except OSError as error:
                    raise OSError(error.errno, error.strerror, os.path.join(root, name)) from None
        finally:
            for _, fd, _, _ in stack:
                os.close(fd)
        self._emit(END_OF_ARCHIVE)
        self._flush()

    def _entry(self, parent: int, base: bytes, name: bytes) -> int | None:
        """Write one entry; for a directory, its open descriptor (to descend into)."""
        st = os.lstat(base, dir_fd=parent)
        mode = st.st_mode
        if base.startswith(WHITEOUT_PREFIX):
            raise StoreError(
                f"cannot put {os.fsdecode(name)!r} in a layer: names starting with .wh. mean deletions in image layers",
                hint="rename the file; OCI layers cannot hold it",
            )
        if is_whiteout(st):
            parent_name = name.rpartition(b"/")[0]
            wh_name = (parent_name + b"/" if parent_name else b"") + WHITEOUT_PREFIX + base
            self.whiteouts += 1
            self.entries += 1
            self._emit(
                encode_header(wh_name, REGULAR, mode=mode, uid=st.st_uid, gid=st.st_gid, mtime=self._mtime(st))
            )
            return None
        if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
            return self._opened(parent, base, name, st)
        xattrs, _ = _xattrs(os.path.join(self._root, name))  # a link or a node: no descriptor to ask
        common: _HeaderFields = {"mode": mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": self._mtime(st), "xattrs": xattrs}
        self.entries += 1
        if self._linked(name, st, common):
            return None
        if stat.S_ISLNK(mode):
            self.link_target_bytes += st.st_size
            self._emit(encode_header(name, SYMLINK, linkname=os.readlink(base, dir_fd=parent), **common))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            kind = CHARDEV if stat.S_ISCHR(mode) else BLOCKDEV
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._emit(encode_header(name, kind, devmajor=major, devminor=minor, **common))
        elif stat.S_ISFIFO(mode):
            self._emit(encode_header(name, FIFO, **common))
        else:
            self.entries -= 1  # sockets cannot be archived (docker skips them too)
        return None

    def _opened(self, parent: int, base: bytes, name: bytes, st: os.stat_result) -> int | None:
        """A directory or regular file, read through a descriptor of its own."""
        is_dir = stat.S_ISDIR(st.st_mode)
        if not is_dir and st.st_nlink > 1 and (st.st_dev, st.st_ino) in self._links:
            self.entries += 1
            common: _HeaderFields = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": self._mtime(st), "xattrs": None}
            self._linked(name, st, common)
            return None
        fd = os.open(base, _DIR_FLAGS if is_dir else _READ_FLAGS, dir_fd=parent)
        try:
            xattrs, opaque = _xattrs(fd)
            common = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": self._mtime(st), "xattrs": xattrs}
            self.entries += 1
            if is_dir:
                self._emit(encode_header(name, DIRECTORY, **common))
                if opaque:
                    self.whiteouts += 1
                    self.entries += 1
                    self._emit(encode_header(name + b"/" + OPAQUE_MARKER, REGULAR, mode=0, mtime=common["mtime"]))
                return fd
            if st.st_nlink > 1:
                self._links[(st.st_dev, st.st_ino)] = name
            self._regular(fd, name, st.st_size, common)
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        return None

    def _linked(self, name: bytes, st: os.stat_result, common: _HeaderFields) -> bool:
        """A hard link to an entry written before: True once its header is out."""
        if st.st_nlink <= 1:
            return False
        key = (st.st_dev, st.st_ino)
        first = self._links.get(key)
        if first is None:
            self._links[key] = name
            return False
        # The link shares the first entry's inode: its xattrs are already there.
        common["xattrs"] = None
        self._emit(encode_header(name, HARDLINK, linkname=first, **common))
        return True

    def _regular(self, fd: int, name: bytes, size: int, common: _HeaderFields) -> None:
        self._emit(encode_header(name, REGULAR, size=size, **common))
        if size <= CHUNK:
            data = os.read(fd, size) if size else b""
            if len(data) != size:
                raise _changed(name)
            self._emit(data)
        else:
            self._flush()
            left = size
            while left:
                data = os.read(fd, min(left, CHUNK))
                if not data:
                    raise _changed(name)
                self.tar_bytes += len(data)
                self._out.write(data)
                left -= len(data)
        pad = padding(size)
        if pad:
            self._emit(_ZEROS[:pad])
        self.content_bytes += size


def _changed(name: bytes) -> StoreError:
    return StoreError(
        f"{os.fsdecode(name)!r} changed size while it was being archived",
        hint="layer trees must not change while a layer is written",
    )


_IDENTITY_MAP = ["0", "0", "4294967295"]
_XATTR_PREFIX: str | None = None


def overlay_xattr_prefix() -> str:
    """Where overlayfs keeps its own xattrs in this process's layer trees.

    ``trusted.overlay.`` as root; in a user namespace other than the initial one
    (rootless: its uid_map is not the identity) ``trusted.*`` is out of reach and
    the executor mounts overlayfs with ``userxattr``, which reads ``user.overlay.``.
    The executor's ``_overlay.in_user_namespace`` makes the same test.
    """
    global _XATTR_PREFIX
    if _XATTR_PREFIX is None:
        try:
            with open("/proc/self/uid_map") as f:
                identity = f.read().split() == _IDENTITY_MAP
        except OSError:
            identity = True
        _XATTR_PREFIX = OVERLAY_XATTR_PREFIX if identity else USERNS_OVERLAY_XATTR_PREFIX
    return _XATTR_PREFIX


def opaque_xattr() -> str:
    """The xattr (value ``y``) that marks an opaque directory in this process's layer trees."""
    return overlay_xattr_prefix() + "opaque"


def _sorted_names(directory: int) -> list[bytes]:
    """The names in an open directory, sorted bytewise."""
    return sorted(os.fsencode(name) for name in os.listdir(directory))


def layer_xattrs(path: bytes | int) -> tuple[list[tuple[str, bytes]], bool]:
    """The xattrs of ``path`` (or of an open descriptor) a layer carries, and
    whether overlayfs marked the directory opaque.

    overlayfs's own attributes (``trusted.overlay.*``, rootless ``user.overlay.*``)
    describe the upper directory, not the file: they never go into a layer.
    """
    names = os.listxattr(path) if isinstance(path, int) else os.listxattr(path, follow_symlinks=False)
    if not names:
        return [], False
    opaque = False
    out = []
    prefix = overlay_xattr_prefix()
    for key in names:
        if key.startswith(prefix):
            if key == prefix + "opaque":
                opaque = _getxattr(path, key) == b"y"
            continue
        out.append((key, _getxattr(path, key)))
    return out, opaque


def _getxattr(path: bytes | int, key: str) -> bytes:
    return os.getxattr(path, key) if isinstance(path, int) else os.getxattr(path, key, follow_symlinks=False)


def _xattrs(path: bytes | int) -> tuple[list[tuple[bytes, bytes]] | None, bool]:
    """``layer_xattrs`` as a tar header takes them: encoded names, sorted, None for none."""
    xattrs, opaque = layer_xattrs(path)
    if not xattrs:
        return None, opaque
    return sorted((os.fsencode(key), value) for key, value in xattrs), opaque


class _Pipe:
    """``out.write`` of each chunk given, in order: the first one here, the others by a
    thread of its own, at most ``_PIPE_DEPTH`` chunks behind.  ``close`` waits for them
    all and raises what ``out.write`` raised (``write`` does too, once it knows)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(_PIPE_DEPTH)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._writes = 0

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._writes += 1
        if self._writes == 1:  # a small layer is one chunk: no thread for it
            self._out.write(data)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="layer-writer", daemon=True)
            self._thread.start()
        self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(data)
                except BaseException as error:  # noqa: BLE001 - raised again by write/close
                    self._error = error

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error


_PIPE_DEPTH = 8  # chunks waiting for the writer thread (8 MiB)


def write_layer(tree: Path, out: BinaryIO, *, mtime: int | None = None) -> LayerStats:
    """Write the layer tree ``tree`` as a deterministic PAX tar into ``out``.

    ``mtime`` clamps every entry's modification time to at most that many
    seconds since the epoch (SOURCE_DATE_EPOCH, BuildKit's rewrite-timestamp).
    Sockets are skipped.  Raises ``StoreError`` when the tree cannot be read.
    """
    pipe = _Pipe(out)
    writer = _Writer(pipe, mtime)
    try:
        try:
            writer.run(os.fsencode(tree))
        finally:
            pipe.close()  # every chunk written (or the first error) before anything else
    except OSError as e:
        where = os.fsdecode(e.filename) if e.filename else os.fspath(tree)
        raise StoreError(
            f"cannot read layer tree at {where}: {e.strerror}",
            hint="the snapshot is damaged or was changed while being archived",
        ) from None
    return LayerStats(
        entries=writer.entries,
        content_bytes=writer.content_bytes,
        tar_bytes=writer.tar_bytes,
        whiteouts=writer.whiteouts,
        link_target_bytes=writer.link_target_bytes,
    )
