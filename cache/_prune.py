"""Disk usage and garbage collection of a pybuild root (``pybuild du`` / ``prune``).

Prune is safe while builds, pulls and loads run.  Its invariant: it removes
nothing that, at the moment it decides, is

- reachable from an image record or a tag (``referenced()``: the image
  store's config, manifest and layer blobs and the snapshots of its layers),
- named by a lease of a live process (a lease names its pid, start time and
  boot, so a crashed build's lease does not pin anything for ever),
- the parent chain of a kept snapshot, or what a surviving record names,
- made after this prune started, or an orphan younger than ``orphan_grace``.

Marking and sweeping happen inside one write transaction of the index: the
lock an image's registration, a step's record and a lease's creation take
too.  So an image registered before prune looks is seen and kept, and one
registered after was made by a process whose lease (taken before it made
the image's blobs and snapshots) was live when prune looked.  A build that
finds a record leases its snapshot first and checks ``exists`` after, so it
either got it before prune looked or sees it gone and builds it again.
Detaching is a rename into the temp area; the slow ``rmtree`` happens after
the transaction, and if prune dies midway the next process removes the rest
with the rest of the dead temp area.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ._index import CacheRecord
from ._root import Root
from ._util import remove_tree, tree_disk_usage

ORPHAN_GRACE = 600.0


@dataclass(frozen=True)
class Usage:
    """Bytes on disk, by kind; ``reclaimable`` is what ``prune(all=True)`` could free."""

    blobs: int
    snapshots: int
    cache_mounts: int
    reclaimable: int

    @property
    def total(self) -> int:
        return self.blobs + self.snapshots + self.cache_mounts


@dataclass(frozen=True)
class PruneResult:
    records: int = 0
    snapshots: int = 0
    blobs: int = 0
    cache_mounts: int = 0
    freed: int = 0  # bytes


def _snapshot_size(root: Root, snapshot_id: str) -> int:
    try:
        return root.snapshots.size(snapshot_id)
    except Exception:  # incomplete: measure what is there
        return tree_disk_usage(root.snapshots.directory / snapshot_id)


def _with_chains(root: Root, snapshot_ids: set[str]) -> set[str]:
    """The snapshots plus all their parents (as far as they exist)."""
    closed: set[str] = set()
    for snapshot_id in snapshot_ids:
        current: str | None = snapshot_id
        while current is not None and current not in closed:
            closed.add(current)
            try:
                current = root.snapshots.parent(current)
            except Exception:
                break
    return closed


def _external(root: Root, referenced: Callable[[], set[str]]) -> set[str]:
    keep = set(referenced())
    keep.update(tag.digest for tag in root.index.tags())
    keep.update(image.digest for image in root.index.images())
    return keep


def _cache_mount_dirs(root: Root) -> list[Path]:
    base = root.path / "cache-mounts"
    try:
        return [base / name for name in sorted(os.listdir(base))]
    except FileNotFoundError:
        return []


def disk_usage(root: Root, *, referenced: Callable[[], set[str]] = set) -> Usage:
    """How much each part of the root takes, and how much prune could free."""
    blob_sizes = dict(root.blobs.list())
    snapshot_sizes = {sid: _snapshot_size(root, sid) for sid in root.snapshots.list()}
    mounts = {p.name: tree_disk_usage(p) + os.lstat(p).st_blocks * 512 for p in _cache_mount_dirs(root)}
    keep = _external(root, referenced) | root.index.leased()
    keep_snapshots = _with_chains(root, {s for s in keep if s in snapshot_sizes})
    reclaimable = (
        sum(size for digest, size in blob_sizes.items() if digest not in keep)
        + sum(size for sid, size in snapshot_sizes.items() if sid not in keep_snapshots)
        + sum(size for name, size in mounts.items() if "cache-mount:" + name not in keep)
    )
    return Usage(sum(blob_sizes.values()), sum(snapshot_sizes.values()), sum(mounts.values()), reclaimable)


def prune(
    root: Root,
    *,
    all: bool = False,
    keep_storage: int | None = None,
    older_than: float | None = None,
    referenced: Callable[[], set[str]] = set,
    orphan_grace: float = ORPHAN_GRACE,
) -> PruneResult:
    """Remove cache records and the snapshots and blobs only they used.

    Which records go: with ``all``, every one not kept; with ``keep_storage``
    (bytes), least recently used ones until the cache fits; with
    ``older_than`` (seconds), those unused that long (combined with the
    others, it limits them to such records).  Records whose snapshot has
    vanished always go.  With ``all``, unused cache mounts go too.
    """
    started = time.time()
    sizes: dict[str, int] = {}
    if keep_storage is not None:  # walks trees: before taking the lock
        sizes = {sid: _snapshot_size(root, sid) for sid in root.snapshots.list()}

    detached: list[Path] = []
    removed_records = removed_blobs = removed_mounts = 0
    removed_snapshots: list[str] = []
    freed = 0

    with root.index._write() as c:
        # the mark: images, tags, leases and records as of this transaction,
        # which no registration, record or lease can change until it ends
        leased = root.index._live_leased(c)
        keep = _external(root, referenced) | leased
        keep_snapshots = _with_chains(root, keep)
        records = root.index.records()
        blob_sizes = dict(root.blobs.list())
        now = time.time()

        def kept(rec: CacheRecord) -> bool:
            return (rec.snapshot_id is not None and rec.snapshot_id in keep_snapshots) or any(
                b.digest in keep for b in rec.blobs.values()
            )

        broken = [
            key
            for key, rec in records
            if rec.snapshot_id is not None
            and not root.snapshots.exists(rec.snapshot_id)
            and not any(b.digest in blob_sizes for b in rec.blobs.values())
        ]
        candidates = [(k, r) for k, r in records if not kept(r) and k not in broken]
        if older_than is not None:
            candidates = [(k, r) for k, r in candidates if r.last_used < now - older_than]
        if all:
            victims = [k for k, _ in candidates]
        elif keep_storage is not None:
            total = sum(blob_sizes.values()) + sum(sizes.values())
            victims = []
            for key, rec in candidates:  # least recently used first
                if total <= keep_storage:
                    break
                victims.append(key)
                total -= sizes.get(rec.snapshot_id or "", 0) + sum(blob_sizes.get(b.digest, 0) for b in rec.blobs.values())
        elif older_than is not None:
            victims = [k for k, _ in candidates]
        else:
            victims = []
        victims += broken
        victim_set = set(victims)
        c.executemany("DELETE FROM cache_records WHERE key = ?", [(k,) for k in victims])
        removed_records = len(victims)

        survivors_snapshots = {r.snapshot_id for k, r in records if k not in victim_set and r.snapshot_id}
        live_snapshots = _with_chains(root, survivors_snapshots | keep_snapshots)
        live_blobs = keep | {digest for (digest,) in c.execute("SELECT digest FROM cache_blobs")}
        victim_snapshots = {r.snapshot_id for k, r in records if k in victim_set and r.snapshot_id}
        victim_blobs = {b.digest for k, r in records if k in victim_set for b in r.blobs.values()}

        for snapshot_id in root.snapshots.list():
            if snapshot_id in live_snapshots:
                continue
            created = root.snapshots.created(snapshot_id)  # None if incomplete
            if created is not None and created >= started:
                continue  # committed while prune ran: its maker has not recorded it yet
            if snapshot_id in victim_snapshots or created is None or now - created > orphan_grace:
                size = _snapshot_size(root, snapshot_id)
                trash = root.snapshots.detach(snapshot_id)
                if trash is not None:
                    detached.append(trash)
                    removed_snapshots.append(snapshot_id)
                    freed += size

        for digest, size in blob_sizes.items():
            if digest in live_blobs:
                continue
            path = root.blobs.path(digest)
            if path is None:
                continue
            try:
                made = os.lstat(path).st_mtime
            except FileNotFoundError:
                continue
            if made >= started:
                continue  # stored while prune ran: its maker has not recorded it yet
            if digest in victim_blobs or now - made > orphan_grace:
                if root.blobs.delete(digest):
                    removed_blobs += 1
                    freed += size

        if all:
            for mount in _cache_mount_dirs(root):
                if "cache-mount:" + mount.name in leased:
                    continue
                size = tree_disk_usage(mount)
                trash = Path(root.tmp_dir("trash-")) / "mount"
                os.rename(mount, trash)
                detached.append(trash)
                removed_mounts += 1
                freed += size

    root.note_freed(detached)
    for path in detached:
        remove_tree(path)
    return PruneResult(removed_records, len(removed_snapshots), removed_blobs, removed_mounts, freed)
