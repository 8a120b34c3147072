"""The pybuild root: one directory holding all of pybuild's state.

    <root>/blobs/sha256/<hex>     content store
    <root>/snapshots/<id>/        committed layer trees (meta.json + tree/)
    <root>/index.db               SQLite cache index (WAL)
    <root>/records/               image records and tags as files, to rebuild a lost index from
    <root>/tmp/slot-<n>/<process>/  per-process temp areas (+ <process>.lock)
    <root>/cache-mounts/<name>/   RUN --mount=type=cache directories
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from ._content import FileContentStore
from ._index import CacheRecord
from ._recover import open_index
from ._snapshots import DirSnapshotter
from ._tmp import clean_stale, note_freed, prepare_slots, process_area, temp_contents
from ._util import store_error

ENV_ROOT = "PYBUILD_ROOT"


def _stat_key(stat: os.stat_result) -> tuple[int, int, int, int, int]:
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def default_root_path() -> Path:
    """``$PYBUILD_ROOT``, else ``/var/lib/pybuild`` for root, else ``$XDG_DATA_HOME/pybuild``.

    A rootless pybuild is root inside its user namespace (``$PYBUILD_ROOTLESS`` set when it
    entered) but keeps the caller's root: its environment is still the caller's."""
    configured = os.environ.get(ENV_ROOT)
    if configured:
        return Path(configured)
    if os.geteuid() == 0 and not os.environ.get("PYBUILD_ROOTLESS"):
        return Path("/var/lib/pybuild")
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "pybuild"


def _rootless() -> bool:
    """An ordinary user's pybuild (in its user namespace, or not yet entered)."""
    return os.geteuid() != 0 or bool(os.environ.get("PYBUILD_ROOTLESS"))


def _make_private(path: Path, *, enforce: bool) -> None:
    """A user's root is the user's alone (0700), as containerd makes its root
    (``CreateTopLevelDirectories``): other accounts must not list or read its layers and
    cache mounts.  The default root made 0755 by an older pybuild is closed too; a root
    the user named keeps the mode the user gave it."""
    os.makedirs(path.parent, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        if enforce and os.stat(path).st_mode & 0o077:
            os.chmod(path, 0o700)


def _warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


class Root:
    """An open pybuild root.  Thread-safe; several processes may open one root."""

    def __init__(self, path: Path, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._tmp_root = path / "tmp"
        self.blobs = FileContentStore(path / "blobs", self._area_path, on_commit=self._remember_blob)
        self.snapshots = DirSnapshotter(path / "snapshots", self._area_path)
        # a lost or damaged index is noticed and rebuilt here, with one warning;
        # images restored from their records need their layers linked again (ImageStore.relink)
        self.index, self.restored_images, self.images_lost = open_index(path, warn or _warn)

    @classmethod
    def open(cls, path: Path | None = None, *, warn: Callable[[str], None] | None = None) -> Root:
        """Open (creating if needed) the root at ``path`` or the default place.

        Creates the layout, migrates the index and removes temp areas left by
        dead processes.  Cheap when nothing needs doing.
        """
        default = path is None
        path = Path(path) if path is not None else default_root_path()
        path = path.absolute()
        try:
            if _rootless():
                _make_private(path, enforce=default)
            for sub in ("blobs/sha256", "snapshots", "tmp", "cache-mounts"):
                os.makedirs(path / sub, exist_ok=True)
            clean_stale(path / "tmp")
            prepare_slots(path / "tmp")
        except OSError as error:
            raise store_error(f"cannot use pybuild root {path}", error) from None
        return cls(path, warn)

    def _area_path(self) -> Path:
        try:
            return process_area(self._tmp_root).path
        except OSError as error:
            raise store_error(f"cannot create a temp directory in {self._tmp_root}", error) from None

    @staticmethod
    def temp_contents(path: Path) -> list[Path]:
        """The temp areas, their lock files and debris in the root at ``path`` (read without
        opening it): empty once no process uses the root and the last one exited cleanly."""
        return temp_contents(path / "tmp")

    def note_freed(self, trees: list[Path]) -> None:
        """Call just before deleting ``trees`` of many files: temp areas made in the next
        minutes keep away from where they are (see ``choose_slot``)."""
        note_freed(self._tmp_root, trees)

    def tmp_dir(self, prefix: str = "tmp-") -> Path:
        """A fresh empty directory in this process's temp area (removed at exit
        or, after a crash, by the next process that opens the root)."""
        try:
            return process_area(self._tmp_root).new_dir(prefix)
        except OSError as error:
            raise store_error(f"cannot create a temp directory in {self._tmp_root}", error) from None

    def cache_mount_dir(self, mount_id: str) -> Path:
        """The persistent directory of ``RUN --mount=type=cache,id=<mount_id>``.

        Ids are free text (they may hold ``/`` or ``..``), so the directory
        is named by a hash of the id.
        """
        path = self.path / "cache-mounts" / self.cache_mount_name(mount_id)
        try:
            path.mkdir(exist_ok=True)
        except OSError as error:
            raise store_error(f"cannot create cache mount {mount_id!r}", error) from None
        return path

    @staticmethod
    def cache_mount_name(mount_id: str) -> str:
        return hashlib.sha256(mount_id.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    @classmethod
    def cache_mount_resource(cls, mount_id: str) -> str:
        """The name to lease so prune leaves a cache mount in use alone."""
        return "cache-mount:" + cls.cache_mount_name(mount_id)

    def usable_record(self, key: str) -> CacheRecord | None:
        """``index.lookup(key)`` if its snapshot is whole, with only the blobs present.

        Take a lease on the snapshot first when you mean to use it: prune
        runs concurrently and only spares what is leased.
        """
        record = self.index.lookup(key)
        if record is None:
            return None
        if record.snapshot_id is not None and not self.snapshots.exists(record.snapshot_id):
            return None
        blobs = {c: b for c, b in record.blobs.items() if self.blobs.has(b.digest)}
        if record.snapshot_id is None and not blobs:
            return None
        return CacheRecord(record.snapshot_id, record.diff_id, blobs, record.created, record.last_used, record.meta)

    # Blobs this size and larger have their stat key remembered when stored, so
    # checking them later costs a stat; smaller ones are simply hashed again.
    REMEMBERED_BLOB_SIZE = 1 << 20

    def _remember_blob(self, path: Path, digest: str, size: int) -> None:
        if size >= self.REMEMBERED_BLOB_SIZE:
            self.index.put_stat_digests([(_stat_key(os.stat(path)), digest)])

    def blob_intact(self, digest: str, size: int | None = None) -> bool:
        """Whether the stored blob is whole and hashes to its digest.

        A blob is hashed once per version of its file (its stat key goes into
        the stat cache), so asking again about an unchanged blob costs a
        stat.  A blob that is damaged -- truncated, or bytes changed -- is
        removed, so that whoever asked makes or fetches it again.
        """
        path = self.blobs.path(digest)
        if path is None:
            return False
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return False
        if size is not None and stat.st_size != size:
            self.blobs.delete(digest)
            return False
        key = _stat_key(stat)
        if self.index.get_stat_digest(key) == digest:
            return True
        if not self.blobs.verify(digest):
            self.blobs.delete(digest)
            return False
        self.index.put_stat_digests([(key, digest)])
        return True

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Root({str(self.path)!r})"

