"""A COPY of the build context that reuses the unchanged files of its previous snapshot.

Rebuilding ``COPY . /app`` after one file of a big context changed should cost
that file, not a copy of every byte.  A snapshot made by a COPY of the context
keeps, attached to its tree (``MANIFEST``, moved with the tree when it is
committed), the facts of each file the copy put in a directory it made: its
context entry digest (content, mode, size, xattrs) and where it went with which
mode, owner, mtime and size.  The next run of the same step (``pointer``: the
step of this context, else the op) finds that snapshot, and the copier is told
which files the earlier tree holds with the content the context has now
(``Reuse.reusable``).  A file that would get the very same facts again is not
copied: ``finish_copy`` hard-links the earlier tree's file in instead, after
checking that file still has those facts, and restores the times of the
directories it linked into.  The tree is then the one a full copy makes, so
its layer tar, diffID and the image ID are the same.

A file whose time changed cannot be reused, whatever its bytes: the layer keeps
each file's mtime (cache keys ignore times, the tree does not) and an inode has
one.  After a ``touch`` of every file (a checkout, the context benchmark before
its one-file change) the next copy writes every file anew; the one after links.

Snapshots are never written after their commit (later steps see them as
overlay lowers, whose copy-up leaves them alone), so two trees sharing an
inode never see it change.  What ``finish_copy`` writes comes after the step's
overlay is unmounted, whose unmount syncs the file system of a step's files
(``ovl_sync_fs``): it syncs that file system itself (``syncfs``) before the
snapshot is committed, unless the user traded that for speed
(``PYBUILD_VOLATILE_OVERLAYS=1``), so a power loss never leaves the index
trusting a tree whose files were lost.

Anything unexpected (a damaged manifest, a file whose facts differ, a link
the file system refuses) means no reuse: the caller copies everything, as
before.  The manifest is as trusted as the tree it sits beside (a cache hit
uses that tree as it is); still, it can never make a link outside the trees
or to another place: a file is reused only at the target the copier itself
computes, its path is checked to hold plain names only, walked without
following a symlink, and the earlier file's facts checked before the link.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import stat
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild._frozen import frozen
from pybuild.errors import StoreError


if TYPE_CHECKING:
    from pybuild.cache import Root

    from ._fileops import CopyReport, DirFacts, FileFacts

MANIFEST = "copy-files.json"
_POINTER = "copy-reuse:"
_HEADER = b"pybuild copy manifest 1\0"
_FIELDS = 8  # origin, entry digest, then the facts: target, mode, uid, gid, mtime, size
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@frozen
class Reuse:
    """An earlier snapshot of the same copy and the files of it the copier may keep."""

    snapshot: str
    tree: Path
    reusable: Mapping[str, FileFacts]  # context path -> its facts in ``tree``


class ReuseFailed(Exception):
    """The earlier tree cannot give a file it promised: copy everything instead."""


def pointer(context: Path, step: str) -> str:
    """The index key naming the last snapshot this step made from this context."""
    return _POINTER + hashlib.sha256(f"{context}\0{step}".encode()).hexdigest()


def remember(root: Root, key: str, snapshot: str) -> None:
    """Point ``key`` at ``snapshot`` (which has a manifest): only a hint, checked when used."""
    from pybuild.cache import CacheRecord

    now = time.time()
    # snapshot_id stays None: the hint must not keep the snapshot from a prune
    root.index.record(key, CacheRecord(snapshot_id=None, created=now, last_used=now, meta={"snapshot": snapshot}))


def find(root: Root, key: str, entries: Mapping[str, str], lease: Callable[[list[str]], None]) -> Reuse | None:
    """The files of the snapshot ``key`` points at whose context entry is still ``entries``'.

    The snapshot is leased before it is looked at, so a concurrent prune leaves it alone.
    """
    record = root.index.lookup(key)
    snapshot = record.meta.get("snapshot") if record is not None else None
    if not snapshot:
        return None
    lease([snapshot])
    try:
        data = root.snapshots.attachment(snapshot, MANIFEST)
        tree = root.snapshots.tree(snapshot) if data is not None else None
    except StoreError:  # a malformed id, or the snapshot vanished meanwhile: no reuse
        return None
    if data is None or tree is None:
        return None
    reusable = {origin: facts for origin, (entry, facts) in _read_manifest(data).items() if entries.get(origin) == entry}
    return Reuse(snapshot, tree, reusable) if reusable else None


def manifest(report: CopyReport, entries: Mapping[str, str]) -> bytes:
    """The manifest of a tree the copier reported on: each file's entry digest and facts.

    One NUL-separated record of eight fields per file (names cannot hold NUL),
    cheaper to write and read than JSON for tens of thousands of files.
    """
    rows = [
        "%s\0%s\0%s\0%d\0%d\0%d\0%d\0%d" % (origin, entries[origin], *facts)
        for origin, facts in report.files.items()
        if origin in entries
    ]
    return _HEADER + "\0".join(rows).encode("utf-8", "surrogateescape")


def _read_manifest(data: bytes) -> dict[str, tuple[str, FileFacts]]:
    """The manifest's files; a malformed one is none (it is only a hint).

    A target is not checked here: the copier reuses a file only where it would
    write it itself, and ``link_reused`` checks each one it joins to a tree.
    """
    if not data.startswith(_HEADER):
        return {}
    fields = data[len(_HEADER) :].decode("utf-8", "surrogateescape").split("\0")
    if len(fields) % _FIELDS:
        return {}
    try:
        numbers = [list(map(int, fields[k::_FIELDS])) for k in range(3, _FIELDS)]
    except ValueError:
        return {}
    return {
        origin: (entry, (target, mode, uid, gid, mtime, size))
        for origin, entry, target, mode, uid, gid, mtime, size in zip(
            fields[0::_FIELDS], fields[1::_FIELDS], fields[2::_FIELDS], *numbers, strict=True
        )
    }


def _safe_target(target: str) -> bool:
    """An absolute path with plain names only (no empty name, ``.`` or ``..``): it stays
    inside the trees it is joined to.  String tests, not a split: it is asked of every file."""
    closed = target + "/"
    return (
        target[:1] == "/" and not target.endswith("/") and "//" not in target and "\0" not in target
        and "/./" not in closed and "/../" not in closed
    )


def finish_copy(
    reuse: Reuse | None, upper: Path, source: Path, report: CopyReport, *, durable: bool = True, spread: Spread | None = None
) -> None:
    """Do in ``upper`` what the copier left out (``PlannedCopy.defer``): make the
    directories ``report.dirs``, hard-link each reused file from the earlier tree
    and copy each of ``report.copies`` from ``source`` where the copier would
    have written it; ReuseFailed if anything is not as expected.

    Paths are walked one directory at a time without following symlinks, on every
    side.  The directories made here get their metadata last, the others written
    into get their times back (the copier set them).  ``spread`` runs the copies'
    parts (``Spread``), in turn without it.  ``durable``: then the file system is
    synced (``sync_file_system``), as a step's overlay unmount does.
    """
    linked = [reuse.reusable[origin] for origin in report.reused] if reuse is not None else []
    # in the copier's order: depth first, so each directory's files come together
    # (``_Dirs`` keeps the ancestors open: each directory is opened about once)
    copies = [(origin, report.files[origin]) for origin in report.copies]
    paths = itertools.chain((f[0] for f in linked), (f[0] for _, f in copies), (d[0] for d in report.dirs))
    if not all(_safe_target(path) for path in paths) or not all(_safe_target("/" + origin) for origin, _ in copies):
        raise ReuseFailed("a path leaves the tree")
    made = {facts[0]: facts for facts in report.dirs}
    touched: dict[str, os.stat_result] = {}  # directory -> its times before
    # the context's own path may be a symlink (the bind mount resolved it too); nothing below it is followed
    src = Path(os.path.realpath(source))
    old, new = _Dirs(reuse.tree if reuse is not None else upper), _Dirs(upper)

    def changing(parent: str) -> int:
        fd = new.fd(parent)
        if parent not in made and parent not in touched:
            touched[parent] = os.fstat(fd)
        return fd

    try:
        for target in sorted(made):  # parents first
            parent, _, name = target.rpartition("/")
            os.mkdir(name, 0o700, dir_fd=changing(parent))
        for parent, group in itertools.groupby(sorted(linked, key=_place), key=lambda f: _place(f)[0]):
            _link_group(old.fd(parent), changing(parent), group)
        for parent in sorted({_place(facts)[0] for _, facts in copies}):
            changing(parent)  # its times, before a copy changes them
        failures: list[str] = []
        parts = _split(copies, PARTS if spread is not None and len(copies) >= _SPREAD_FROM else 1)
        jobs: list[Callable[[], None]] = [functools.partial(_copy_part, upper, src, part, failures) for part in parts]
        if spread is not None and len(jobs) > 1:
            spread(jobs)
        else:
            for job in jobs:
                job()
        if failures:
            raise ReuseFailed(failures[0])
        for target, (_, mode, uid, gid, mtime) in made.items():
            fd = new.fd(target)
            os.chown(fd, uid, gid)  # first: a chown clears set-id bits
            os.chmod(fd, mode)
            os.utime(fd, ns=(mtime, mtime))
        for parent, times in touched.items():
            os.utime(new.fd(parent), ns=(times.st_atime_ns, times.st_mtime_ns))
    except OSError as error:
        raise ReuseFailed(f"{error.strerror}: {error.filename}") from None
    finally:
        old.close()
        new.close()
    if durable:
        sync_file_system(upper)


# Runs the functions it is given, each once, in any order or at once (``finish_copy``'s
# copies, in parts that share nothing): the worker runs them on the CPU limiter's threads.
Spread = Callable[[list[Callable[[], None]]], None]
PARTS = 4  # the copies' parts when spread: more than the CPUs, so one slow part does not hold the rest
_SPREAD_FROM = 64  # fewer copies go in one part
_FILE_WEIGHT = 32 << 10  # a file's own cost (create, chown, chmod, utime), in bytes of copying


def _split(copies: list[tuple[str, FileFacts]], count: int) -> list[list[tuple[str, FileFacts]]]:
    """``copies`` in ``count`` runs of about the same cost, in their order (a run's
    files share directories, which a ``_Dirs`` then opens once)."""
    if count <= 1:
        return [copies] if copies else []
    total = sum(facts[5] + _FILE_WEIGHT for _, facts in copies)
    parts: list[list[tuple[str, FileFacts]]] = [[]]
    done = 0
    for copy in copies:
        if done >= total * len(parts) / count and len(parts) < count:
            parts.append([])
        parts[-1].append(copy)
        done += copy[1][5] + _FILE_WEIGHT
    return [part for part in parts if part]


def _copy_part(upper: Path, source: Path, copies: list[tuple[str, FileFacts]], failures: list[str]) -> None:
    """Copy these files from ``source`` into ``upper`` (their directories are there);
    what went wrong goes into ``failures`` (several parts may run at once)."""
    try:
        new, src = _Dirs(upper), _Dirs(source)
    except OSError as error:
        failures.append(f"{error.strerror}: {error.filename}")
        return
    try:
        from ._fileops import copy_xattrs

        ids = (os.geteuid(), os.getegid())
        places: tuple[str, str] | None = None  # the directories of the last file, open as fds below
        for origin, facts in copies:
            if failures:
                return  # another part failed: everything is copied again anyway
            parent, _, name = facts[0].rpartition("/")
            source_dir, _, source_name = origin.rpartition("/")
            if places != (parent, source_dir):  # a directory's files come together: looked up once
                places = (parent, source_dir)
                source_fd, target_fd = src.fd("/" + source_dir if source_dir else ""), new.fd(parent)
                owned = _new_file_ids(target_fd, ids)
            _copy_file(source_fd, source_name, target_fd, name, facts, copy_xattrs, owned)
    except OSError as error:
        failures.append(f"{error.strerror}: {error.filename}")
    except ReuseFailed as error:
        failures.append(str(error))
    finally:
        new.close()
        src.close()


def sync_file_system(path: Path) -> None:
    """``syncfs(2)`` of the file system holding ``path``: every dirty page and inode
    of it on disk, what the unmount of a step's overlay does for its upper dir."""
    from pybuild.cache import syncfs

    fd = os.open(path, _DIR_FLAGS)
    try:
        syncfs(fd)
    except OSError as error:
        raise StoreError(
            f"cannot write the files of a copy to disk: {error.strerror or error}",
            hint=f"check the file system of {path} (a full disk, an I/O error)",
        ) from None
    finally:
        os.close(fd)


def _place(facts: FileFacts) -> tuple[str, str, str]:
    return facts[0].rpartition("/")


def _new_file_ids(directory: int, ids: tuple[int, int]) -> tuple[int, int] | None:
    """The owner a file made in ``directory`` gets by itself, if it is surely ``ids`` (this
    thread's effective ones): a file takes the creator's uid, and its gid or the directory's
    (set-group-ID bit, ``grpid`` mounts), the same when the directory's is the creator's."""
    return ids if os.fstat(directory).st_gid == ids[1] else None


def _copy_file(
    source_dir: int, source_name: str, target_dir: int, name: str, facts: FileFacts,
    copy_xattrs: Callable[[int, int], None], owned: tuple[int, int] | None = None,
) -> None:
    """One file as the copier's ``_copy_new_file`` writes it, from a source opened without following
    a link; ``copy_xattrs`` is ``_fileops``' (imported once by the caller, not once per file).
    ``owned``: the uid and gid a new file in ``target_dir`` gets (no chown needed for those)."""
    _, mode, uid, gid, mtime, _ = facts
    src = os.open(source_name, _READ_FLAGS, dir_fd=source_dir)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise ReuseFailed(f"{source_name} is no longer a regular file")
        dst = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=target_dir)
        try:
            while os.sendfile(dst, src, None, 1 << 30):
                pass
            if (uid, gid) != owned:
                os.fchown(dst, uid, gid)  # first: a chown drops file capabilities
            copy_xattrs(src, dst)
            os.fchmod(dst, mode)
            os.utime(dst, ns=(mtime, mtime))
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _link_group(old: int, new: int, group: Iterable[FileFacts]) -> None:
    for target, *facts in group:
        name = target.rpartition("/")[2]
        st = os.stat(name, dir_fd=old, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or [stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns, st.st_size] != facts:
            raise ReuseFailed(f"{target} is not what the manifest says")
        os.link(name, name, src_dir_fd=old, dst_dir_fd=new, follow_symlinks=False)


class _Dirs:
    """Descriptors of the directories down one tree, each opened from its parent
    with O_NOFOLLOW; those kept open are the last one's ancestors, so walking
    sorted paths opens every directory once."""

    def __init__(self, top: Path) -> None:
        self._open: list[tuple[str, int]] = [("", os.open(top, _DIR_FLAGS))]

    def fd(self, parent: str) -> int:
        """The directory ``parent`` (an absolute path inside the tree)."""
        names = parent.split("/")[1:]
        keep = 1
        while keep < len(self._open) and keep <= len(names) and self._open[keep][0] == names[keep - 1]:
            keep += 1
        for _, fd in self._open[keep:]:
            os.close(fd)
        del self._open[keep:]
        for name in names[keep - 1 :]:
            self._open.append((name, os.open(name, _DIR_FLAGS, dir_fd=self._open[-1][1])))
        return self._open[-1][1]

    def close(self) -> None:
        for _, fd in self._open:
            os.close(fd)
        self._open.clear()
