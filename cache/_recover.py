"""Opening a root's index, and recovering from a lost, emptied or damaged one.

SQLite takes a missing or 0-byte file for a new, empty database, so a root
whose ``index.db`` vanished would silently forget its images; and a file of
garbage fails every command.  ``open_index`` notices both before trusting
the file:

- ``index.db`` missing or empty while the root holds blobs, snapshots or
  image records;
- SQLite says it is not a database, or is malformed -- at open, or in an
  earlier command, which left ``index.db.damaged`` (then ``PRAGMA
  quick_check`` decides).

Recovery (under ``index.lock``, so concurrent processes do it once) moves
the file and its WAL aside as ``index.db.broken-TIMESTAMP``, starts a fresh
index and restores image records and tags from their journal files
(``_journal``).  Cache records are not restored: steps run again and find
their snapshots, which are named by cache key, still there.  One warning
line says what happened.  Rows a truncated WAL lost are restored from the
journal on every open too (``CacheIndex.reconcile_journal``).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ._index import CacheIndex, IndexDamaged
from ._journal import ImageJournal
from ._util import store_error

INDEX = "index.db"


def _nonempty_dir(path: Path) -> bool:
    try:
        with os.scandir(path) as entries:
            return any(not e.name.startswith(".") for e in entries)
    except OSError:
        return False


def _holds_data(root: Path, journal: ImageJournal) -> bool:
    return any(journal.counts()) or _nonempty_dir(root / "blobs" / "sha256") or _nonempty_dir(root / "snapshots")


def _lost(db: Path, root: Path, journal: ImageJournal) -> str | None:
    """Why the index file cannot be the root's index without looking inside it; None if it may be."""
    try:
        size = os.stat(db).st_size
    except FileNotFoundError:
        size = None
    if size:
        return None
    if not _holds_data(root, journal):
        return None  # a new root (or one being created by another process)
    return "missing" if size is None else "empty (0 bytes)"


@contextmanager
def _recovery_lock(root: Path) -> Iterator[None]:
    fd = os.open(root / "index.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _damage(index: CacheIndex) -> str | None:
    """What is wrong with an index an earlier command found damaged (None: nothing now)."""
    if not index.damage_marker.exists():
        return None
    problem = index.quick_check()
    if problem is None:
        index.damage_marker.unlink(missing_ok=True)  # a passing fault, or repaired meanwhile
    return problem


def _try_open(db: Path, journal: ImageJournal) -> tuple[CacheIndex | None, str | None]:
    try:
        index = CacheIndex(db, journal)
    except IndexDamaged as error:
        return None, f"damaged ({str(error).rsplit(': ', 1)[-1]})"
    problem = _damage(index)
    if problem is not None:
        index.close()
        return None, f"damaged ({problem})"
    return index, None


def _move_aside(db: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = db.with_name(f"{db.name}.broken-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        try:
            os.rename(f"{db}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:
            pass
    Path(f"{db}.damaged").unlink(missing_ok=True)
    return aside


def _recover(db: Path, root: Path, journal: ImageJournal, warn: Callable[[str], None]) -> tuple[CacheIndex, list[str], bool]:
    with _recovery_lock(root):
        # look again under the lock: another process may have recovered it meanwhile
        reason = _lost(db, root, journal)
        if reason is None:
            index, reason = _try_open(db, journal)
            if index is not None:
                return index, [], False
        aside = _move_aside(db) if os.path.exists(db) else None
        index = CacheIndex(db, journal)
        images, tags = index.reconcile_journal()
    where = f"; moved it to {aside.name}" if aside is not None else ""
    if images or tags:
        restored = f"restored {len(images)} images and {len(tags)} tags from {journal.images_dir.parent}"
    else:
        restored = "found no image records to restore"
    warn(f"the cache index {db} was {reason}{where}; {restored}; the build cache starts afresh")
    return index, images, not images


def open_index(root: Path, warn: Callable[[str], None]) -> tuple[CacheIndex, list[str], bool]:
    """The root's index, recovered first if it was lost or damaged; the image
    digests that were restored from their records (their layers need relinking);
    and whether the index was rebuilt with no records to restore images from
    (then the content store's manifests are all that is left of them)."""
    db = root / INDEX
    journal = ImageJournal(root / "records")
    try:
        index: CacheIndex | None = None
        reason = _lost(db, root, journal)
        if reason is None:
            index, reason = _try_open(db, journal)
        if index is None:
            return _recover(db, root, journal, warn)
    except OSError as error:
        raise store_error(f"cannot open the cache index in {root}", error) from None
    images, tags = index.reconcile_journal()
    if images or tags:
        warn(
            f"the cache index {db} had lost {len(images)} images and {len(tags)} tags"
            f" (an interrupted write?); restored them from {journal.images_dir.parent}"
        )
    return index, images, False
