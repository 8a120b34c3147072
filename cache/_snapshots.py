"""Snapshots: committed layer trees, each on top of a parent snapshot.

A snapshot is ``snapshots/<id>/`` holding ``meta.json`` (its parent) and
``tree/``, a directory in overlayfs upper-dir format (whiteouts are 0/0
character devices, opaque directories carry ``trusted.overlay.opaque=y``, or
``user.overlay.opaque=y`` in a rootless pybuild's root: overlayfs in a user
namespace reads only ``user.*`` xattrs).  Trees are moved, never copied, so those markers survive untouched.

An active snapshot is built in the process temp area as ``upper/`` and
``work/`` (an overlay mount needs both on one file system).  Commit writes
``meta.json`` beside ``upper``, renames ``upper`` to ``tree`` and renames the
whole directory to ``snapshots/<id>`` in one step: a snapshot directory
either appears complete or not at all.  A file attached to the active snapshot
(``attach``: what its maker knows about the tree, e.g. the facts of the files
a COPY put there) is moved with it, so it exists only beside its very tree.  Removal renames it into the temp
area first, so a half-deleted tree is never visible under its id.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pybuild._frozen import frozen
from pybuild.errors import StoreError

from ._util import check_name, remove_tree, store_error, tree_disk_usage

_META = "meta.json"
_TREE = "tree"
_SIZE = "size"
_OWN_NAMES = frozenset({_META, _TREE, _SIZE, "upper", "work"})
_MAX_CHAIN = 1000  # a longer parent chain is a cycle or corruption


@frozen
class ActiveSnapshot:
    """A layer being built: write into ``upper``; ``work`` is overlayfs's workdir."""

    upper: Path
    work: Path
    base: Path  # the directory holding both; what commit renames


@runtime_checkable
class Snapshotter(Protocol):
    """Committed layer trees by id.  All methods are thread-safe."""

    def new_active(self) -> ActiveSnapshot:
        """A fresh empty upper dir and an overlay work dir on the same file system."""

    def commit(self, active: ActiveSnapshot, parent: str | None, snapshot_id: str | None = None) -> str:
        """Make ``active.upper`` the tree of a snapshot on ``parent``; returns its id.

        If ``snapshot_id`` already exists (another build committed the same
        thing), ``active`` is discarded and the existing id returned.
        """

    def discard(self, active: ActiveSnapshot) -> None:
        """Throw an active snapshot away."""

    def tree(self, snapshot_id: str) -> Path:
        """The snapshot's tree (StoreError if it is missing or incomplete)."""

    def created(self, snapshot_id: str) -> float | None:
        """When it was committed; None if it is missing or incomplete."""

    def chain(self, snapshot_id: str) -> tuple[str, ...]:
        """This snapshot, its parent, ... down to the base (StoreError if any is missing)."""

    def exists(self, snapshot_id: str) -> bool:
        """Is it complete, with its whole parent chain?"""

    def remove(self, snapshot_id: str) -> bool:
        """Delete it (not its parents); returns whether it was there."""

    def size(self, snapshot_id: str) -> int:
        """Bytes its own tree occupies on disk."""

    def list(self) -> list[str]:
        """Ids of every snapshot directory present (complete or not)."""


def _attachment_name(name: str) -> str:
    check_name("snapshot attachment", name)
    if name in _OWN_NAMES or name.startswith("."):
        raise StoreError(f"invalid snapshot attachment {name!r}: the snapshot uses that name")
    return name


class DirSnapshotter:
    """Snapshots as directories under ``directory``; in-progress and trashed
    trees live in ``staging()``, a directory on the same file system.

    Also the test double for solver tests: point it at a temp directory.
    """

    def __init__(self, directory: Path, staging: Callable[[], Path]) -> None:
        self.directory = Path(directory)
        self._staging = staging
        self.directory.mkdir(parents=True, exist_ok=True)
        # A complete snapshot's metadata never changes: remembered with the identity of its
        # file, so a chain of n layers costs n stats, not n JSON reads, each time it is walked.
        self._metas: dict[str, tuple[tuple[int, int, int], dict[str, object]]] = {}

    def _dir(self, snapshot_id: str) -> Path:
        return self.directory / check_name("snapshot id", snapshot_id)

    def _read_meta(self, snapshot_id: str) -> dict[str, object] | None:
        """Its metadata if the snapshot is complete, else None."""
        d = self._dir(snapshot_id)
        try:
            st = os.stat(d / _META)
            identity = (st.st_dev, st.st_ino, st.st_mtime_ns)
            remembered = self._metas.get(snapshot_id)
            if remembered is not None and remembered[0] == identity:
                meta: object = remembered[1]
            else:
                with open(d / _META, "rb") as f:
                    meta = json.loads(f.read())
            if not os.path.isdir(d / _TREE) or os.path.islink(d / _TREE):
                return None
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict):
            return None
        self._metas[snapshot_id] = (identity, meta)
        return dict(meta)

    # -- making -------------------------------------------------------------

    def new_active(self) -> ActiveSnapshot:
        try:
            base = Path(os.path.join(self._staging(), "active-" + secrets.token_hex(8)))
            os.mkdir(base, 0o700)
            os.mkdir(base / "upper", 0o755)
            os.mkdir(base / "work", 0o700)
        except OSError as error:
            raise store_error("cannot create a snapshot directory", error) from None
        return ActiveSnapshot(base / "upper", base / "work", base)

    def commit(self, active: ActiveSnapshot, parent: str | None, snapshot_id: str | None = None) -> str:
        if parent is not None and not self.exists(parent):
            raise StoreError(
                f"cannot commit on snapshot {parent}: it is missing or incomplete",
                hint="the cache was pruned meanwhile or damaged; build again",
            )
        snapshot_id = check_name("snapshot id", snapshot_id or secrets.token_hex(16))
        base = active.base
        meta = {"parent": parent, "created": time.time()}
        try:
            with open(base / _META, "x") as f:
                json.dump(meta, f)
            os.rename(active.upper, base / _TREE)
            remove_tree(active.work)
        except OSError as error:
            raise store_error(f"cannot commit snapshot {snapshot_id}", error) from None
        target = self._dir(snapshot_id)
        for _ in range(3):
            try:
                os.rename(base, target)
                return snapshot_id
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    remove_tree(base)
                    raise store_error(f"cannot commit snapshot {snapshot_id}", error) from None
            # Someone else committed this id.  Use theirs if it is whole, down
            # to its base; otherwise it is debris (damaged by hand, or its
            # parent was removed): move it away, retry.
            if self.exists(snapshot_id):
                remove_tree(base)
                return snapshot_id
            self._trash(target)
        remove_tree(base)
        raise StoreError(f"cannot commit snapshot {snapshot_id}: its directory keeps changing")

    def discard(self, active: ActiveSnapshot) -> None:
        remove_tree(active.base)

    def attach(self, active: ActiveSnapshot, name: str, data: bytes) -> None:
        """Keep ``data`` as ``name`` beside the tree; commit moves it along, atomically."""
        try:
            with open(active.base / _attachment_name(name), "xb") as f:
                f.write(data)
        except OSError as error:
            raise store_error(f"cannot write {name} of a snapshot", error) from None

    def attachment(self, snapshot_id: str, name: str) -> bytes | None:
        """What was attached as ``name`` to a complete snapshot (None: nothing, or incomplete)."""
        if self._read_meta(snapshot_id) is None:
            return None
        try:
            with open(self._dir(snapshot_id) / _attachment_name(name), "rb") as f:
                return f.read()
        except OSError:
            return None

    # -- reading ------------------------------------------------------------

    def tree(self, snapshot_id: str) -> Path:
        if self._read_meta(snapshot_id) is None:
            raise StoreError(
                f"snapshot {snapshot_id} is missing or incomplete",
                hint="the cache was pruned meanwhile or damaged; build again",
            )
        return self._dir(snapshot_id) / _TREE

    def parent(self, snapshot_id: str) -> str | None:
        meta = self._read_meta(snapshot_id)
        if meta is None:
            raise StoreError(
                f"snapshot {snapshot_id} is missing or incomplete",
                hint="the cache was pruned meanwhile or damaged; build again",
            )
        parent = meta.get("parent")
        return parent if isinstance(parent, str) else None  # written by commit: a str or None

    def created(self, snapshot_id: str) -> float | None:
        """When it was committed; None if it is missing or incomplete."""
        meta = self._read_meta(snapshot_id)
        if meta is None:
            return None
        created = meta.get("created")
        return float(created) if isinstance(created, (int, float)) else 0.0

    def chain(self, snapshot_id: str) -> tuple[str, ...]:
        ids: list[str] = []
        current: str | None = snapshot_id
        while current is not None:
            if len(ids) >= _MAX_CHAIN or current in ids:
                raise StoreError(f"snapshot {snapshot_id} has a broken parent chain")
            ids.append(current)
            current = self.parent(current)
        return tuple(ids)

    def exists(self, snapshot_id: str) -> bool:
        try:
            self.chain(snapshot_id)
        except StoreError:
            return False
        return True

    def size(self, snapshot_id: str) -> int:
        """Computed once (a snapshot never changes) and kept in ``<id>/size``."""
        tree = self.tree(snapshot_id)
        size_file = tree.parent / _SIZE
        try:
            return int(size_file.read_text())
        except (OSError, ValueError):
            pass
        size = tree_disk_usage(tree)
        temp = tree.parent / f".size-{secrets.token_hex(4)}"
        try:
            temp.write_text(str(size))
            os.rename(temp, size_file)
        except OSError:
            remove_tree(temp)  # only a cache of the number; fine to skip
        return size

    def list(self) -> list[str]:
        try:
            names = os.listdir(self.directory)
        except OSError as error:
            raise store_error("cannot list snapshots", error) from None
        return sorted(n for n in names if not n.startswith("."))

    def iter_complete(self) -> Iterator[str]:
        for snapshot_id in self.list():
            if self._read_meta(snapshot_id) is not None:
                yield snapshot_id

    # -- removing -----------------------------------------------------------

    def _trash(self, path: Path) -> Path | None:
        """Atomically move ``path`` into the temp area; returns where it went."""
        trash = Path(os.path.join(self._staging(), "trash-" + secrets.token_hex(8)))
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return None
        except OSError as error:
            raise store_error(f"cannot remove {path}", error) from None
        return trash

    def detach(self, snapshot_id: str) -> Path | None:
        """Make a snapshot vanish at once; returns its new place, to delete later."""
        return self._trash(self._dir(snapshot_id))

    def remove(self, snapshot_id: str) -> bool:
        trash = self.detach(snapshot_id)
        if trash is None:
            return False
        remove_tree(trash)
        return True
