"""Layer tar → layer tree (overlayfs upper-dir format), safely.

``.wh.x`` becomes a character device 0/0 named ``x``; ``d/.wh..wh..opq`` sets
``trusted.overlay.opaque=y`` on ``d`` (``user.overlay.opaque=y`` rootless, in a
user namespace: ``_layers.opaque_xattr``).  Everything else is created as the tar
says: files, directories, hard and symbolic links, devices, fifos, with
mode, numeric owner, mtime and xattrs (except ``*.overlay.*`` xattrs, which
would steer overlayfs).

Nothing in the tar can reach outside ``dest``:

- names are split into components; ``..`` anywhere is refused and a leading
  ``/`` is dropped (an absolute name lands inside ``dest``);
- every parent is opened relative to its own parent with
  ``O_DIRECTORY | O_NOFOLLOW`` starting from a descriptor of ``dest``, and
  every file is created relative to its parent's descriptor with
  ``O_NOFOLLOW | O_EXCL``, so a symlink (from this tar or already in
  ``dest``) is never followed while writing;
- a hard link's target is resolved the same way and must already exist;
- the unpack budget (``_budget``: the decompressed stream and the entries'
  size on disk, by default ``max(1 GiB, 200 × the blob)``) and the entry
  budget stop decompression bombs.

The caller applies into a fresh directory and publishes it (rename) only
after ``apply_layer`` returns: a failure leaves a partial tree that must be
discarded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
from pathlib import Path
from typing import BinaryIO

from pybuild.errors import ImageError

from ._budget import UnpackBudget, remaining_size, unpack_limit
from ._compression import open_decompressed
from ._layers import OPAQUE_MARKER, WHITEOUT_PREFIX, LayerStats, opaque_xattr
from ._tar_format import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, HARDLINK, REGULAR, SYMLINK, TarEntry, TarReader

DEFAULT_SIZE_BUDGET = 256 << 30  # a stream of unknown size (a pipe), unless PYBUILD_UNPACK_LIMIT says otherwise
DEFAULT_ENTRY_BUDGET = 10_000_000
AUTO = -1  # size_budget: the unpack limit for the stream's compressed size

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_IGNORED_XATTRS = (b"trusted.overlay.", b"user.overlay.")


class _Refused(Exception):
    """An entry that must not be applied; becomes an ImageError naming it."""


class _Unmapped(Exception):
    """An entry's owner has no id in this user namespace (rootless); becomes an ImageError."""


def clean_name(name: bytes) -> tuple[bytes, ...]:
    """A tar name as components inside the tree: ``/`` and ``.`` dropped, ``..`` refused."""
    parts = tuple(p for p in name.split(b"/") if p and p != b".")
    if b".." in parts:
        raise _Refused("its name contains '..'")
    return parts


class _Tree:
    """Descriptors of ``dest`` and of the parents of the entry being applied."""

    def __init__(self, dest: Path) -> None:
        self.root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._stack: list[tuple[bytes, int]] = []

    def close(self) -> None:
        self._truncate(0)
        os.close(self.root)

    def _truncate(self, depth: int) -> None:
        while len(self._stack) > depth:
            os.close(self._stack.pop()[1])

    def parent(self, parts: tuple[bytes, ...], *, create: bool = True) -> int:
        """A descriptor of the directory ``parts``, creating missing ones (0755)."""
        stack = self._stack
        common = 0
        limit = min(len(stack), len(parts))
        while common < limit and stack[common][0] == parts[common]:
            common += 1
        self._truncate(common)
        fd = stack[-1][1] if stack else self.root
        for component in parts[common:]:
            fd = _open_dir(fd, component, parts, create=create)
            stack.append((component, fd))
        return fd

    def lookup(self, parts: tuple[bytes, ...]) -> int:
        """A fresh descriptor of directory ``parts`` (caller closes); never creates."""
        fd = os.dup(self.root)
        try:
            for component in parts:
                child = _open_dir(fd, component, parts, create=False)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd


def _open_dir(fd: int, component: bytes, parts: tuple[bytes, ...], *, create: bool) -> int:
    try:
        return os.open(component, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise _Refused(f"{os.fsdecode(b'/'.join(parts))!r} does not exist in the layer") from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _Refused(
                f"its parent {os.fsdecode(component)!r} is a symlink or not a directory"
            ) from None
        raise
    os.mkdir(component, 0o755, dir_fd=fd)
    return os.open(component, _DIR_FLAGS, dir_fd=fd)


def _remove(parent: int, base: bytes, keep_dir: bool) -> bool:
    """Make room for ``base``; True when an existing directory is kept."""
    try:
        st = os.lstat(base, dir_fd=parent)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        if keep_dir:
            return True
        shutil.rmtree(base, dir_fd=parent)
    else:
        os.unlink(base, dir_fd=parent)
    return False


def _set_xattrs(target: int | str | bytes, xattrs: dict[bytes, bytes], follow: bool = True) -> None:
    for key, value in xattrs.items():
        if key.startswith(_IGNORED_XATTRS):
            continue
        os.setxattr(target, key, value, follow_symlinks=follow)


class _Applier:
    def __init__(self, dest: Path, budget: UnpackBudget) -> None:
        self.tree = _Tree(dest)
        self.budget = budget
        self.dir_times: list[tuple[tuple[bytes, ...], int]] = []
        self.content_bytes = 0
        self.whiteouts = 0

    def apply(self, entry: TarEntry, reader: TarReader) -> None:
        self.budget.charge_entry(entry.size)
        parts = clean_name(entry.name)
        if not parts:
            if entry.typeflag == DIRECTORY:  # "./": the tree's own root
                self._dir_metadata(self.tree.root, entry)
                self.dir_times.append(((), entry.mtime_ns))
            return
        base = parts[-1]
        for component in parts[:-1]:
            if component.startswith(WHITEOUT_PREFIX):
                if component.startswith(WHITEOUT_PREFIX * 2):
                    return  # inside aufs metadata (.wh..wh.plnk/): not part of the image
                raise _Refused("a whiteout name is used as a directory")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parts, entry)
            return
        parent = self.tree.parent(parts[:-1])
        kind = entry.typeflag
        kept = _remove(parent, base, keep_dir=kind == DIRECTORY)
        if kind == REGULAR:
            self._regular(parent, base, entry, reader)
        elif kind == DIRECTORY:
            if not kept:
                os.mkdir(base, 0o700, dir_fd=parent)
            fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
            try:
                self._dir_metadata(fd, entry)
            finally:
                os.close(fd)
            self.dir_times.append((parts, entry.mtime_ns))
        elif kind == HARDLINK:
            self._hardlink(parent, base, entry)
        elif kind == SYMLINK:
            os.symlink(entry.linkname, base, dir_fd=parent)
            _chown(entry, base, dir_fd=parent)
            if entry.xattrs:
                _set_xattrs(_proc_path(parent, base), entry.xattrs, follow=False)
            os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)
        elif kind in (CHARDEV, BLOCKDEV, FIFO):
            if kind == FIFO:
                os.mkfifo(base, 0o600, dir_fd=parent)
            else:
                node = stat.S_IFCHR if kind == CHARDEV else stat.S_IFBLK
                os.mknod(base, node | 0o600, os.makedev(entry.devmajor, entry.devminor), dir_fd=parent)
            self._node_metadata(parent, base, entry)

    def _whiteout(self, parts: tuple[bytes, ...], entry: TarEntry) -> None:
        base = parts[-1]
        if base == OPAQUE_MARKER:
            os.setxattr(self.tree.parent(parts[:-1]), opaque_xattr(), b"y")
            self.whiteouts += 1
            return
        if base.startswith(WHITEOUT_PREFIX * 2):
            return  # aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the image
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in (b".", b".."):
            raise _Refused("it whites out '.' or '..'")
        parent = self.tree.parent(parts[:-1])
        _remove(parent, hidden, keep_dir=False)
        os.mknod(hidden, stat.S_IFCHR | 0o600, 0, dir_fd=parent)
        self._node_metadata(parent, hidden, entry)
        self.whiteouts += 1

    def _node_metadata(self, parent: int, base: bytes, entry: TarEntry) -> None:
        # Devices and fifos are never opened (that would block or touch hardware):
        # they are changed by name, relative to their parent, and never are symlinks.
        _chown(entry, base, dir_fd=parent)
        os.chmod(base, entry.mode, dir_fd=parent)
        if entry.xattrs:
            _set_xattrs(_proc_path(parent, base), entry.xattrs, follow=False)
        os.utime(base, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent, follow_symlinks=False)

    def _dir_metadata(self, fd: int, entry: TarEntry) -> None:
        _chown(entry, fd)
        os.fchmod(fd, entry.mode)
        if entry.xattrs:
            _set_xattrs(fd, entry.xattrs)

    def _regular(self, parent: int, base: bytes, entry: TarEntry, reader: TarReader) -> None:
        fd = os.open(base, _CREATE_FLAGS, 0o600, dir_fd=parent)
        try:
            while True:
                chunk = reader.read_data()
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            _chown(entry, fd)
            os.fchmod(fd, entry.mode)
            if entry.xattrs:
                _set_xattrs(fd, entry.xattrs)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
        self.content_bytes += entry.size

    def _hardlink(self, parent: int, base: bytes, entry: TarEntry) -> None:
        target = clean_name(entry.linkname)
        if not target:
            raise _Refused("its hard link target is the tree's root")
        target_parent = self.tree.lookup(target[:-1])
        try:
            os.link(target[-1], base, src_dir_fd=target_parent, dst_dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            raise _Refused(f"its hard link target {os.fsdecode(entry.linkname)!r} is not in the layer") from None
        except PermissionError:
            raise _Refused(f"its hard link target {os.fsdecode(entry.linkname)!r} is a directory") from None
        finally:
            os.close(target_parent)

    def finish(self) -> None:
        # Directory times last: creating children changed them.
        for parts, mtime_ns in self.dir_times:
            if not parts:
                os.utime(self.tree.root, ns=(mtime_ns, mtime_ns))
                continue
            try:
                parent = self.tree.parent(parts[:-1], create=False)
                os.utime(parts[-1], ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
            except (_Refused, FileNotFoundError):
                continue  # replaced by a later entry


def _chown(entry: TarEntry, target: int | bytes, dir_fd: int | None = None) -> None:
    """Give ``target`` (a descriptor, or a name in ``dir_fd``) the entry's numeric owner.

    In a user namespace (rootless) the kernel refuses an id the namespace does
    not map with EINVAL: that is the layer needing more ids than the user has.
    """
    try:
        if isinstance(target, int):
            os.fchown(target, entry.uid, entry.gid)
        else:
            os.chown(target, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise _Unmapped() from None
        raise


UNMAPPED_IDS_HINT = (
    "a rootless build has the user's own id and its subordinate ids (/etc/subuid, /etc/subgid);"
    " give the user a range: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER"
)


def unmapped_ids(uid: int, gid: int) -> str:
    """Which of ``uid`` and ``gid`` this process's user namespace does not map, in words
    ("uid 1000 and gid 1000"); empty when both are mapped.  For the error of a chown the
    kernel refused with EINVAL, wherever a build asks for an owner."""
    ids = (("uid", uid, "uid_map"), ("gid", gid, "gid_map"))
    return " and ".join(f"{kind} {ident}" for kind, ident, table in ids if not _maps(table, ident))


def _maps(table: str, ident: int) -> bool:
    try:
        with open(f"/proc/self/{table}") as f:
            rows = [[int(field) for field in line.split()] for line in f if line.strip()]
    except (OSError, ValueError):
        return False
    return any(inside <= ident < inside + count for inside, _outside, count in rows)


def _proc_path(parent: int, base: bytes) -> bytes:
    # Path syscalls without a dir_fd form (setxattr) reach the entry through the
    # parent's descriptor; the last component is not followed.
    return b"/proc/self/fd/%d/%s" % (parent, base)


def apply_layer(
    stream: BinaryIO,
    dest: Path,
    *,
    size_budget: int | None = AUTO,
    entry_budget: int | None = DEFAULT_ENTRY_BUDGET,
) -> LayerStats:
    """Apply the layer tar in ``stream`` (any compression) to the directory ``dest``.

    ``size_budget`` caps the uncompressed bytes read and the entries' size on
    disk (``AUTO``: the unpack limit for the blob's size, see ``_budget``) and
    ``entry_budget`` the number of entries; None means unlimited.  Returns
    the layer's stats with ``diff_id`` (the digest of the uncompressed tar,
    to check against the image config).  Raises ``ImageError`` naming the
    entry for anything refused, malformed, over budget or failing.
    """
    if size_budget == AUTO:
        size = remaining_size(stream)
        size_budget = unpack_limit(size) if size is not None else (unpack_limit(None) or DEFAULT_SIZE_BUDGET)
    budget = UnpackBudget(size_budget, "the layer")
    raw = _HashingReader(budget.reader(open_decompressed(stream)))
    reader = TarReader(raw, entry_budget=entry_budget)  # type: ignore[arg-type]  # forward only: it calls read()
    applier = _Applier(dest, budget)
    entry: TarEntry | None = None
    try:
        while (entry := reader.next()) is not None:
            applier.apply(entry, reader)
        entry = None
        applier.finish()
        reader.drain()
    except _Unmapped:
        assert entry is not None
        raise ImageError(
            f"cannot apply layer entry {entry.display_name()!r}: its owner"
            f" {unmapped_ids(entry.uid, entry.gid) or f'uid {entry.uid} / gid {entry.gid}'}"
            " is outside the ids this rootless pybuild maps",
            hint=UNMAPPED_IDS_HINT,
        ) from None
    except _Refused as e:
        assert entry is not None
        raise ImageError(
            f"refusing layer entry {entry.display_name()!r}: {e}",
            hint="the layer tries to write outside its directory or is malformed",
        ) from None
    except OSError as e:
        what = f"layer entry {entry.display_name()!r}" if entry is not None else "layer"
        raise ImageError(
            f"cannot apply {what}: {e.strerror}",
            hint=_os_hint(e),
        ) from None
    except (OverflowError, ValueError):
        # ids, times or device numbers the kernel's types cannot hold; a NUL inside a PAX name
        what = f"layer entry {entry.display_name()!r}" if entry is not None else "layer"
        raise ImageError(
            f"cannot apply {what}: its metadata is out of range",
            hint="the layer is malformed or hostile",
        ) from None
    finally:
        applier.tree.close()
    return LayerStats(
        entries=reader.entries,
        content_bytes=applier.content_bytes,
        tar_bytes=reader.position,
        whiteouts=applier.whiteouts,
        diff_id="sha256:" + raw.hash.hexdigest(),
    )


def _os_hint(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    if e.errno == errno.EPERM:
        return "creating devices, setting owners or trusted.* xattrs needs root (CAP_MKNOD, CAP_CHOWN, CAP_SYS_ADMIN)"
    if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
        return "the filesystem under the store does not support this (xattrs?)"
    return "the layer is malformed or the store's filesystem refused it"


class _HashingReader:
    """Passes reads through and hashes what went by (the layer's diffID)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.hash.update(data)
        return data
