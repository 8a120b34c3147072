"""Paths inside a root directory, resolved as if the root were ``/``.

An image's symlinks (``/etc/hosts -> /run/hosts``, or a hostile
``/cache -> /../../../etc``) are followed inside the root and never out of it:
an absolute link restarts at the root, and ``..`` stops there.  Mount points
that do not exist are created as *stubs* and recorded, so they can be removed
from the layer after the step.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

import errno
import os
import stat

if __package__:
    from . import _linux as linux
    from . import _overlay as overlay
else:  # loaded by the zygote as a top-level module
    import _linux as linux
    import _overlay as overlay

MAX_SYMLINKS = 40

# No "..", no absolute link and no /proc magic link can lead out of the root.
_IN_ROOT = linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS
_openat2_works = True


class PathError(Exception):
    """A mount point cannot be resolved or created; the message is for the user."""


def resolve_in_root(root: str, path: str) -> str:
    """The absolute path inside ``root`` that ``path`` names, symlinks followed within it.

    Components that do not exist are kept as they are (``..`` after them is
    applied lexically).
    """
    pending = [p for p in path.split("/") if p][::-1]
    resolved: list[str] = []
    links = 0
    missing = False
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        if missing:
            resolved.append(part)
            continue
        host = _host_path(root, resolved + [part])
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            missing = True
            resolved.append(part)
            continue
        except NotADirectoryError:
            raise PathError(f"{'/' + '/'.join(resolved)} is not a directory") from None
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise PathError(f"too many levels of symbolic links in {path}")
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            pending.extend([p for p in target.split("/") if p][::-1])
            continue
        resolved.append(part)
    return "/" + "/".join(resolved)


def open_in_root(root_fd: int, path: str) -> int:
    """An ``O_PATH`` descriptor of ``path`` resolved inside the directory ``root_fd``.

    Symlinks are followed as a container would see them with ``root_fd`` as
    its ``/``: an absolute link restarts at the root, ``..`` stops there.
    The kernel does it (``openat2`` with ``RESOLVE_IN_ROOT``), so a link
    swapped in while resolving cannot lead out either; kernels without
    ``openat2`` (or a seccomp profile that refuses it) get a walk one
    component at a time that never leaves the root.  Raises ``OSError``.
    """
    global _openat2_works
    if _openat2_works:
        try:
            return linux.openat2(root_fd, path.lstrip("/") or ".", os.O_PATH, _IN_ROOT)
        except OSError as e:
            if e.errno not in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
                raise
            _openat2_works = False
    return _walk_in_root(root_fd, path)


def _walk_in_root(root_fd: int, path: str) -> int:
    """``open_in_root`` without ``openat2``: a stack of directory descriptors, root at the bottom."""
    stack = [os.dup(root_fd)]
    pending = [p for p in path.split("/") if p][::-1]
    links = 0
    try:
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            if not stat.S_ISLNK(os.fstat(fd).st_mode):
                stack.append(fd)
                continue
            try:
                target = os.readlink("", dir_fd=fd)
            finally:
                os.close(fd)
            links += 1
            if links > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            if target.startswith("/"):
                while len(stack) > 1:
                    os.close(stack.pop())
            pending.extend([p for p in target.split("/") if p][::-1])
        return os.dup(stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def attach_in_root(mount_fd: int, root: str, inside: str) -> None:
    """Attach a detached mount at ``inside`` (as ``ensure_mount_point`` returned it).

    The mount point is opened inside ``root`` and the mount attached to that
    descriptor, so no path is looked up again between the check and the use.
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        target_fd = open_in_root(root_fd, inside)
    finally:
        os.close(root_fd)
    try:
        linux.move_mount_onto(mount_fd, target_fd, inside)
    finally:
        os.close(target_fd)


def ensure_mount_point(
    root: str,
    target: str,
    *,
    directory: bool,
    stubs: list[tuple[str, str]],
    parents: dict[str, DirMeta],
) -> str:
    """Resolve ``target`` inside ``root``, creating what is missing; return the inside path.

    Created entries are appended to ``stubs`` as ("dir" | "file", inside path);
    the metadata of an existing directory that receives a stub is recorded in
    ``parents`` (see ``_sandbox.remove_stubs``).
    """
    inside = resolve_in_root(root, target)
    parts = [p for p in inside.split("/") if p]
    current: list[str] = []
    created_here = False
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        host = _host_path(root, current + [part])
        try:
            st = os.lstat(host)
        except FileNotFoundError:
            st = None
        if st is None:
            parent = "/" + "/".join(current)
            if not created_here and parent not in parents:
                parents[parent] = dir_meta(_host_path(root, current))
            inside_path = "/" + "/".join(current + [part])
            try:
                if last and not directory:
                    os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644))
                    stubs.append(("file", inside_path))
                else:
                    os.mkdir(host, 0o755)
                    stubs.append(("dir", inside_path))
            except OSError as e:
                if e.errno == errno.EROFS:
                    raise PathError(f"mount point {target} does not exist in the read-only root filesystem") from None
                raise PathError(f"cannot create mount point {target}: {e.strerror}") from None
            created_here = True
        elif last:
            if directory and not stat.S_ISDIR(st.st_mode):
                raise PathError(f"cannot mount a directory at {target}: it is not a directory in the image")
            if not directory and stat.S_ISDIR(st.st_mode):
                raise PathError(f"cannot mount a file at {target}: it is a directory in the image")
        elif not stat.S_ISDIR(st.st_mode):
            raise PathError(f"cannot mount at {target}: /{'/'.join(current + [part])} is not a directory in the image")
        current.append(part)
    return "/" + "/".join(parts)


def host_path(root: str, inside: str) -> str:
    """The path in the caller's view of an inside path (already resolved)."""
    return _host_path(root, [p for p in inside.split("/") if p])


def _host_path(root: str, parts: list[str]) -> str:
    return root.rstrip("/") + "/" + "/".join(parts) if parts else (root or "/")


# (mode, uid, gid, xattrs) of a directory, as ``remove_stubs`` compares them.
DirMeta = tuple[int, int, int, dict[str, bytes]]


def dir_meta(path: str) -> DirMeta:
    """(mode, uid, gid, xattrs) of a directory, as ``remove_stubs`` compares them."""
    st = os.lstat(path)
    try:
        names = os.listxattr(path, follow_symlinks=False)
        own = overlay.overlay_xattr_prefix()
        xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in names if not n.startswith(own)}
    except OSError:
        xattrs = {}
    return (st.st_mode, st.st_uid, st.st_gid, xattrs)
