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

Durability.  A build's step used to sync the file system before its snapshot
was committed, so a power loss never left a committed tree whose files were
lost; that sync is most of what a step writing 400 MB waits for.  With
``defer_durability`` a process commits without it: each commit's ``meta.json``
names the boot it was made in (``unsynced``), and ``settle`` -- one ``syncfs``
at the end of the build, after its answer -- writes everything out and then
drops the mark.  A marked snapshot is trusted only in the boot that made it:
in that boot its files are in the page cache, which a crash of pybuild does not
lose; after a reboot an unsettled one counts as incomplete (a cache miss that
rebuilds it), since its files may not have reached the disk.  A meta rewrite
lost in a power loss only leaves the mark, which errs the same safe way.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from pybuild._frozen import frozen
from pybuild.errors import StoreError

from ._util import check_name, remove_tree, store_error, syncfs, tree_disk_usage

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

    def defer_durability(self) -> bool:
        """From now on, commit without waiting for the disk: each new snapshot is trusted
        only in this boot until ``settle``.  False (nothing changes) if the boot cannot be told."""

    def durability_deferred(self) -> bool:
        """Whether ``defer_durability`` is in force: a maker of a snapshot need not sync it."""

    def settle(self) -> str | None:
        """Write the snapshots this process committed since ``defer_durability`` to disk and
        trust them in any boot; on a write error remove them instead and say why (else None).
        The deferral ends here: later commits are synced by their makers again."""


_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_UNSYNCED = "unsynced"  # meta.json: the boot a snapshot was committed in, until it is settled
_boot: list[str | None] = []


def boot_id() -> str | None:
    """This boot's id (the kernel's random one), None if it cannot be read."""
    if not _boot:
        try:
            with open(_BOOT_ID, "rb") as f:
                text = f.read().decode("ascii").strip()
        except (OSError, ValueError):
            text = ""
        _boot.append(text or None)
    return _boot[0]


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
        # A complete snapshot's metadata changes only when it is settled (a new file): remembered
        # with the identity of its file, so a chain of n layers costs n stats, not n JSON reads.
        self._metas: dict[str, tuple[tuple[int, int, int], dict[str, object]]] = {}
        self._deferred_boot: str | None = None  # defer_durability: the mark new commits carry
        self._sync_fd = -1  # opened by defer_durability: settle's syncfs hears of write errors since
        self._unsettled: list[str] = []
        self._unsettled_lock = threading.Lock()

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
        unsynced = meta.get(_UNSYNCED)
        if unsynced is not None and unsynced != boot_id():
            return None  # committed unsynced in another boot and never settled: its files may be lost
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
        meta: dict[str, object] = {"parent": parent, "created": time.time()}
        deferred = self._deferred_boot
        if deferred is not None:
            meta[_UNSYNCED] = deferred
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
                if deferred is not None:
                    with self._unsettled_lock:
                        self._unsettled.append(snapshot_id)
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

    # -- durability ---------------------------------------------------------

    def defer_durability(self) -> bool:
        boot = boot_id()
        if boot is None:
            return False
        with self._unsettled_lock:
            if self._sync_fd < 0:
                try:
                    self._sync_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                except OSError:
                    return False
                self._deferred_boot = boot
        return True

    def durability_deferred(self) -> bool:
        return self._deferred_boot is not None

    def settle(self) -> str | None:
        with self._unsettled_lock:
            settling, self._unsettled = self._unsettled, []
            sync_fd, self._sync_fd, self._deferred_boot = self._sync_fd, -1, None
        if sync_fd < 0:
            return None
        try:
            if settling:
                syncfs(sync_fd)
        except OSError as error:
            for snapshot_id in settling:  # never trusted with files the disk may not have
                try:
                    self.remove(snapshot_id)
                except StoreError:
                    pass
            return f"cannot write the build's new layers to disk ({error.strerror or error}): they were removed"
        finally:
            os.close(sync_fd)
        for snapshot_id in settling:
            self._drop_mark(snapshot_id)
        return None

    def _drop_mark(self, snapshot_id: str) -> None:
        """Its meta.json again, without the mark (a new file renamed over it): losing this
        to a power loss only leaves the mark, trusted in this boot alone."""
        d = self._dir(snapshot_id)
        try:
            with open(d / _META, "rb") as f:
                meta = json.loads(f.read())
            if not isinstance(meta, dict) or meta.pop(_UNSYNCED, None) is None:
                return
            temp = d / f".meta-{secrets.token_hex(4)}"
            with open(temp, "x") as f:
                json.dump(meta, f)
            os.rename(temp, d / _META)
        except (OSError, ValueError):
            pass  # removed meanwhile (a prune), or never complete: nothing to settle

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
