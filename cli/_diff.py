"""``pybuild diff CONTAINER``: what the container changed, as ``docker diff`` lists it.

The container's layer (an overlay upper directory) is compared with the
image's layers below it: ``A`` for a path the image does not have, ``C`` for
one it has (a directory only if its mode, owner or mtime changed -- and
every directory holding a change), ``D`` for a whiteout.  A directory made
opaque hides what the image had in it: its old entries are ``D``.  Paths
are sorted, one ``KIND /path`` line each.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from pybuild.executors import ContainerStore
from pybuild.oci import opaque_xattr

from ._runtime import open_root

ADDED, CHANGED, DELETED = "A", "C", "D"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER", help="name, ID or ID prefix")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    root = open_root(args.root)
    record = ContainerStore(root).get(args.container)
    lowers = [root.snapshots.tree(s) for s in record.snapshots]
    for kind, path in layer_changes(record.upper, lowers):
        sys.stdout.write(f"{kind} {path}\n")
    return 0


def layer_changes(upper: Path, lowers: Sequence[Path]) -> list[tuple[str, str]]:
    """(kind, path) for each change ``upper`` makes over ``lowers`` (top first), sorted by path."""
    kinds: dict[str, str] = {}
    for directory, dirs, files in os.walk(upper):
        dirs.sort()
        for name in sorted(dirs + files):
            host = os.path.join(directory, name)
            path = "/" + os.path.relpath(host, upper)
            st = os.lstat(host)
            if _is_whiteout(st):
                kinds[path] = DELETED
                continue
            below = _lookup(lowers, path)
            if below is None:
                kinds[path] = ADDED
                continue
            opaque = stat.S_ISDIR(st.st_mode) and _is_opaque(host)
            if opaque and stat.S_ISDIR(below.st_mode):
                for child in _children(lowers, path):
                    if not os.path.lexists(os.path.join(host, child)):
                        kinds[f"{path}/{child}"] = DELETED
            if stat.S_ISDIR(st.st_mode) and stat.S_ISDIR(below.st_mode) and not opaque and _same_directory(st, below):
                continue  # copied up only to hold a change below it: listed below if so
            kinds[path] = CHANGED
    for path in list(kinds):
        parent = os.path.dirname(path)
        while parent != "/":
            kinds.setdefault(parent, CHANGED)
            parent = os.path.dirname(parent)
    return sorted(((kind, path) for path, kind in kinds.items()), key=lambda item: item[1])


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, opaque_xattr(), follow_symlinks=False) == b"y"
    except OSError:
        return False


def _same_directory(a: os.stat_result, b: os.stat_result) -> bool:
    # Docker's rule: times equal, or equal seconds when either lost its nanoseconds (tar).
    same_time = a.st_mtime_ns == b.st_mtime_ns or (
        a.st_mtime_ns // 10**9 == b.st_mtime_ns // 10**9 and (a.st_mtime_ns % 10**9 == 0 or b.st_mtime_ns % 10**9 == 0)
    )
    return same_time and (a.st_mode, a.st_uid, a.st_gid) == (b.st_mode, b.st_uid, b.st_gid)


def _lookup(lowers: Sequence[Path], path: str) -> os.stat_result | None:
    """The entry at ``path`` in the merged view of ``lowers`` (top first), or None."""
    parts = [p for p in path.split("/") if p]
    for layer in lowers:
        current = str(layer)
        for depth, part in enumerate(parts):
            current = os.path.join(current, part)
            try:
                st = os.lstat(current)
            except (FileNotFoundError, NotADirectoryError):
                break  # not in this layer: look below, unless a parent here is opaque
            if _is_whiteout(st):
                return None
            if depth == len(parts) - 1:
                return st
            if not stat.S_ISDIR(st.st_mode):
                return None  # a file here hides the path in every layer below
        else:
            continue
        # ``current`` is missing; an opaque directory above it hides the layers below.
        if any(_is_opaque(os.path.join(str(layer), *parts[:d])) for d in range(1, len(parts))):
            return None
    return None


def _children(lowers: Sequence[Path], path: str) -> list[str]:
    """Names in directory ``path`` of the merged view of ``lowers`` (top first)."""
    seen: set[str] = set()
    hidden: set[str] = set()
    parts = [p for p in path.split("/") if p]
    for layer in lowers:
        directory = os.path.join(str(layer), *parts)
        try:
            names = os.listdir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        for name in names:
            if name in seen or name in hidden:
                continue
            if _is_whiteout(os.lstat(os.path.join(directory, name))):
                hidden.add(name)
            else:
                seen.add(name)
        if _is_opaque(directory):
            break
    return sorted(seen)
