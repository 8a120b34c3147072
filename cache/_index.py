"""The cache index: one SQLite database (``index.db``, WAL) shared by processes.

It holds what must be looked up by key and updated transactionally:

- cache records: cache key -> snapshot id, diff id and compressed blobs;
- step history: the inputs a step had last time, to explain a cache miss;
- image tags and the image table of the local image store (also kept as
  files by ``_journal``, written inside the same transaction, so a lost or
  damaged index can be rebuilt with them: ``_recover``);
- leases: what running builds use, so garbage collection leaves it alone;
- the stat cache: (device, inode, size, mtime, ctime) -> sha256 of a file.

Deleting a cache record, an image or a tag (prune, rmi, untag) also rewrites
``index.db.generation`` beside it, in the same transaction: a small file whose
bytes change, so that what was recorded about a finished build (the build
command's fast path) can see with one read that the store lost something since.
Each connection watches those tables with TEMP triggers of its own, so the
database's schema does not change and other readers of it are unaffected.

Each thread gets its own connection; ``busy_timeout`` lets writers of
several processes wait their turn, and every write is one ``BEGIN
IMMEDIATE`` transaction so nobody fails upgrading a read lock.  The schema
carries its version in ``PRAGMA user_version``; migrations run in a write
transaction that re-checks the version, so racing processes migrate once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import field
from pathlib import Path
from typing import Any, NamedTuple

from pybuild._frozen import frozen
from pybuild.errors import StoreError

from ._journal import ImageJournal
from ._util import my_identity, process_alive, store_error

StatKey = tuple[int, int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns) of a regular file."""


@frozen
class BlobRef:
    """A compressed form of a layer in the content store."""

    digest: str
    size: int
    media_type: str


@frozen
class CacheRecord:
    """What a cache key resolved to.  ``created``/``last_used`` of 0 mean "now"."""

    snapshot_id: str | None
    diff_id: str | None = None
    blobs: Mapping[str, BlobRef] = field(default_factory=dict)
    created: float = 0.0
    last_used: float = 0.0
    meta: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "blobs", dict(self.blobs))
        object.__setattr__(self, "meta", dict(self.meta))


class Tag(NamedTuple):
    name: str
    digest: str
    updated: float


@frozen
class ImageRecord:
    digest: str
    created: float
    size: int
    meta: Mapping[str, Any] = field(default_factory=dict)


_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # version 1
    (
        """CREATE TABLE cache_records (
            key TEXT PRIMARY KEY,
            snapshot_id TEXT,
            diff_id TEXT,
            created REAL NOT NULL,
            last_used REAL NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX cache_records_snapshot ON cache_records(snapshot_id)",
        """CREATE TABLE cache_blobs (
            key TEXT NOT NULL REFERENCES cache_records(key) ON DELETE CASCADE,
            compression TEXT NOT NULL,
            digest TEXT NOT NULL,
            size INTEGER NOT NULL,
            media_type TEXT NOT NULL,
            PRIMARY KEY (key, compression)
        )""",
        "CREATE INDEX cache_blobs_digest ON cache_blobs(digest)",
        """CREATE TABLE step_history (
            step_id TEXT PRIMARY KEY,
            key TEXT NOT NULL,
            inputs TEXT NOT NULL,
            updated REAL NOT NULL
        )""",
        """CREATE TABLE tags (
            name TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            updated REAL NOT NULL
        )""",
        """CREATE TABLE images (
            digest TEXT PRIMARY KEY,
            created REAL NOT NULL,
            size INTEGER NOT NULL,
            meta TEXT NOT NULL
        )""",
        """CREATE TABLE leases (
            id TEXT PRIMARY KEY,
            pid INTEGER NOT NULL,
            start_time INTEGER NOT NULL,
            boot_id TEXT NOT NULL,
            created REAL NOT NULL
        )""",
        """CREATE TABLE lease_resources (
            lease_id TEXT NOT NULL REFERENCES leases(id) ON DELETE CASCADE,
            resource TEXT NOT NULL,
            PRIMARY KEY (lease_id, resource)
        )""",
        "CREATE INDEX lease_resources_resource ON lease_resources(resource)",
        """CREATE TABLE stat_cache (
            dev INTEGER NOT NULL,
            ino INTEGER NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY (dev, ino)
        ) WITHOUT ROWID""",
    ),
    # version 2: digests of whole context selections by stat fingerprint
    (
        """CREATE TABLE selection_cache (
            fingerprint TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            used REAL NOT NULL
        ) WITHOUT ROWID""",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)

_BUSY_TIMEOUT_MS = 60_000
_WATCHED_DELETES = ("cache_records", "images", "tags")  # a delete in these bumps the generation
_LOOKUP_CHUNK = 500  # inodes per "IN (...)" query


def _s64(value: int) -> int:
    """SQLite integers are signed 64-bit; inode numbers may use the top bit."""
    return value - (1 << 64) if value >= 1 << 63 else value


class IndexDamaged(StoreError):
    """The index file is not a (whole) SQLite database."""


def _is_damage(error: sqlite3.Error) -> bool:
    text = str(error)
    return "malformed" in text or "not a database" in text or "disk image" in text


def _translate(error: sqlite3.Error, where: str) -> StoreError:
    text = str(error)
    if _is_damage(error):
        return IndexDamaged(
            f"cache index {where}: {text}",
            hint="the index is damaged; the next pybuild command repairs it (or run `pybuild prune --repair`)",
        )
    if "locked" in text or "busy" in text:
        hint = "another pybuild process held the cache index too long; try again"
    elif "readonly" in text or "unable to open" in text:
        hint = "set PYBUILD_ROOT to a directory you can write, or run as root"
    else:
        hint = None
    return StoreError(f"cache index {where}: {text}", hint=hint)


class Lease:
    """Resources a running build uses; garbage collection leaves them alone."""

    def __init__(self, index: CacheIndex, lease_id: str) -> None:
        self._index = index
        self.id = lease_id

    def add(self, resources: Iterable[str]) -> None:
        """Protect more resources (snapshot ids, blob digests) under this lease."""
        rows = [(self.id, r) for r in set(resources)]
        with self._index._write() as c:
            c.executemany("INSERT OR IGNORE INTO lease_resources (lease_id, resource) VALUES (?, ?)", rows)

    def release(self) -> None:
        with self._index._write() as c:
            c.execute("DELETE FROM leases WHERE id = ?", (self.id,))


class CacheIndex:
    """The SQLite cache index at ``path``.  ``CacheIndex.memory()`` is the same
    code on a private in-memory database (the test double).  ``busy_timeout_ms``: how long
    a statement waits for another process's write lock (a best-effort writer, the fast
    path's, passes a short one: it must never hold up an answer already printed)."""

    def __init__(self, path: Path | str, journal: ImageJournal | None = None, *, busy_timeout_ms: int = _BUSY_TIMEOUT_MS) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._memory = self.path == ":memory:"
        self._journal = journal  # image records and tags also kept as files, to survive the index
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # An in-memory database lives in one connection; share it under a lock.
        self._shared_lock = threading.RLock() if self._memory else None
        self._pid = os.getpid()
        self._migrate()

    @classmethod
    def memory(cls) -> CacheIndex:
        return cls(":memory:")

    # -- connections and transactions -----------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            # A forked child must not touch its parent's connections (SQLite
            # forbids carrying them across fork): start afresh, leave those be.
            self._pid = os.getpid()
            self._local = threading.local()
            self._connections = []
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._memory and self._connections:
            conn = self._connections[0]
        else:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
                conn.execute("PRAGMA foreign_keys = ON")
                conn.execute("PRAGMA synchronous = NORMAL")
            except sqlite3.Error as error:
                raise self._translate(error, f"at {self.path} cannot be opened") from None
            with self._connections_lock:
                self._connections.append(conn)
        self._local.conn = conn
        self._local.deleted = [False]  # set by this connection's triggers within a write
        self._local.watching = False
        return conn

    def _watch_deletes(self, conn: sqlite3.Connection) -> None:
        """This connection's TEMP triggers on the watched tables (once the schema has them)."""
        if self._memory or self._local.watching:
            return
        flag = self._local.deleted
        conn.create_function("pybuild_deleted", 0, lambda: flag.__setitem__(0, True))
        try:
            for table in _WATCHED_DELETES:
                conn.execute(
                    f"CREATE TEMP TRIGGER IF NOT EXISTS pybuild_deleted_{table} AFTER DELETE ON main.{table}"
                    " BEGIN SELECT pybuild_deleted(); END"
                )
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):
                return  # a database being made: the tables come with the migration
            raise
        self._local.watching = True

    @property
    def generation_file(self) -> Path | None:
        """The file whose bytes change whenever a cache record, an image or a tag is deleted."""
        return None if self._memory else Path(self.path + ".generation")

    def _bump_generation(self) -> None:
        path = self.generation_file
        if path is None:
            return
        temp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            with open(temp, "wb") as file:
                file.write(uuid.uuid4().hex.encode() + b"\n")
            os.replace(temp, path)
        except OSError as error:
            raise store_error(f"cannot write {path}", error) from None

    def journal_files(self, *, images: Iterable[str] = (), tags: Iterable[str] = ()) -> tuple[Path, ...]:
        """The files that keep these image records and tags beside the index
        (rewritten whenever the record or the tag changes); none without a journal."""
        if self._journal is None:
            return ()
        journal = self._journal
        return tuple(
            [journal.images_dir / journal._image_name(digest) for digest in images]
            + [journal.tags_dir / journal._tag_name(name) for name in tags]
        )

    @contextmanager
    def _session(self, failure: str) -> Iterator[sqlite3.Connection]:
        """This thread's connection (holding an in-memory database's lock); a sqlite error says ``failure``."""
        lock = self._shared_lock
        if lock is not None:
            lock.acquire()
        try:
            yield self._connection()
        except sqlite3.Error as error:
            raise self._translate(error, failure) from None
        finally:
            if lock is not None:
                lock.release()

    def _read(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._session("read failed")

    @contextmanager
    def _consistent_read(self) -> Iterator[sqlite3.Connection]:
        """Several SELECTs that must see one state of the database.

        Inside a write transaction of this thread (prune reads the image
        records within its own) that state is the transaction's.
        """
        with self._read() as c:
            if c.in_transaction:
                yield c
                return
            c.execute("BEGIN")
            try:
                yield c
            finally:
                c.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding the database's write lock throughout."""
        with self._session("write failed") as conn:
            self._watch_deletes(conn)
            conn.execute("BEGIN IMMEDIATE")
            deleted = None if self._memory else self._local.deleted
            if deleted is not None:
                deleted[0] = False
            try:
                yield conn
                if deleted is not None and deleted[0]:
                    self._bump_generation()  # before COMMIT: whoever sees the delete sees the new generation
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @property
    def damage_marker(self) -> Path:
        """A file saying the index was found damaged: the next ``Root.open`` repairs it."""
        return Path(self.path + ".damaged")

    def _translate(self, error: sqlite3.Error, where: str) -> StoreError:
        if _is_damage(error) and not self._memory:
            try:
                self.damage_marker.touch()
            except OSError:
                pass
        return _translate(error, where)

    def _journaled(self, change: Any, *args: Any) -> None:
        """Make the same change to the journal (inside the index transaction)."""
        if self._journal is None:
            return
        try:
            change(self._journal, *args)
        except OSError as error:
            raise store_error(f"cannot write image records in {self._journal.images_dir.parent}", error) from None

    def _migrate(self) -> None:
        conn = self._connection()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == SCHEMA_VERSION:
                return
            if not self._memory:
                conn.execute("PRAGMA journal_mode = WAL")
        except sqlite3.Error as error:
            raise self._translate(error, f"at {self.path} cannot be read") from None
        with self._write() as c:
            version = c.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"cache index {self.path} has schema version {version}; this pybuild knows {SCHEMA_VERSION}",
                    hint="use a newer pybuild, or a separate PYBUILD_ROOT for this one",
                )
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    c.execute(statement)
            c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        """Close every thread's connection (the index must not be used after)."""
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # -- cache records --------------------------------------------------------

    def lookup(self, key: str) -> CacheRecord | None:
        """The record for a cache key.  Before trusting it, take a lease on its
        snapshot/blobs and check they exist: prune may have removed them."""
        with self._consistent_read() as c:
            row = c.execute(
                "SELECT snapshot_id, diff_id, created, last_used, meta FROM cache_records WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            blobs = c.execute(
                "SELECT compression, digest, size, media_type FROM cache_blobs WHERE key = ?", (key,)
            ).fetchall()
        return CacheRecord(
            snapshot_id=row[0],
            diff_id=row[1],
            blobs={comp: BlobRef(d, s, m) for comp, d, s, m in blobs},
            created=row[2],
            last_used=row[3],
            meta=json.loads(row[4]),
        )

    def record(self, key: str, rec: CacheRecord) -> None:
        """Store (or replace) the record for a key, with its blobs."""
        now = time.time()
        with self._write() as c:
            c.execute("DELETE FROM cache_blobs WHERE key = ?", (key,))
            c.execute(
                "INSERT OR REPLACE INTO cache_records (key, snapshot_id, diff_id, created, last_used, meta)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    key,
                    rec.snapshot_id,
                    rec.diff_id,
                    rec.created or now,
                    rec.last_used or now,
                    json.dumps(dict(rec.meta), sort_keys=True),
                ),
            )
            c.executemany(
                "INSERT INTO cache_blobs (key, compression, digest, size, media_type) VALUES (?, ?, ?, ?, ?)",
                [(key, comp, b.digest, b.size, b.media_type) for comp, b in rec.blobs.items()],
            )

    def add_blob(self, key: str, compression: str, blob: BlobRef) -> bool:
        """Attach a compressed form to a record; False if there is no such record."""
        with self._write() as c:
            if c.execute("SELECT 1 FROM cache_records WHERE key = ?", (key,)).fetchone() is None:
                return False
            c.execute(
                "INSERT OR REPLACE INTO cache_blobs (key, compression, digest, size, media_type) VALUES (?, ?, ?, ?, ?)",
                (key, compression, blob.digest, blob.size, blob.media_type),
            )
            return True

    def set_diff_id(self, key: str, diff_id: str) -> bool:
        with self._write() as c:
            return c.execute("UPDATE cache_records SET diff_id = ? WHERE key = ?", (diff_id, key)).rowcount > 0

    def touch(self, key: str) -> bool:
        """Mark a record used now (prune keeps recently used records longest)."""
        with self._write() as c:
            return c.execute("UPDATE cache_records SET last_used = ? WHERE key = ?", (time.time(), key)).rowcount > 0

    def delete_record(self, key: str) -> bool:
        with self._write() as c:
            return c.execute("DELETE FROM cache_records WHERE key = ?", (key,)).rowcount > 0

    def records(self) -> list[tuple[str, CacheRecord]]:
        """Every record, oldest use first."""
        with self._consistent_read() as c:
            rows = c.execute(
                "SELECT key, snapshot_id, diff_id, created, last_used, meta FROM cache_records ORDER BY last_used, key"
            ).fetchall()
            blob_rows = c.execute("SELECT key, compression, digest, size, media_type FROM cache_blobs").fetchall()
        blobs: dict[str, dict[str, BlobRef]] = {}
        for key, comp, d, s, m in blob_rows:
            blobs.setdefault(key, {})[comp] = BlobRef(d, s, m)
        return [
            (key, CacheRecord(snap, diff, blobs.get(key, {}), created, used, json.loads(meta)))
            for key, snap, diff, created, used, meta in rows
        ]

    # -- step history ---------------------------------------------------------

    def remember_inputs(self, step_id: str, key: str, inputs: Mapping[str, str]) -> None:
        """Keep the cache key and named inputs a step had, to explain the next miss."""
        data = json.dumps(dict(inputs), sort_keys=True, separators=(",", ":"))
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO step_history (step_id, key, inputs, updated) VALUES (?, ?, ?, ?)",
                (step_id, key, data, time.time()),
            )

    def previous_inputs(self, step_id: str) -> tuple[str, Mapping[str, str]] | None:
        with self._read() as c:
            row = c.execute("SELECT key, inputs FROM step_history WHERE step_id = ?", (step_id,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    # -- tags and images --------------------------------------------------------

    def set_tag(self, name: str, digest: str) -> str | None:
        """Point a tag at a digest; returns the digest it pointed at before."""
        with self._write() as c:
            row = c.execute("SELECT digest FROM tags WHERE name = ?", (name,)).fetchone()
            now = time.time()
            c.execute("INSERT OR REPLACE INTO tags (name, digest, updated) VALUES (?, ?, ?)", (name, digest, now))
            self._journaled(ImageJournal.set_tag, name, digest, now)
        return None if row is None else row[0]

    def get_tag(self, name: str) -> str | None:
        with self._read() as c:
            row = c.execute("SELECT digest FROM tags WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def delete_tag(self, name: str) -> str | None:
        """Remove a tag; returns the digest it pointed at."""
        with self._write() as c:
            row = c.execute("SELECT digest FROM tags WHERE name = ?", (name,)).fetchone()
            c.execute("DELETE FROM tags WHERE name = ?", (name,))
            self._journaled(ImageJournal.delete_tag, name)
        return None if row is None else row[0]

    def tags(self) -> list[Tag]:
        with self._read() as c:
            rows = c.execute("SELECT name, digest, updated FROM tags ORDER BY name").fetchall()
        return [Tag(*row) for row in rows]

    def put_image(
        self, digest: str, *, size: int, meta: Mapping[str, Any] | None = None, created: float | None = None
    ) -> None:
        created = time.time() if created is None else created
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO images (digest, created, size, meta) VALUES (?, ?, ?, ?)",
                (digest, created, size, json.dumps(dict(meta or {}), sort_keys=True)),
            )
            self._journaled(ImageJournal.put_image, digest, created, size, dict(meta or {}))

    def get_image(self, digest: str) -> ImageRecord | None:
        with self._read() as c:
            row = c.execute("SELECT digest, created, size, meta FROM images WHERE digest = ?", (digest,)).fetchone()
        return None if row is None else ImageRecord(row[0], row[1], row[2], json.loads(row[3]))

    def delete_image(self, digest: str) -> bool:
        with self._write() as c:
            self._journaled(ImageJournal.delete_image, digest)
            return c.execute("DELETE FROM images WHERE digest = ?", (digest,)).rowcount > 0

    def images(self) -> list[ImageRecord]:
        with self._read() as c:
            rows = c.execute("SELECT digest, created, size, meta FROM images ORDER BY created, digest").fetchall()
        return [ImageRecord(d, cr, s, json.loads(m)) for d, cr, s, m in rows]

    def reconcile_journal(self) -> tuple[list[str], list[str]]:
        """Make the image and tag rows agree with their journal files.

        Rows the index lost (a truncated WAL, a restored old copy, a fresh
        index) come back from the files; rows without a file (a root made
        before the journal existed) get one.  Returns the image digests and
        tag names that came back.  Cheap when they agree: two counts.
        """
        if self._journal is None:
            return [], []
        with self._read() as c:
            counts = tuple(c.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("images", "tags"))
        if counts == self._journal.counts():
            return [], []
        restored_images: list[str] = []
        restored_tags: list[str] = []
        with self._write() as c:  # writers change files and rows under this lock: look again under it
            images = {row[0]: row for row in c.execute("SELECT digest, created, size, meta FROM images")}
            tags = {row[0]: row for row in c.execute("SELECT name, digest, updated FROM tags")}
            filed_images = {v["digest"]: v for v in self._journal.images()}
            filed_tags = {v["name"]: v for v in self._journal.tags()}
            for digest, value in filed_images.items():
                if digest not in images:
                    c.execute(
                        "INSERT INTO images (digest, created, size, meta) VALUES (?, ?, ?, ?)",
                        (digest, value["created"], value["size"], json.dumps(value["meta"], sort_keys=True)),
                    )
                    restored_images.append(digest)
            for name, value in filed_tags.items():
                if name not in tags:
                    c.execute("INSERT INTO tags (name, digest, updated) VALUES (?, ?, ?)", (name, value["digest"], value["updated"]))
                    restored_tags.append(name)
            for digest, created, size, meta in images.values():
                if digest not in filed_images:
                    self._journaled(ImageJournal.put_image, digest, created, size, json.loads(meta))
            for name, digest, updated in tags.values():
                if name not in filed_tags:
                    self._journaled(ImageJournal.set_tag, name, digest, updated)
        return sorted(restored_images), sorted(restored_tags)

    def quick_check(self) -> str | None:
        """None if SQLite finds the database whole, else what it found wrong."""
        try:
            with self._read() as c:
                rows = c.execute("PRAGMA quick_check").fetchall()
        except StoreError as error:
            return str(error)
        problems = [str(row[0]) for row in rows if row[0] != "ok"]
        return "; ".join(problems[:3]) if problems else None

    # -- leases ---------------------------------------------------------------

    @contextmanager
    def lease(self, resources: Iterable[str] = ()) -> Iterator[Lease]:
        """Hold resources for the duration of a ``with`` block.

        A lease names its process (pid, start time, boot id); if the process
        dies without releasing it, the lease expires.
        """
        lease = self.new_lease(resources)
        try:
            yield lease
        finally:
            lease.release()

    def new_lease(self, resources: Iterable[str] = ()) -> Lease:
        """A lease held until ``release()`` (or this process's death)."""
        lease_id = uuid.uuid4().hex
        pid, start, boot = my_identity()
        rows = [(lease_id, r) for r in set(resources)]
        with self._write() as c:
            c.execute(
                "INSERT INTO leases (id, pid, start_time, boot_id, created) VALUES (?, ?, ?, ?, ?)",
                (lease_id, pid, start, boot, time.time()),
            )
            c.executemany("INSERT OR IGNORE INTO lease_resources (lease_id, resource) VALUES (?, ?)", rows)
        return Lease(self, lease_id)

    def _live_leased(self, c: sqlite3.Connection) -> set[str]:
        """Inside a write transaction: drop dead processes' leases, return the rest's resources."""
        dead = [
            (lease_id,)
            for lease_id, pid, start, boot in c.execute("SELECT id, pid, start_time, boot_id FROM leases").fetchall()
            if not process_alive(pid, start, boot)
        ]
        if dead:
            c.executemany("DELETE FROM leases WHERE id = ?", dead)
        return {row[0] for row in c.execute("SELECT DISTINCT resource FROM lease_resources")}

    def leased(self) -> set[str]:
        """Resources held by leases of live processes (expired leases are dropped)."""
        with self._write() as c:
            return self._live_leased(c)

    # -- stat cache -------------------------------------------------------------

    def get_stat_digest(self, key: StatKey) -> str | None:
        dev, ino, size, mtime_ns, ctime_ns = key
        with self._read() as c:
            row = c.execute(
                "SELECT digest FROM stat_cache WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ? AND ctime_ns = ?",
                (_s64(dev), _s64(ino), size, mtime_ns, ctime_ns),
            ).fetchone()
        return None if row is None else row[0]

    def get_stat_digests(self, keys: Sequence[StatKey]) -> dict[StatKey, str]:
        """Batch form of ``get_stat_digest``: the keys found, with their digests."""
        by_dev: dict[int, dict[int, list[StatKey]]] = {}
        for key in keys:
            by_dev.setdefault(key[0], {}).setdefault(_s64(key[1]), []).append(key)
        found: dict[StatKey, str] = {}
        with self._read() as c:
            for dev, wanted in by_dev.items():
                inodes = list(wanted)
                for start in range(0, len(inodes), _LOOKUP_CHUNK):
                    chunk = inodes[start : start + _LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for ino, size, mtime_ns, ctime_ns, digest in c.execute(
                        f"SELECT ino, size, mtime_ns, ctime_ns, digest FROM stat_cache WHERE dev = ? AND ino IN ({marks})",
                        (_s64(dev), *chunk),
                    ):
                        for key in wanted[ino]:
                            if key[2:] == (size, mtime_ns, ctime_ns):
                                found[key] = digest
        return found

    def get_selection_digest(self, fingerprint: str) -> str | None:
        """The digest a context selection had when its files had these stat keys."""
        with self._read() as c:
            row = c.execute("SELECT digest FROM selection_cache WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else row[0]

    def put_selection_digest(self, fingerprint: str, digest: str) -> None:
        now = time.time()
        with self._write() as c:
            c.execute(
                "INSERT OR REPLACE INTO selection_cache (fingerprint, digest, used) VALUES (?, ?, ?)",
                (fingerprint, digest, now),
            )
            # every changed context leaves a row behind: keep a month of them
            c.execute("DELETE FROM selection_cache WHERE used < ?", (now - 30 * 86400,))

    def step_key(self, step_id: str) -> str | None:
        """The cache key a step had when it was last remembered (cheap: no inputs)."""
        with self._read() as c:
            row = c.execute("SELECT key FROM step_history WHERE step_id = ?", (step_id,)).fetchone()
        return None if row is None else row[0]

    def put_stat_digests(self, rows: Iterable[tuple[StatKey, str]]) -> None:
        """Remember file digests by stat key, in one transaction.

        Only for files without extended attributes: ContextHasher takes a hit
        to mean "no xattrs" (adding one changes the ctime, hence the key)
        and skips listxattr.
        """
        values = [
            (_s64(dev), _s64(ino), size, mtime_ns, ctime_ns, digest)
            for (dev, ino, size, mtime_ns, ctime_ns), digest in rows
        ]
        if not values:
            return
        with self._write() as c:
            c.executemany(
                "INSERT OR REPLACE INTO stat_cache (dev, ino, size, mtime_ns, ctime_ns, digest) VALUES (?, ?, ?, ?, ?, ?)",
                values,
            )

    def clear_stat_cache(self) -> None:
        with self._write() as c:
            c.execute("DELETE FROM stat_cache")

