"""Per-process temp areas under ``<root>/tmp``, and removal of dead ones.

Everything half-made lives in the temp area of the process making it: blobs
being written, snapshots being built, trees on their way to deletion.  Only a
complete, verified thing is renamed out of it.  So after a crash the only
debris is a temp area nobody owns, and the next process removes it.

Ownership is an exclusive ``flock`` on ``<name>.lock`` beside the area
``<name>/``, held as long as the process lives (the kernel drops it when the
process dies, however it dies).  The lock file is created and locked before
the directory, and removed after it, so a directory without a lock file is
debris too.

Areas are made in one of a few fixed *slots* (``<root>/tmp/slot-<n>/``), for where
the disk puts their files; see ``choose_slot``.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import secrets
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ._util import remove_tree

_LOCK_SUFFIX = ".lock"
# ext4's "top of a directory hierarchy" flag (chattr +T), read and set with FS_IOC_[GS]ETFLAGS
_FS_IOC_GETFLAGS, _FS_IOC_SETFLAGS, _FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000
_SLOT_PREFIX = "slot-"
_SLOTS = 16
# Where a tree's inodes are, in ext4's terms: the flex group of its directory's inode, which
# its files and subdirectories join.  mke2fs's defaults (8,192 inodes a group, 16 groups a
# flex group) make that 2**17 inodes; the real geometry is in the superblock, which only
# the device shows.
_ZONE_SHIFT = 17
# ext4 without a journal passes over an inode freed less than 60 s ago (360 s while its
# inode-table block is dirty) as long as an older one is free: remember zones a bit longer.
_FREED_MEMORY = 400
_FREED_LOG = "freed-zones"  # "<unix time> <zone> <zone> ..." a line
_FREED_ENOUGH = 256  # inodes freed in a zone worth avoiding it for
_FREED_LOG_LIMIT = 64 * 1024  # past this the log starts again: its old lines are useless anyway


def prepare_slots(tmp_root: Path) -> None:
    """Make the slots areas are made in, spread over the disk (see ``choose_slot``)."""
    _spread(tmp_root)
    for number in range(_SLOTS):
        try:
            os.mkdir(tmp_root / f"{_SLOT_PREFIX}{number}", 0o700)
        except FileExistsError:
            pass


def _spread(tmp_root: Path) -> None:
    """Mark ``tmp_root`` a top of directory hierarchies (ext4's ``chattr +T``), so that each
    slot made in it is placed as ext4 places a top-level directory: in the flex group with
    the fewest directories among those with room, not beside its parent.  Best effort:
    another file system refuses the ioctl and nothing changes."""
    try:
        fd = os.open(tmp_root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        (flags,) = struct.unpack("i", fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(4)))
        if not flags & _FS_TOPDIR_FL:
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, struct.pack("i", flags | _FS_TOPDIR_FL))
    except OSError:
        pass
    finally:
        os.close(fd)


def note_freed(tmp_root: Path, trees: Iterable[Path]) -> None:
    """Remember for a few minutes where the inodes of ``trees`` are on disk; call it just
    before deleting them, so that the areas made meanwhile keep away (``choose_slot``)."""
    counts = _zone_counts(trees)
    zones = sorted(zone for zone, count in counts.items() if count >= _FREED_ENOUGH)
    if not zones:
        return
    line = f"{int(time.time())} {' '.join(map(str, zones))}\n".encode()
    try:
        fd = os.open(tmp_root / _FREED_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError:
        return  # a hint lost: the next build may be slower, nothing else
    try:
        if os.fstat(fd).st_size > _FREED_LOG_LIMIT:
            os.ftruncate(fd, 0)
        os.write(fd, line)
    except OSError:
        pass
    finally:
        os.close(fd)


def _zone_counts(trees: Iterable[Path]) -> dict[int, int]:
    """How many inodes of ``trees`` each zone holds (from directory entries: no stat per file)."""
    counts: dict[int, int] = {}
    stack = []
    for tree in trees:
        try:
            zone = os.lstat(tree).st_ino >> _ZONE_SHIFT
        except OSError:
            continue
        counts[zone] = counts.get(zone, 0) + 1
        stack.append(os.fspath(tree))
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    zone = entry.inode() >> _ZONE_SHIFT
                    counts[zone] = counts.get(zone, 0) + 1
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue  # not a directory, or gone
    return counts


def recently_freed_zones(tmp_root: Path) -> dict[int, int]:
    """The zones ``note_freed`` heard of in the last minutes, with when (unix time) it last did."""
    try:
        fd = os.open(tmp_root / _FREED_LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    with open(fd, "rb") as log:
        text = log.read(2 * _FREED_LOG_LIMIT)
    since = time.time() - _FREED_MEMORY
    zones: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        try:
            when, named = int(fields[0]), [int(field) for field in fields[1:]]
        except (IndexError, ValueError):
            continue  # an empty or torn line: a hint lost
        if when >= since:
            zones.update((zone, when) for zone in named)
    return zones


def choose_slot(tmp_root: Path) -> Path:
    """The slot a new area is made in: the first whose zone, and the zone after it, nothing
    freed in the last minutes.

    An area's snapshots are made in it and keep their inodes when they are committed, and an
    area's files join its slot's flex group.  On ext4 without a journal, each new inode costs
    a pass over every inode of its group freed in the last minutes, while older free ones
    remain: a 20,000-file cold build right after a prune, made where the prune had freed
    the last build's files, took 6.0-9.1 s instead of 2.4-2.8 s.  Builds take the first slot
    until a prune frees its files, then the next, and come back once the minutes are over;
    when every slot's zone was freed lately, the one freed longest ago.
    The slots are made once, spread by ext4 (``prepare_slots``): a directory made per build
    would be placed by ext4 where the fewest directories are, which is just where a prune
    (pybuild's, or another program's) has made room."""
    freed = recently_freed_zones(tmp_root)
    least_recent: tuple[int, Path] | None = None
    for number in range(_SLOTS):
        slot = tmp_root / f"{_SLOT_PREFIX}{number}"
        try:
            zone = os.lstat(slot).st_ino >> _ZONE_SHIFT
        except FileNotFoundError:
            continue  # removed by hand since the root was opened
        # A slot's builds fill its flex group and go on in the next one (by hand, a run of the
        # context benchmark: 22,105 new inodes in the slot's group, 24,211 in the next).
        when = max((freed[z] for z in (zone, zone + 1) if z in freed), default=None)
        if when is None:
            return slot
        if least_recent is None or when < least_recent[0]:
            least_recent = (when, slot)
    if least_recent is None:
        prepare_slots(tmp_root)
        return tmp_root / f"{_SLOT_PREFIX}0"
    return least_recent[1]


class ProcessArea:
    """This process's temp area under one root's ``tmp`` directory."""

    def __init__(self, tmp_root: Path) -> None:
        self.owner_pid = os.getpid()
        slot = choose_slot(tmp_root)
        while True:
            name = f"p{self.owner_pid}-{secrets.token_hex(6)}"
            lock_path = slot / (name + _LOCK_SUFFIX)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A cleaner may have judged the file stale between our open and
            # flock and unlinked it: then we hold a lock on nothing.
            try:
                if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._lock_fd = fd
        self._lock_path = lock_path
        self.path = slot / name
        os.mkdir(self.path, 0o700)

    def new_dir(self, prefix: str = "tmp-") -> Path:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.path))

    def new_file(self, prefix: str = "tmp-") -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=self.path)
        return fd, Path(name)

    def close(self) -> None:
        if self._lock_fd < 0 or os.getpid() != self.owner_pid:
            return
        remove_tree(self.path)
        try:
            os.unlink(self._lock_path)
        except FileNotFoundError:
            pass
        os.close(self._lock_fd)
        self._lock_fd = -1


_areas: dict[tuple[int, str], ProcessArea] = {}
_areas_lock = threading.Lock()


def process_area(tmp_root: Path) -> ProcessArea:
    """The calling process's temp area under ``tmp_root`` (made on first use)."""
    key = (os.getpid(), os.fspath(tmp_root))
    with _areas_lock:
        area = _areas.get(key)
        if area is None:
            area = _areas[key] = ProcessArea(tmp_root)
        return area


@atexit.register
def _close_areas() -> None:
    with _areas_lock:
        pid = os.getpid()
        for (owner, _), area in list(_areas.items()):
            if owner == pid:  # a forked child must not remove its parent's area
                area.close()


def temp_contents(tmp_root: Path) -> list[Path]:
    """What ``tmp_root`` holds besides its fixed layout (the slots and the freed-zones log):
    live temp areas, their lock files, and debris the next ``clean_stale`` removes."""
    found: list[Path] = []
    try:
        names = sorted(os.listdir(tmp_root))
    except FileNotFoundError:
        return found
    for name in names:
        if name == _FREED_LOG:
            continue
        if name.startswith(_SLOT_PREFIX) and os.path.isdir(tmp_root / name):
            found += [tmp_root / name / entry for entry in sorted(os.listdir(tmp_root / name))]
        else:
            found.append(tmp_root / name)
    return found


def _try_lock(lock_path: Path) -> int | None:
    """An fd holding the lock if nobody else does, else None."""
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def clean_stale(tmp_root: Path) -> int:
    """Remove the temp areas of processes that are gone; returns how many."""
    with _areas_lock:
        mine = {area.path.name for (pid, _), area in _areas.items() if pid == os.getpid()}
    try:
        names = os.listdir(tmp_root)
    except FileNotFoundError:
        return 0
    slots = [name for name in names if name.startswith(_SLOT_PREFIX)]
    # areas directly in tmp_root are an older pybuild's
    removed = _clean_areas(tmp_root, [n for n in names if n not in slots and n != _FREED_LOG], mine)
    for slot in slots:
        try:
            removed += _clean_areas(tmp_root / slot, os.listdir(tmp_root / slot), mine)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return removed


def _clean_areas(directory: Path, names: list[str], mine: set[str]) -> int:
    """Remove the dead areas among ``names`` in ``directory`` (a slot)."""
    removed = 0
    present = set(names)
    for name in names:
        if name.endswith(_LOCK_SUFFIX):
            area = name[: -len(_LOCK_SUFFIX)]
            if area in mine:
                continue
            fd = _try_lock(directory / name)
            if fd is None:
                continue
            try:
                remove_tree(directory / area)
                try:
                    os.unlink(directory / name)
                except FileNotFoundError:
                    pass
                removed += 1
            finally:
                os.close(fd)
        elif name + _LOCK_SUFFIX not in present and name not in mine:
            # No lock file: its owner had removed the lock (it was exiting) or
            # died before making one.  Check again now, the listing may be old.
            if not os.path.exists(directory / (name + _LOCK_SUFFIX)):
                remove_tree(directory / name)
                removed += 1
    return removed
