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

MAX_SYMLINKS = 40


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


def ensure_mount_point(
    root: str,
    target: str,
    *,
    directory: bool,
    stubs: list[tuple[str, str]],
    parents: dict[str, tuple],
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


def dir_meta(path: str) -> tuple:
    """(mode, uid, gid, xattrs) of a directory, as ``remove_stubs`` compares them."""
    st = os.lstat(path)
    try:
        names = os.listxattr(path, follow_symlinks=False)
        xattrs = {n: os.getxattr(path, n, follow_symlinks=False) for n in names if not n.startswith("trusted.overlay.")}
    except OSError:
        xattrs = {}
    return (st.st_mode, st.st_uid, st.st_gid, xattrs)
