"""Build-context hashing: what a COPY/ADD source list selects, and its digest.

Selection follows BuildKit: a source is cleaned as an absolute path, so
``../x`` and ``/x`` both mean ``x`` at the context root; a source element may
hold ``*``, ``?`` and ``[...]`` wildcards (Go's ``filepath.Match``, one path
element each); a directory selects its subtree; a symlink named by a source,
or standing for one of its directories, is followed, but only inside the
context (an absolute target or ``..`` stops at the context root), and is an
entry itself, under the path where it really is; symlinks met inside a
selected directory are kept as symlinks.  Paths `.dockerignore` excludes do not exist, and COPY
``--exclude`` patterns apply relative to each matched source.

Each selected entry gets a digest of its relative path's type, permission
and special mode bits, size, symlink target, extended attributes and the
sha256 of its bytes.  Owners count as 0:0 and times never count, so a
``touch`` or a fresh checkout gives the same digest.

Reading is confined to the context: every directory is opened relative to
its parent with ``O_NOFOLLOW`` and every file with ``O_NOFOLLOW`` relative
to its directory, so a path swapped for a symlink meanwhile fails instead of
leading outside.  Only selected files are read; unchanged files are not read
at all when a stat cache remembers them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

from pybuild._frozen import frozen
from pybuild.errors import ContextError

from ._gomatch import BadPattern, compile_element, go_clean, has_wildcards
from ._ignore import DockerIgnore
from ._index import StatKey

_DIGEST_PREFIX = b"pybuild-context/v1\0"
_SMALL_FILE = 1 << 20  # read whole below this; stream with file_digest above
_MAX_LINKS = 255
_HOST_XATTRS = frozenset({"security.selinux"})  # host labelling, not content
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_PROC_FD = os.path.isdir("/proc/self/fd")
FINE_RACY_WINDOW = 0.05  # seconds: the racy window of a file system keeping nanoseconds (settled_before)

@runtime_checkable
class StatCache(Protocol):
    """Remembers file digests by (dev, ino, size, mtime_ns, ctime_ns)."""

    def get_stat_digest(self, key: StatKey) -> str | None: ...

    def get_stat_digests(self, keys: Sequence[StatKey]) -> Mapping[StatKey, str]: ...

    def put_stat_digests(self, rows: Iterable[tuple[StatKey, str]]) -> None: ...


@frozen
class ContextPath:
    """One thing a source matched: ``path`` as named, ``resolved`` after following
    a symlink at ``path`` (inside the context), and the kind of ``resolved``."""

    path: str  # relative to the context; "." is the context itself
    resolved: str
    kind: str  # "dir" | "file" | "symlink" | "other"


@frozen
class HashStats:
    entries: int = 0
    files_hashed: int = 0
    bytes_hashed: int = 0
    stat_cache_hits: int = 0


class ReadEntry(NamedTuple):
    """What a build saw of one context path (``ContextReads``); a tuple, as one is
    made for each path of a context while it is hashed.

    ``whole``: the path's full lstat matters (its bytes, listing or target
    were used); otherwise only that it is still the same object of the same
    type (a directory crossed on the way to a source).  ``content`` is what
    the entry's digest was made of, when that can be checked again without
    the hasher: a file's ``sha256:...`` (no extended attributes), a
    symlink's target, a directory's sorted names (no extended attributes);
    None when it cannot, or when a known selection digest spared reading it.
    """

    stat: os.stat_result
    whole: bool
    content: str | tuple[str, ...] | None = None


class ContextReads:
    """Every context path the hasher looked at, for a later check with lstat
    alone (the build command's fast path for a rebuild with nothing to do).

    Filled by the ``select`` calls of a ``ContextHasher`` given it (each call
    merges its own findings under a lock); ``paths`` maps a path relative to
    the context to its ``ReadEntry``, ``absent`` holds paths whose absence
    was relied on.  ``started_ns`` is when the earliest call began: a path
    changed after that within the clock's granularity may keep its
    signature ("racy", as git says).  ``consistent`` is False when one path
    was seen in two states (changed during the build): nothing about it can
    be trusted then.
    """

    def __init__(self) -> None:
        self.paths: dict[str, ReadEntry] = {}
        self.absent: set[str] = set()
        self.started_ns: int | None = None
        self.consistent = True
        self._lock = threading.Lock()

    def merge(self, paths: Mapping[str, ReadEntry], absent: Iterable[str], started_ns: int) -> None:
        with self._lock:
            self.started_ns = started_ns if self.started_ns is None else min(self.started_ns, started_ns)
            self.absent.update(absent)
            for rel, entry in paths.items():
                self._add(rel, entry)
            if self.absent & self.paths.keys():
                self.consistent = False

    def _add(self, rel: str, entry: ReadEntry) -> None:
        old = self.paths.get(rel)
        if old is None:
            self.paths[rel] = entry
            return
        if _signature(old.stat) != _signature(entry.stat):
            self.consistent = False
        if entry.whole and (not old.whole or old.content is None):
            self.paths[rel] = entry


def _signature(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


class _JobReads:
    """One ``select`` call's findings, merged into the ``ContextReads`` at its end."""

    def __init__(self) -> None:
        self.paths: dict[str, ReadEntry] = {}
        self.absent: set[str] = set()
        self.listings: dict[str, tuple[str, ...]] = {}
        self.dir_xattrs: dict[str, bytes] = {}

    def seen(self, rel: str, st: os.stat_result) -> None:
        if rel not in self.paths:
            self.paths[rel] = ReadEntry(st, whole=False)

    def whole(self, rel: str, st: os.stat_result, content: str | tuple[str, ...] | None = None) -> None:
        old = self.paths.get(rel)
        if old is None or not old.whole or content is not None:
            self.paths[rel] = ReadEntry(st, whole=True, content=content)

    def file(self, rel: str, st: os.stat_result, content: str | None, xattrs: bytes) -> None:
        self.whole(rel, st, content if not xattrs else None)

    def finished(self) -> tuple[dict[str, ReadEntry], set[str]]:
        """The paths, each listed directory with its names (unless it has extended attributes)."""
        for rel, names in self.listings.items():
            entry = self.paths.get(rel)
            if entry is not None and not self.dir_xattrs.get(rel):
                self.paths[rel] = ReadEntry(entry.stat, whole=True, content=names)
        return self.paths, self.absent


@frozen
class EntryChanges:
    """How two selections' entries differ, by relative path."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    modified: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.modified)

    def describe(self, limit: int = 3) -> str:
        """A short text such as ``src/main.py changed, b.txt added (+2 more)``."""
        items = (
            [f"{p} changed" for p in self.modified]
            + [f"{p} added" for p in self.added]
            + [f"{p} removed" for p in self.removed]
        )
        text = ", ".join(items[:limit])
        if len(items) > limit:
            text += f" (+{len(items) - limit} more)"
        return text


def diff_entries(old: Mapping[str, str], new: Mapping[str, str]) -> EntryChanges:
    """What changed between two ``Selection.entries`` (e.g. the last build's and this one's)."""
    return EntryChanges(
        added=tuple(sorted(new.keys() - old.keys())),
        removed=tuple(sorted(old.keys() - new.keys())),
        modified=tuple(sorted(p for p in new.keys() & old.keys() if new[p] != old[p])),
    )


@frozen
class Selection:
    """The entries some sources select from a context, each with its digest.

    When every selected file still has the stat key it had when this exact
    selection was last hashed (its *fingerprint* is known), the digest comes
    from the index and ``entries`` are computed only if someone asks for
    them: a no-op rebuild of a big context then costs a directory walk.
    """

    sources: tuple[str, ...]
    excludes: tuple[str, ...]
    known_entries: Mapping[str, str] | None  # relative path -> entry digest (None: not computed)
    root_paths: Mapping[str, tuple[ContextPath, ...]]  # source -> what it matched
    stats: HashStats = field(default_factory=HashStats, compare=False)
    known_digest: str | None = field(default=None, compare=False)
    fingerprint: str | None = field(default=None, compare=False)
    hasher: ContextHasher | None = field(default=None, compare=False, repr=False)

    @property
    def entries(self) -> Mapping[str, str]:
        if self.known_entries is None:
            assert self.hasher is not None
            full = self.hasher.select(self.sources, excludes=self.excludes, allow_empty_wildcard=True, use_fingerprint=False)
            object.__setattr__(self, "known_entries", full.entries)
        return self.known_entries  # type: ignore[return-value]  # set just above

    def digest(self) -> str:
        """sha256 over every entry's path and digest, in path order."""
        cached = self.__dict__.get("_digest") or self.known_digest
        if cached is None:
            h = hashlib.sha256(_DIGEST_PREFIX)
            for path in sorted(self.entries):
                h.update(b"%s\0%s\n" % (os.fsencode(path), self.entries[path].encode()))
            cached = "sha256:" + h.hexdigest()
            cache = self.hasher.stat_cache if self.hasher is not None else None
            if self.fingerprint is not None and hasattr(cache, "put_selection_digest"):
                cache.put_selection_digest(self.fingerprint, cached)  # type: ignore[union-attr]  # an optional method of the StatCache: hasattr checked
        object.__setattr__(self, "_digest", cached)
        return cached


# -- entry digests ---------------------------------------------------------


def _entry_digest(kind: bytes, mode: int, size: int, extra: bytes, xattrs: bytes, content: str) -> str:
    data = b"%s\0%o\0%d\0%s\0%s\0%s" % (kind, stat.S_IMODE(mode), size, extra, xattrs, content.encode())
    return "sha256:" + hashlib.sha256(data).hexdigest()


# A file type's name in an entry's digest; any other type is a socket.
_KINDS = {
    stat.S_IFREG: b"file",
    stat.S_IFDIR: b"dir",
    stat.S_IFLNK: b"symlink",
    stat.S_IFCHR: b"char",
    stat.S_IFBLK: b"block",
    stat.S_IFIFO: b"fifo",
}


def _kind(mode: int) -> bytes:
    return _KINDS.get(stat.S_IFMT(mode), b"socket")


def _encode_xattrs(target: int | str) -> bytes:
    """Sorted name=value pairs of a file's extended attributes."""
    try:
        names = os.listxattr(target, follow_symlinks=False) if isinstance(target, str) else os.listxattr(target)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return b""
        raise
    names = [n for n in names if n not in _HOST_XATTRS]
    if not names:
        return b""
    parts = []
    for name in sorted(names):
        try:
            if isinstance(target, str):
                value = os.getxattr(target, name, follow_symlinks=False)
            else:
                value = os.getxattr(target, name)
        except OSError:
            continue  # removed meanwhile, or not readable
        parts.append(b"%s=%d:%s;" % (os.fsencode(name), len(value), value))
    return b"".join(parts)


def _stat_key(st: os.stat_result) -> StatKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_file(dir_fd: int, name: str, rel: str) -> tuple[str, os.stat_result, bytes, bool]:
    """sha256 of a regular file's bytes, the stat it was read under, its
    xattrs, and whether it stayed unchanged while read."""
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as error:
        raise _read_error(rel, error) from None
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise _changed(rel)
        if before.st_size < _SMALL_FILE:
            chunks = []
            while chunk := os.read(fd, _SMALL_FILE):
                chunks.append(chunk)
            data = b"".join(chunks)
            h = hashlib.sha256(data)
            size = len(data)
        else:
            with open(fd, "rb", buffering=0, closefd=False) as f:
                h = hashlib.file_digest(f, "sha256")
            size = before.st_size
        xattrs = _encode_xattrs(fd)
        after = os.fstat(fd)
    except OSError as error:
        raise _read_error(rel, error) from None
    finally:
        os.close(fd)
    unchanged = _stat_key(before) == _stat_key(after) and size == before.st_size
    return "sha256:" + h.hexdigest(), before, xattrs, unchanged


def _changed(rel: str) -> ContextError:
    return ContextError(
        f"{rel} in the build context changed while it was read",
        hint="do not modify the context during a build; run the build again",
    )


def _read_error(rel: str, error: OSError) -> ContextError:
    if error.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO):
        return _changed(rel)
    return ContextError(
        f"cannot read {rel} in the build context: {error.strerror}",
        hint="make it readable, or exclude it in .dockerignore",
    )


class _Job:
    """One ``select`` call: the open context, its entries and counters."""

    def __init__(self, hasher: ContextHasher, excludes: DockerIgnore | None) -> None:
        self.hasher = hasher
        self.context_dir = hasher.context_dir
        self.ignore = hasher.ignore
        self.excludes = excludes
        self.entries: dict[str, str] = {}
        self.walked: set[str] = set()
        # regular files met while walking, by directory: looked up in the stat
        # cache in one batch at the end (one query per directory was the
        # largest cost of a no-op rebuild of a big context)
        self.pending: list[tuple[str, list[tuple[str, str, os.stat_result]]]] = []
        self.new_stat_rows: list[tuple[StatKey, str]] = []
        self.files_hashed = 0
        self.bytes_hashed = 0
        self.cache_hits = 0
        self.started_ns = time.time_ns()
        self.racy_before_ns = self.started_ns - hasher.racy_window_ns
        self.fine_racy_before_ns = self.started_ns - min(hasher.fine_racy_window_ns, hasher.racy_window_ns)
        self.reads = _JobReads() if hasher.reads is not None else None
        try:
            self.root_fd = os.open(self.context_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as error:
            raise ContextError(
                f"cannot read the build context {self.context_dir}: {error.strerror}",
                hint="check that the context directory exists and is readable",
            ) from None

    def close(self) -> None:
        os.close(self.root_fd)

    # -- errors -------------------------------------------------------------

    def _error(self, rel: str, error: OSError) -> ContextError:
        return _read_error(rel, error)

    # -- resolving source paths -----------------------------------------------

    def hidden(self, rel: str, is_dir: bool) -> bool:
        """Does .dockerignore make this path absent from the context?"""
        if not self.ignore or rel == ".":
            return False
        return self.ignore.matches(rel) and not (is_dir and self.ignore.could_include_below(rel))

    def lstat(self, rel: str) -> os.stat_result | None:
        try:
            st = os.lstat(os.path.join(self.context_dir, rel))
        except (FileNotFoundError, NotADirectoryError):
            if self.reads is not None:
                self.reads.absent.add(rel)
            return None
        except OSError as error:
            raise self._error(rel, error) from None
        if self.reads is not None:
            self.reads.seen(rel, st)
        return st

    def resolve(self, parts: Sequence[str], follow_final: bool, followed: list[str] | None = None) -> str | None:
        """Resolve a path inside the context as if the context were ``/``: each
        symlink is followed (``..`` and absolute targets stop at the context
        root).  None if it does not exist; the result holds no symlinks.
        ``followed`` gets where each symlink followed is (a path without symlinks)."""
        current: list[str] = []
        remaining = list(reversed(parts))
        links = 0
        while remaining:
            part = remaining.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if current:
                    current.pop()
                continue
            rel = "/".join([*current, part])
            st = self.lstat(rel)
            if st is None or self.hidden(rel, stat.S_ISDIR(st.st_mode)):
                return None
            if stat.S_ISLNK(st.st_mode) and (remaining or follow_final):
                links += 1
                if links > _MAX_LINKS:
                    raise ContextError(
                        f"too many levels of symbolic links at {rel} in the build context",
                        hint="a symlink in the context points at itself through others",
                    )
                target = os.readlink(os.path.join(self.context_dir, rel))
                if self.reads is not None:
                    self.reads.whole(rel, st, target)
                if followed is not None:
                    followed.append(rel)
                if target.startswith("/"):
                    current = []
                remaining.extend(reversed(target.split("/")))
                continue
            if remaining and not stat.S_ISDIR(st.st_mode):
                return None
            current.append(part)
        return "/".join(current) or "."

    def _kind_of(self, rel: str) -> str:
        if rel == ".":
            st: os.stat_result | None = os.lstat(self.context_dir)
            if self.reads is not None:
                self.reads.seen(rel, os.lstat(self.context_dir))
        else:
            st = self.lstat(rel)
        if st is None:
            return "other"
        return {b"dir": "dir", b"file": "file", b"symlink": "symlink"}.get(_kind(st.st_mode), "other")

    def match_source(self, source: str, allow_empty_wildcard: bool) -> tuple[ContextPath, ...]:
        rel = go_clean("/" + source).lstrip("/")
        parts = rel.split("/") if rel else []
        wild = next((i for i, part in enumerate(parts) if has_wildcards(part)), None)
        # As in BuildKit, the part before the first wildcard is a plain path:
        # a backslash there is part of a name, not an escape.
        if wild is None:
            name = "/".join(parts) or "."
            resolved = self.resolve(parts, follow_final=True)
            if resolved is None:
                raise _not_found(name, "not found")
            return (ContextPath(name, resolved, self._kind_of(resolved)),)

        prefix = parts[:wild]
        base = self.resolve(prefix, follow_final=True)
        matches: list[tuple[str, str]] = []
        if base is not None and self._kind_of(base) == "dir":
            try:
                matchers = [compile_element(p) for p in parts[wild:]]
            except BadPattern:
                raise ContextError(
                    f"invalid wildcard in source {source!r}",
                    hint="check the [...] classes and backslashes",
                ) from None
            self._expand(base, "/".join(prefix), matchers, matches)
        result = []
        for named, real in matches:
            st = self.lstat(real)
            target = real
            if st is not None and stat.S_ISLNK(st.st_mode):
                followed = self.resolve(real.split("/"), follow_final=True)
                if followed is None:
                    raise _not_found(named, "not found (a dangling symlink)")
                target = followed
            result.append(ContextPath(named, target, self._kind_of(target)))
        if not result and not allow_empty_wildcard:
            raise _not_found(rel, "no files match")
        return tuple(result)

    def _expand(self, real_dir: str, named_dir: str, matchers: list[Callable[[str], bool]], out: list[tuple[str, str]]) -> None:
        """Wildcard elements, one directory level at a time, like filepath.Match
        over a walk that does not follow symlinks."""
        try:
            with os.scandir(os.path.join(self.context_dir, real_dir)) as it:
                children = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
            if self.reads is not None:  # the names matter: one more or less changes what matches
                self.reads.whole(real_dir, os.lstat(os.path.join(self.context_dir, real_dir)))
                self.reads.listings[real_dir] = tuple(name for name, _ in children)
        except OSError as error:
            raise self._error(real_dir, error) from None
        match, rest = matchers[0], matchers[1:]
        for name, is_dir in children:
            if not match(name):
                continue
            real = name if real_dir == "." else f"{real_dir}/{name}"
            if self.hidden(real, is_dir):
                continue
            named = f"{named_dir}/{name}" if named_dir else name
            if not rest:
                out.append((named, real))
            elif is_dir:
                self._expand(real, named, rest, out)

    # -- walking and hashing ----------------------------------------------------

    def open_dir(self, rel: str) -> int:
        """An fd for a context directory, opened one element at a time without
        following symlinks."""
        fd = os.dup(self.root_fd)
        if rel == ".":
            return fd
        try:
            for part in rel.split("/"):
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = next_fd
        except OSError as error:
            os.close(fd)
            raise self._error(rel, error) from None
        return fd

    def add_root(self, match: ContextPath) -> None:
        if match.path != match.resolved:
            self._add_links(match)
        rel = match.resolved
        if rel in self.walked:
            return
        self.walked.add(rel)
        if rel == ".":
            fd = self.open_dir(".")
            try:
                st = os.fstat(fd)
                self._walk(fd, ".", 0, 0, 0)
                xattrs = _encode_xattrs(fd)
                self._note_dir(".", st, xattrs)
                self.entries["."] = _entry_digest(b"dir", st.st_mode, 0, b"", xattrs, "")
            except OSError as error:
                raise self._error(".", error) from None
            finally:
                os.close(fd)
            return

        # the .dockerignore state of the root's parents
        state = 0
        parts = rel.split("/")
        if self.ignore:
            for depth in range(1, len(parts)):
                _, state = self.ignore.check("/".join(parts[:depth]), state)
            ignored, state = self.ignore.check(rel, state)
        else:
            ignored = False
        parent_fd = self.open_dir("/".join(parts[:-1]) or ".")
        name = parts[-1]
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
                try:
                    below = self._walk(fd, rel, state, 0, len(rel) + 1)
                    if not ignored or below:
                        xattrs = _encode_xattrs(fd)
                        self._note_dir(rel, st, xattrs)
                        self.entries[rel] = _entry_digest(b"dir", st.st_mode, 0, b"", xattrs, "")
                    else:
                        raise _not_found(rel, "not found (excluded by .dockerignore)")
                finally:
                    os.close(fd)
            elif not ignored:
                self._add_entries(parent_fd, [(rel, name, st)])
        except OSError as error:
            raise self._error(rel, error) from None
        finally:
            os.close(parent_fd)

    def _add_links(self, match: ContextPath) -> None:
        """Entries for the symlinks a source went through: those its directories
        crossed, then the one it named, each where it really is.  The named path
        cannot be opened as it is when a directory of it is a symlink, as every
        open refuses to follow one; when none is, this is the named symlink
        alone, as it always was."""
        parts = match.path.split("/")
        crossed: list[str] = []
        parent = self.resolve(parts[:-1], follow_final=True, followed=crossed) if len(parts) > 1 else "."
        if parent is None:  # it resolved a moment ago
            raise _changed(match.path)
        named = parts[-1] if parent == "." else f"{parent}/{parts[-1]}"
        if named != match.resolved:  # else the name is no symlink: only its directories were
            crossed.append(named)
        for rel in crossed:
            if rel not in self.entries:
                self._add_single(rel)

    def _add_single(self, rel: str) -> None:
        parts = rel.split("/")
        parent_fd = self.open_dir("/".join(parts[:-1]) or ".")
        try:
            st = os.stat(parts[-1], dir_fd=parent_fd, follow_symlinks=False)
            self._add_entries(parent_fd, [(rel, parts[-1], st)])
        except OSError as error:
            raise self._error(rel, error) from None
        finally:
            os.close(parent_fd)

    def _walk(self, dir_fd: int, rel: str, ign_state: int, exc_state: int, base_len: int) -> bool:
        """Add the entries below a directory; True if any was added."""
        prefix = "" if rel == "." else rel + "/"
        ignore = self.ignore if self.ignore else None
        excludes = self.excludes if self.excludes else None
        try:
            with os.scandir(dir_fd) as it:
                children = [(e.name, e.stat(follow_symlinks=False)) for e in it]
        except OSError as error:
            raise self._error(rel, error) from None
        if self.reads is not None:
            self.reads.listings[rel] = tuple(sorted(name for name, _ in children))
        added = False
        leaves: list[tuple[str, str, os.stat_result]] = []
        for name, st in children:
            child = prefix + name
            ignored, child_ign = ignore.check(child, ign_state) if ignore else (False, 0)
            excluded, child_exc = excludes.check(child[base_len:], exc_state) if excludes else (False, 0)
            if stat.S_ISDIR(st.st_mode):
                if ignored and not ignore.could_include_below(child):  # type: ignore[union-attr]  # ignored is true only with a matcher
                    continue
                if excluded and not excludes.could_include_below(child[base_len:]):  # type: ignore[union-attr]  # excluded is true only with a matcher
                    continue
                try:
                    sub_fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                except PermissionError:
                    if ignored or excluded:
                        continue  # excluded anyway; only an exception could have needed it (as BuildKit)
                    raise self._error(child, PermissionError(errno.EACCES, os.strerror(errno.EACCES))) from None
                except OSError as error:
                    raise self._error(child, error) from None
                try:
                    below = self._walk(sub_fd, child, child_ign, child_exc, base_len)
                    if below or not (ignored or excluded):
                        xattrs = _encode_xattrs(sub_fd)
                        self._note_dir(child, st, xattrs)
                        self.entries[child] = _entry_digest(b"dir", st.st_mode, 0, b"", xattrs, "")
                        added = True
                finally:
                    os.close(sub_fd)
            elif not (ignored or excluded):
                leaves.append((child, name, st))
        if leaves:
            regular = [leaf for leaf in leaves if stat.S_ISREG(leaf[2].st_mode)]
            others = [leaf for leaf in leaves if not stat.S_ISREG(leaf[2].st_mode)]
            if regular:
                self.pending.append((rel, regular))
            if others:
                self._add_entries(dir_fd, others)
            added = True
        return added

    def fingerprint(self, sources: Sequence[str], excludes: Sequence[str]) -> str | None:
        """What this selection's digest depends on, cheaply: paths, the stat keys
        of regular files, the digests of everything else.  None when a file
        changed too recently for its stat key to be trusted."""
        h = hashlib.sha256(b"pybuild-selection/v1\0")
        h.update(repr((tuple(sources), tuple(excludes), self.ignore.patterns if self.ignore else ())).encode())
        for rel in sorted(self.entries):
            h.update(b"%s\0%s\n" % (os.fsencode(rel), self.entries[rel].encode()))
        for rel_dir, leaves in self.pending:
            for rel, _, st in leaves:
                if not self.settled(st.st_ctime_ns):
                    return None
                h.update(b"%s\0%d:%d:%d:%d:%d\n" % ((os.fsencode(rel),) + _stat_key(st)))
        return "sha256:" + h.hexdigest()

    def finish(self) -> None:
        """Digests of the regular files the walks deferred: stat cache first, then reading."""
        if not self.pending:
            return
        cache = self.hasher.stat_cache
        keys = [_stat_key(st) for _, leaves in self.pending for _, _, st in leaves]
        known = cache.get_stat_digests(keys) if cache is not None else {}
        for rel_dir, leaves in self.pending:
            misses = [(rel, name) for rel, name, st in leaves if _stat_key(st) not in known]
            read: dict[str, tuple[str, os.stat_result, bytes]] = {}
            if misses:
                fd = self.open_dir(rel_dir)
                try:
                    read = dict(zip((rel for rel, _ in misses), self._read_all(fd, misses)))
                finally:
                    os.close(fd)
            for rel, _, st in leaves:
                if rel in read:
                    content, st, xattrs = read[rel]
                else:
                    content, xattrs = known[_stat_key(st)], b""
                    self.cache_hits += 1
                if self.reads is not None:
                    self.reads.file(rel, st, content, xattrs)
                self.entries[rel] = _entry_digest(b"file", st.st_mode, st.st_size, b"", xattrs, content)
        self.pending.clear()

    def note_unhashed(self) -> None:
        """The files a known selection digest spared reading, without their content
        (looking each up in the stat cache would cost a no-op build more than the walk)."""
        if self.reads is None:
            return
        for _, leaves in self.pending:
            for rel, _, st in leaves:
                self.reads.whole(rel, st)

    def _note_dir(self, rel: str, st: os.stat_result, xattrs: bytes) -> None:
        if self.reads is not None:
            self.reads.whole(rel, st)
            self.reads.dir_xattrs[rel] = xattrs

    def note_done(self) -> None:
        """Hand this call's findings to the hasher's ``ContextReads``."""
        if self.reads is not None and self.hasher.reads is not None:
            paths, absent = self.reads.finished()
            self.hasher.reads.merge(paths, absent, self.started_ns)

    def _xattrs_at(self, dir_fd: int, name: str, rel: str) -> bytes:
        if _PROC_FD:
            return _encode_xattrs(f"/proc/self/fd/{dir_fd}/{name}")
        return _encode_xattrs(os.path.join(self.context_dir, rel))

    def _add_entries(self, dir_fd: int, leaves: list[tuple[str, str, os.stat_result]]) -> None:
        """Entries for the non-directories of one directory.

        Regular files are looked up in the stat cache together and read only
        if missing there.  Only files without extended attributes are ever
        remembered, so a hit also means "no xattrs" (adding one changes the
        ctime, hence the key) and needs no listxattr call.
        """
        cache = self.hasher.stat_cache
        keys = [_stat_key(st) for _, _, st in leaves if stat.S_ISREG(st.st_mode)]
        known = cache.get_stat_digests(keys) if cache is not None and keys else {}
        misses = [(rel, name) for rel, name, st in leaves if stat.S_ISREG(st.st_mode) and _stat_key(st) not in known]
        read = dict(zip((rel for rel, _ in misses), self._read_all(dir_fd, misses)))
        for rel, name, st in leaves:
            try:
                mode = st.st_mode
                if stat.S_ISREG(mode):
                    if rel in read:
                        content, st, xattrs = read[rel]
                    else:
                        content, xattrs = known[_stat_key(st)], b""
                        self.cache_hits += 1
                    digest = _entry_digest(b"file", st.st_mode, st.st_size, b"", xattrs, content)
                    if self.reads is not None:
                        self.reads.file(rel, st, content, xattrs)
                elif stat.S_ISLNK(mode):
                    link = os.readlink(name, dir_fd=dir_fd)
                    xattrs = self._xattrs_at(dir_fd, name, rel)
                    digest = _entry_digest(b"symlink", mode, 0, os.fsencode(link), xattrs, "")
                    if self.reads is not None:
                        self.reads.whole(rel, st, link if not xattrs else None)
                else:
                    kind = _kind(mode)
                    extra = b"%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)) if kind in (b"char", b"block") else b""
                    digest = _entry_digest(kind, mode, 0, extra, self._xattrs_at(dir_fd, name, rel), "")
                    if self.reads is not None:
                        self.reads.whole(rel, st)
            except OSError as error:
                raise self._error(rel, error) from None
            self.entries[rel] = digest

    def _read_all(self, dir_fd: int, files: list[tuple[str, str]]) -> list[tuple[str, os.stat_result, bytes]]:
        """Read and hash files of one directory.

        Sequential on purpose: reader threads were measured (2 vCPUs) to
        gain nothing, as the per-file Python work holds the GIL anyway.
        """
        results = [_read_file(dir_fd, name, rel) for rel, name in files]
        out = []
        for content, before, xattrs, cacheable in results:
            self.files_hashed += 1
            self.bytes_hashed += before.st_size
            # "Racy" files, changed within the window before now, could change
            # again without a new mtime/ctime tick: do not remember them.
            if cacheable and not xattrs and self.settled(before.st_ctime_ns):
                self.new_stat_rows.append((_stat_key(before), content))
            out.append((content, before, xattrs))
        return out

    def settled(self, ctime_ns: int) -> bool:
        """Whether a file with this ctime, seen now, can be known by its stat key
        (``settled_before``)."""
        return settled_before(ctime_ns, self.racy_before_ns, self.fine_racy_before_ns)

    def stats(self) -> HashStats:
        return HashStats(len(self.entries), self.files_hashed, self.bytes_hashed, self.cache_hits)


def settled_before(ctime_ns: int, racy_before_ns: int, fine_racy_before_ns: int) -> bool:
    """Whether any later change of a file must give it another ctime ("racy", as git says).

    A change at or after the hash started gets a ctime of at least the start less
    one kernel clock tick (ctimes come from the coarse clock), truncated to the
    file system's granularity.  A ctime with digits below the millisecond comes
    from a file system keeping (nearly) nanoseconds, so a ctime older than the
    start by more than a tick plus that is settled: ``fine_racy_before_ns``
    (the start less 50 ms: ticks are 10 ms at most).  Any other ctime may be
    whole seconds (or 10 ms, 2 s), so it must be older than
    ``racy_before_ns`` (the start less a second): a file touched a moment
    before a build is then read again by the next one, a second later, for
    nothing (the rebuild after a ``touch`` of every file re-read them all).
    """
    return ctime_ns < racy_before_ns or (ctime_ns % 1_000_000 != 0 and ctime_ns < fine_racy_before_ns)


def _not_found(rel: str, what: str) -> ContextError:
    return ContextError(
        f'failed to compute cache key: "/{"" if rel == "." else rel}": {what}',
        hint="the path must exist inside the build context and not be excluded by .dockerignore",
    )


class ContextHasher:
    """Selects and hashes files of one build context directory.

    ``stat_cache`` (the cache index, usually) lets unchanged files skip
    re-reading.  Files whose ctime is within ``racy_window`` seconds of the
    hash (``fine_racy_window`` where the file system keeps nanoseconds: see
    ``settled_before``) are not remembered, since a change in the same clock
    tick could go unseen.  Thread-safe: concurrent ``select`` calls share nothing.
    """

    def __init__(
        self,
        context_dir: Path,
        ignore: DockerIgnore | None = None,
        stat_cache: StatCache | None = None,
        *,
        racy_window: float = 1.0,
        fine_racy_window: float = FINE_RACY_WINDOW,
        reads: ContextReads | None = None,
    ) -> None:
        self.context_dir = Path(context_dir).absolute()
        self.ignore = ignore if ignore is not None else DockerIgnore()
        self.stat_cache = stat_cache
        self.racy_window_ns = int(racy_window * 1e9)
        self.fine_racy_window_ns = int(fine_racy_window * 1e9)  # never more than racy_window: see settled_before
        self.reads = reads  # every path looked at goes there too, when given

    def select(
        self,
        sources: Sequence[str],
        *,
        excludes: Sequence[str] = (),
        allow_empty_wildcard: bool = False,
        use_fingerprint: bool = True,
    ) -> Selection:
        """The entries ``sources`` select (COPY/ADD semantics), hashed.

        ContextError names a source that matches nothing (a wildcard that
        matches nothing too, unless ``allow_empty_wildcard``).
        """
        if isinstance(sources, str):
            raise TypeError("sources must be a sequence of paths, not one string")
        exclude_rules = DockerIgnore(tuple(excludes), source="--exclude") if excludes else None
        job = _Job(self, exclude_rules)
        fingerprint = known = None
        try:
            root_paths = {}
            for source in sources:
                matches = job.match_source(source, allow_empty_wildcard)
                root_paths[source] = matches
                for match in matches:
                    job.add_root(match)
            if use_fingerprint and hasattr(self.stat_cache, "get_selection_digest"):
                fingerprint = job.fingerprint(sources, excludes)
                if fingerprint is not None:
                    known = self.stat_cache.get_selection_digest(fingerprint)  # type: ignore[union-attr]  # an optional method of the StatCache: hasattr checked
            if known is None:
                job.finish()
            else:
                job.note_unhashed()
            job.note_done()
        finally:
            job.close()
        if job.new_stat_rows and self.stat_cache is not None:
            self.stat_cache.put_stat_digests(job.new_stat_rows)
        return Selection(
            tuple(sources), tuple(excludes), None if known else job.entries, root_paths, job.stats(),
            known_digest=known, fingerprint=fingerprint, hasher=self,
        )

    def whole(self) -> Selection:
        """Everything in the context that .dockerignore keeps (``RUN --mount=type=bind``)."""
        return self.select(["."])
