"""File operations of a FileOp, run inside the step's root (COPY, ADD, WORKDIR, heredocs).

``apply_file_plan`` runs in a child process that the executor has given a
private mount namespace with the step's overlay rootfs at ``root`` and each
source mounted under ``root`` (``FilePlan.sources``).  It chroots into the
root first, so every path -- a destination, a symlink in the image, a name
from a tar archive -- is resolved by the kernel inside the root and nothing
outside it can be read or written.  The semantics are BuildKit's fileop
copy: wildcards, directory contents, trailing-slash destinations, created
parents, symlinks kept, hardlinks kept, --chown/--chmod, --exclude
(moby/patternmatcher rules, relative to each copied source), ADD auto-extract.
"""

from __future__ import annotations

# Everything this module needs is imported here, at load time: after the
# chroot in apply_file_plan the thread can no longer import from the host.
import errno
import os
import posixpath
import shutil
import stat
from collections.abc import Mapping
from fnmatch import fnmatchcase

from pybuild.cache import DockerIgnore
from pybuild._frozen import frozen
from pybuild.errors import BuildError, ContextError, ImageError, shortened
from pybuild.executors import parse_group, parse_passwd

# ADD's archives are read with oci's hardened tar reader, decompressors and
# unpack budget (imported here, before the chroot, with zstandard and isal).
from pybuild.oci import UNMAPPED_IDS_HINT, TarEntry, TarKind, TarReader, UnpackBudget, open_decompressed, unmapped_ids, unpack_limit

from ._chmod import apply_chmod
from ._ops import Chown, CopyAction, MkdirAction, MkfileAction, RmAction

MAX_SYMLINK_HOPS = 255


# What a copied regular file became in the layer: (target path inside the root,
# permission bits, uid, gid, mtime in ns, size).  Two copies of files with equal
# content and equal facts are the same bytes in the same place of the tree.
FileFacts = tuple[str, int, int, int, int, int]
# A directory the same way: (target, permission bits, uid, gid, mtime in ns).
DirFacts = tuple[str, int, int, int, int]


@frozen
class PlannedCopy:
    """A CopyAction with its source resolved to a path inside the chroot."""

    action: CopyAction
    source_root: str  # where the source is mounted, inside the root ("/" for scratch)
    context_files: bool  # sources from the build context count as uid/gid 0
    selected: tuple[str, ...] | None = None  # context entries the cache key covered (None: all)
    # Files an earlier snapshot already holds with the content the source has now
    # (source path relative to ``source_root`` -> their facts there): one that
    # would get the same facts again is not copied but reported, to be hard-linked.
    reusable: Mapping[str, FileFacts] | None = None
    report: bool = False  # report the facts of each copied file (for a later reuse)
    # Leave the directories of a new tree (nothing of the image there) and their
    # regular files to the caller, who makes them in the upper dir after the
    # overlay is gone (``CopyReport.dirs`` and ``copies``): see ``_LazyDir``.
    defer: bool = False


@frozen
class FilePlan:
    steps: tuple[PlannedCopy | MkdirAction | MkfileAction | RmAction, ...]


@frozen
class CopyReport:
    """What one PlannedCopy did with the regular files it put in directories it made.

    ``files``: source path (relative to the source root) -> facts, for every
    such file, copied or not; ``reused``: those left out because ``reusable``
    had them with the same facts: the caller links them in from the earlier tree.
    """

    files: Mapping[str, FileFacts]
    reused: tuple[str, ...]
    dirs: tuple[DirFacts, ...] = ()  # directories left out: the caller makes them
    copies: tuple[str, ...] = ()  # files left out (source paths): the caller copies them from the source


class _LazyDir:
    """A directory of a copy into a new tree (nothing of the image is there) made
    only when something must be written into it through the overlay.

    With ``PlannedCopy.defer``, a directory that holds only regular files and
    such directories is not made here at all, nor are those files: the caller
    makes the directory after the overlay is gone, with the metadata ``_finish``
    would give it, and copies (or links, ``reusable``) the files into it the way
    ``_copy_new_file`` does.  overlayfs makes each file and directory through its
    work directory, at several times the cost of doing it in the upper dir.
    """

    __slots__ = ("target", "parent", "made")

    def __init__(self, target: str, parent: _LazyDir | None) -> None:
        self.target = target
        self.parent = parent
        self.made = False

    def make(self) -> None:
        if not self.made:
            if self.parent is not None:
                self.parent.make()
            os.mkdir(self.target, 0o700)
            self.made = True


class FileOpError(BuildError):
    reference = "file-op"


# ------------------------------------------------------------------ helpers


def _split(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def resolve_in(base: str, path: str, *, follow_last: bool = True) -> str:
    """``path`` inside ``base`` with symlinks resolved as if ``base`` were ``/``."""
    parts = _split(path)
    resolved = base.rstrip("/") or "/"
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved != (base.rstrip("/") or "/"):
                resolved = posixpath.dirname(resolved)
            continue
        candidate = posixpath.join(resolved, part)
        if (parts or follow_last) and os.path.islink(candidate):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise FileOpError(f"too many levels of symbolic links in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = base.rstrip("/") or "/"
            parts = _split(target) + parts
            continue
        resolved = candidate
    return resolved


class _Owner:
    """Resolves --chown names from the root's own /etc/passwd and /etc/group."""

    def __init__(self, chown: Chown | None) -> None:
        self.ids: tuple[int, int] | None = None
        if chown is not None:
            self.ids = _resolve_chown(chown)


def _resolve_chown(chown: Chown) -> tuple[int, int]:
    def read(path: str) -> str:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    if chown.user.isdigit():
        uid = int(chown.user)
    else:
        entry = next((e for e in parse_passwd(read("/etc/passwd")) if e.name == chown.user), None)
        if entry is None:
            raise FileOpError(f"unable to convert uid/gid chown string to host mapping: can't find uid for user {chown.user}: no such user: {chown.user}")
        uid = entry.uid
    if chown.group is None:
        return uid, uid  # Docker: a user without a group uses the same number as the GID
    if chown.group.isdigit():
        return uid, int(chown.group)
    group = next((g for g in parse_group(read("/etc/group")) if g.name == chown.group), None)
    if group is None:
        raise FileOpError(f"unable to convert uid/gid chown string to host mapping: can't find gid for group {chown.group}: no such group: {chown.group}")
    return uid, group.gid


def _mkdir_parents(path: str, owner: tuple[int, int] | None, mtime: int | None, mode: int = 0o755) -> None:
    """mkdir -p; created directories get ``owner`` and ``mtime``."""
    missing = []
    current = path
    while current not in ("/", "") and not os.path.lexists(current):
        missing.append(current)
        current = posixpath.dirname(current)
    if current not in ("/", "") and not os.path.isdir(current):
        raise FileOpError(f"cannot create directory {path}: {current} is not a directory")
    for directory in reversed(missing):
        os.mkdir(directory, mode)
        os.chmod(directory, mode)
        if owner is not None:
            os.lchown(directory, *owner)
        if mtime is not None:
            os.utime(directory, ns=(mtime * 10**9, mtime * 10**9), follow_symlinks=False)


# ------------------------------------------------------------------ copy


class _Copier:
    def __init__(self, planned: PlannedCopy) -> None:
        self.planned = planned
        self.action = planned.action
        self.owner = _Owner(self.action.chown).ids
        # ``_ids`` when it does not depend on the file
        self._fixed_ids = self.owner if self.owner is not None else (0, 0) if planned.context_files else None
        self.links: dict[tuple[int, int], str] = {}
        self.excludes = _exclude_rules(self.action.exclude_patterns)
        self.reusable: Mapping[str, FileFacts] = planned.reusable or {}
        # source path -> facts of the files put in directories this copy made (None: not asked)
        self.files: dict[str, FileFacts] | None = {} if planned.report or planned.reusable else None
        self.reused: list[str] = []
        self.lazy_dirs: list[DirFacts] = []  # directories left for the caller to make (see _LazyDir)
        self.copies: list[str] = []  # their files to copy, left to the caller too
        self.origin = ""  # the copied directory's path relative to the source root, with a "/"
        self.selected: set[str] | None = None
        if planned.selected is not None:
            # the selected entries and every directory above them
            self.selected = set()
            for relative in planned.selected:
                while relative and relative not in self.selected:
                    self.selected.add(relative)
                    relative = posixpath.dirname(relative)

    # -- entry metadata

    def _ids(self, st: os.stat_result) -> tuple[int, int]:
        if self.owner is not None:
            return self.owner
        if self.planned.context_files:
            return 0, 0
        return st.st_uid, st.st_gid

    def _mode(self, st: os.stat_result) -> int:
        if self.action.chmod:
            return apply_chmod(self.action.chmod, st.st_mode, stat.S_ISDIR(st.st_mode))
        return stat.S_IMODE(st.st_mode)

    def _finish(self, target: str, st: os.stat_result) -> None:
        uid, gid = self._ids(st)
        os.lchown(target, uid, gid)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(target, self._mode(st))
        mtime = self._mtime_ns(st)
        os.utime(target, ns=(mtime, mtime), follow_symlinks=False)

    def _mtime_ns(self, st: os.stat_result) -> int:
        return self.action.mtime * 10**9 if self.action.mtime is not None else st.st_mtime_ns

    # -- selection

    def _in_selection(self, source_path: str) -> bool:
        if self.selected is None:
            return True
        relative = posixpath.relpath(source_path, self.planned.source_root)
        return relative == "." or relative in self.selected

    def _selects(self, origin: str) -> bool:
        """``_in_selection`` of a path already relative to the source root."""
        return self.selected is None or origin in self.selected

    def matches(self) -> list[str]:
        root = self.planned.source_root
        src = self.action.src
        if self.action.allow_wildcard and any(ch in src for ch in "*?["):
            found = self._glob(root, _split(src))
            if not found and not self.action.allow_empty_wildcard:
                raise FileOpError(f"no source files were specified matching {src}")
            return sorted(found)
        path = resolve_in(root, src, follow_last=False)
        if not os.path.lexists(path):
            raise FileOpError(f'failed to calculate checksum: "{src}": not found')
        return [path]

    def _glob(self, directory: str, parts: list[str]) -> list[str]:
        if not parts:
            return [directory]
        head, rest = parts[0], parts[1:]
        if not any(ch in head for ch in "*?["):
            candidate = self._inside(directory, head, rest)
            if os.path.lexists(candidate):
                return self._glob(candidate, rest)
            return []
        try:
            names = sorted(os.listdir(directory))
        except (NotADirectoryError, FileNotFoundError):
            return []
        out = []
        for name in names:
            if fnmatchcase(name, head):
                out.extend(self._glob(self._inside(directory, name, rest), rest))
        return [p for p in out if self._in_selection(p)]

    def _inside(self, directory: str, name: str, rest: list[str]) -> str:
        """``directory/name`` resolved inside the source root: a matched link to ``/``
        (or a ``..`` at the top) stays in the source, not the step's root."""
        root = self.planned.source_root
        return resolve_in(root, posixpath.relpath(posixpath.join(directory, name), root), follow_last=bool(rest))

    # -- copying

    def run(self) -> CopyReport | None:
        sources = self.matches()
        dest = self.action.dest
        dest_dir_hint = dest.endswith("/") or len(sources) > 1
        for source in sources:
            self._copy_one(source, dest, dest_dir_hint)
        if self.files is None:
            return None
        return CopyReport(self.files, tuple(self.reused), tuple(self.lazy_dirs), tuple(self.copies))

    def _copy_or_reuse(self, source: str, origin: str, target: str, st: os.stat_result, lazy: _LazyDir | None) -> None:
        """A new file, unless ``reusable`` says an earlier tree has it with the same facts."""
        assert self.files is not None
        uid, gid = self._fixed_ids or (st.st_uid, st.st_gid)
        mode = self._mode(st) if self.action.chmod else st.st_mode & 0o7777  # stat.S_IMODE, inline: once per file
        facts = (target, mode, uid, gid, self._mtime_ns(st), st.st_size)
        if self.reusable.get(origin) == facts:
            self.reused.append(origin)
        elif lazy is not None:
            self.copies.append(origin)
        else:
            self._copy_new_file(source, target, st)
        self.files[origin] = facts

    def _copy_new_file(self, source: str, target: str, st: os.stat_result) -> None:
        """A regular file into a directory this copy made: nothing there to replace,
        and every change made through descriptors rather than paths."""
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                while os.sendfile(dst, src, None, 1 << 30):
                    pass
                uid, gid = self._ids(st)
                os.fchown(dst, uid, gid)  # first: a chown drops file capabilities
                copy_xattrs(src, dst)
                os.fchmod(dst, self._mode(st))
                mtime = self._mtime_ns(st)
                os.utime(dst, ns=(mtime, mtime))
            finally:
                os.close(dst)
        finally:
            os.close(src)

    def _copy_one(self, source: str, dest: str, dest_dir_hint: bool) -> None:
        name = posixpath.basename(source)  # a followed symlink is copied under its own name (fsutil's Base(src))
        if self.action.follow_symlinks and os.path.islink(source):
            source = resolve_in(self.planned.source_root, posixpath.relpath(source, self.planned.source_root))
            if not os.path.lexists(source):
                raise FileOpError(f"{self.action.src}: symlink points outside the source or to nothing")
        st = os.lstat(source)
        if stat.S_ISDIR(st.st_mode) and self.action.dir_contents_only:
            target = resolve_in("/", dest)
            made = not os.path.lexists(target)  # then nothing is there to merge with
            if self.action.create_dest_path:
                _mkdir_parents(target, self.owner, self.action.mtime)
            elif not os.path.isdir(target):
                raise FileOpError(f"destination {dest} does not exist")
            if not os.path.isdir(target):
                raise FileOpError(f"cannot copy directory {self.action.src} to {dest}: not a directory")
            origin = posixpath.relpath(source, self.planned.source_root)
            self.origin = "" if origin == "." else origin + "/"
            self._copy_tree(source, target, "", fresh=made)
            return
        if self.action.attempt_unpack and stat.S_ISREG(st.st_mode) and _is_archive(source):
            target = resolve_in("/", dest)
            _mkdir_parents(target, self.owner, self.action.mtime)
            _extract(source, target, self.owner)
            return
        existing = resolve_in("/", dest)
        if dest_dir_hint or os.path.isdir(existing):
            directory = existing
            if self.action.create_dest_path:
                _mkdir_parents(directory, self.owner, self.action.mtime)
            target = posixpath.join(directory, name)
        else:
            parent = resolve_in("/", posixpath.dirname(dest) or "/")
            if self.action.create_dest_path:
                _mkdir_parents(parent, self.owner, self.action.mtime)
            target = posixpath.join(parent, posixpath.basename(dest))
        self._copy_entry(source, target, st)

    def _copy_tree(
        self,
        source_dir: str,
        target_dir: str,
        relative: str,
        *,
        fresh: bool = False,
        exclude_state: int = 0,
        lazy: _LazyDir | None = None,
    ) -> bool:
        """Copy the entries of ``source_dir``; True if any was copied.

        ``--exclude`` patterns are matched against each path relative to the
        copied source, with the state of its parent directory (see
        ``DockerIgnore.check``), as fsutil's copier does.  ``lazy``: the
        directory ``target_dir`` is not made yet (``_LazyDir``).
        """
        with os.scandir(source_dir) as entries:
            children = sorted(entries, key=lambda e: e.name)
        copied = False
        # posixpath.join's results, made once per directory (a name holds no "/")
        relative_prefix = relative + "/" if relative else ""
        target_prefix = target_dir if target_dir.endswith("/") else target_dir + "/"
        for entry in children:
            child_relative = relative_prefix + entry.name
            excluded, child_state = self.excludes.check(child_relative, exclude_state) if self.excludes else (False, 0)
            if not self._selects(self.origin + child_relative):
                continue
            st = entry.stat(follow_symlinks=False)
            target = target_prefix + entry.name
            if fresh and self.planned.defer and self.files is not None and not self.excludes and stat.S_ISDIR(st.st_mode):
                node = _LazyDir(target, lazy)
                self._copy_tree(entry.path, target, child_relative, fresh=True, lazy=node)
                if node.made:
                    self._finish(target, st)
                else:
                    self.lazy_dirs.append((target, self._mode(st), *self._ids(st), self._mtime_ns(st)))
                copied = True
                continue
            if lazy is not None and not (stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
                lazy.make()  # anything but a plain file is written through the overlay
            if stat.S_ISDIR(st.st_mode):
                if excluded and not self.excludes.could_include_below(child_relative):  # type: ignore[union-attr]  # excluded only with rules
                    continue
                if not excluded and not fresh and (os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target))):
                    _remove(target)
                if excluded and (os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target))):
                    continue  # only an exception below could need it, and it cannot go there
                created = fresh or not os.path.lexists(target)
                if created:
                    os.mkdir(target, 0o700)
                below = self._copy_tree(entry.path, target, child_relative, fresh=created, exclude_state=child_state)
                if excluded and not below:
                    if created:
                        os.rmdir(target)  # an excluded directory exists only for what an exception keeps
                    continue
                if created:
                    self._finish(target, st)
            elif excluded:
                continue
            elif fresh and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                if self.files is None:
                    self._copy_new_file(entry.path, target, st)
                else:
                    self._copy_or_reuse(entry.path, self.origin + child_relative, target, st, lazy)
            else:
                self._copy_entry(entry.path, target, st)
            copied = True
        return copied

    def _copy_entry(self, source: str, target: str, st: os.stat_result) -> None:
        if os.path.lexists(target):
            if os.path.isdir(target) and not os.path.islink(target):
                if stat.S_ISDIR(st.st_mode):
                    return
                raise FileOpError(f"cannot copy {posixpath.basename(source)}: {target} is a directory")
            os.unlink(target)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            first = self.links.get((st.st_dev, st.st_ino))
            if first is not None:
                os.link(first, target)
                return
            self.links[(st.st_dev, st.st_ino)] = target
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, target, follow_symlinks=False)
        elif stat.S_ISDIR(st.st_mode):
            os.mkdir(target, 0o700)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(target, 0o600)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            os.mknod(target, st.st_mode, st.st_rdev)
        else:
            return  # sockets are not copied, as in BuildKit
        self._finish(target, st)
        if stat.S_ISREG(st.st_mode):
            copy_xattrs(source, target)  # after the chown, which would drop file capabilities


def _exclude_rules(patterns: tuple[str, ...]) -> DockerIgnore | None:
    """COPY/ADD ``--exclude`` patterns, read as moby/patternmatcher reads them."""
    if not patterns:
        return None
    try:
        return DockerIgnore(patterns, source="--exclude")
    except ContextError as error:  # the conversion checks them first; a plan made elsewhere may not have
        raise FileOpError(error.message, hint=error.hint) from None


def copy_xattrs(source: str | int, target: str | int) -> None:
    """User xattrs and file capabilities, as BuildKit copies them (paths or descriptors)."""
    by_path = {"follow_symlinks": False}
    try:
        names = os.listxattr(source, **(by_path if isinstance(source, str) else {}))
    except OSError:
        return
    for name in names:
        if name.startswith(("user.", "security.capability")):
            try:
                value = os.getxattr(source, name, **(by_path if isinstance(source, str) else {}))
                os.setxattr(target, name, value, **(by_path if isinstance(target, str) else {}))
            except OSError:
                pass


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _is_archive(path: str) -> bool:
    """Docker's test: the file, decompressed by its magic bytes, starts with a tar header.

    A compressed file that is not a tar (``app.js.gz``) is copied as it is.
    """
    with open(path, "rb") as f:
        try:
            return TarReader(open_decompressed(f), entry_budget=1).next() is not None
        except ImageError:
            return False


class _Refused(Exception):
    """An archive entry ADD does not unpack; becomes a FileOpError naming it."""


def _extract(archive: str, target: str, owner: tuple[int, int] | None) -> None:
    """Unpack a local tar (plain, gzip, bzip2, xz, zstd) into ``target`` as ADD does.

    The chroot keeps every path inside the root; the unpack budget stops a
    decompression bomb (the step's partial layer is then discarded).  Any
    malformed, refused or failing entry is a ``FileOpError`` naming it.
    """
    name = posixpath.basename(archive)
    with open(archive, "rb") as raw:
        budget = UnpackBudget(unpack_limit(os.fstat(raw.fileno()).st_size), "it")
        reader = TarReader(budget.reader(open_decompressed(raw)))
        unpacker = _Unpacker(target, owner, budget)
        entry: TarEntry | None = None
        try:
            while (entry := reader.next()) is not None:
                unpacker.apply(entry, reader)
            entry = None
            unpacker.finish()
        except ImageError as error:  # malformed, truncated, or over the budget
            raise FileOpError(f"cannot unpack {name}: {error.message}", hint=error.hint) from None
        except _Refused as error:
            assert entry is not None
            raise FileOpError(
                f"refusing archive entry {shortened(entry.display_name())!r} of {name}: {error}",
                hint="the archive tries to write outside its destination or is malformed",
            ) from None
        except (OSError, OverflowError, ValueError) as error:
            what = f"entry {shortened(entry.display_name())!r}" if entry is not None else "the archive"
            reason = os.strerror(error.errno) if isinstance(error, OSError) and error.errno else "its metadata is out of range"
            raise FileOpError(f"cannot unpack {name}: {what}: {reason}") from None


class _Unpacker:
    """Docker's Untar into ``target``: entries replace what is there (a directory
    entry merges into a directory), missing parents are made 0755, directory
    times are set last; ``..`` names, links leaving ``target`` and hard links to
    entries not (yet) unpacked are refused.  Symlinks on the way to an entry are
    resolved inside ``target``, as Docker's chroot into the destination does."""

    def __init__(self, target: str, owner: tuple[int, int] | None, budget: UnpackBudget) -> None:
        self.target = target.rstrip("/") or "/"
        self.owner = owner
        self.budget = budget
        self.dir_times: list[tuple[str, int]] = []
        self._parents: dict[tuple[str, ...], str] = {}  # resolved parents; cleared when links or removals change them

    def _parts(self, name: bytes) -> tuple[str, ...]:
        parts = tuple(os.fsdecode(p) for p in name.split(b"/") if p and p != b".")
        if ".." in parts:
            raise _Refused("it leaves the destination ('..')")
        return parts

    def _place(self, parts: tuple[str, ...]) -> str:
        """Where the entry ``parts`` goes: its parent resolved inside ``target``."""
        if not parts:
            return self.target
        parent = self._parents.get(parts[:-1])
        if parent is None:
            parent = self._parents[parts[:-1]] = resolve_in(self.target, "/".join(parts[:-1]))
        return posixpath.join(parent, parts[-1])

    def apply(self, entry: TarEntry, reader: TarReader) -> None:
        self.budget.charge_entry(entry.size)
        parts = self._parts(entry.name)
        kind = entry.typeflag
        if not parts:
            if kind != TarKind.DIRECTORY:
                raise _Refused("it would replace the destination directory")
            return  # "./": the destination keeps its own metadata, as in Docker
        path = self._place(parts)
        parent = posixpath.dirname(path)
        if not os.path.lexists(parent):
            _mkdir_parents(parent, self.owner, None)
        try:
            existing = os.lstat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not (kind == TarKind.DIRECTORY and stat.S_ISDIR(existing.st_mode)):
            _remove(path)
            self._parents.clear()
            existing = None
        if kind == TarKind.REGULAR:
            self._regular(path, entry, reader)
        elif kind == TarKind.DIRECTORY:
            if existing is None:
                os.mkdir(path, 0o700)
            self._metadata(path, entry)
            self.dir_times.append((path, entry.mtime_ns))
        elif kind == TarKind.HARDLINK:
            self._hardlink(path, entry)
        elif kind == TarKind.SYMLINK:
            self._symlink(path, parts, entry)
        elif kind in (TarKind.CHARDEV, TarKind.BLOCKDEV, TarKind.FIFO):
            if kind == TarKind.FIFO:
                os.mkfifo(path, 0o600)
            else:
                node = stat.S_IFCHR if kind == TarKind.CHARDEV else stat.S_IFBLK
                os.mknod(path, node | 0o600, os.makedev(entry.devmajor, entry.devminor))
            self._metadata(path, entry)

    def _ids(self, entry: TarEntry) -> tuple[int, int]:
        return self.owner if self.owner is not None else (entry.uid, entry.gid)

    def _metadata(self, path: str, entry: TarEntry) -> None:
        os.chown(path, *self._ids(entry), follow_symlinks=False)  # first: a chown clears set-id bits
        os.chmod(path, entry.mode, follow_symlinks=True)  # path is the entry just made, never a symlink
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def _regular(self, path: str, entry: TarEntry, reader: TarReader) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := reader.read_data():
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.fchown(fd, *self._ids(entry))
            os.fchmod(fd, entry.mode)
            os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
        finally:
            os.close(fd)

    def _hardlink(self, path: str, entry: TarEntry) -> None:
        shown = shortened(os.fsdecode(entry.linkname))
        target_parts = self._parts(entry.linkname)
        if not target_parts:
            raise _Refused("its hard link target is the destination directory")
        try:
            os.link(self._place(target_parts), path, follow_symlinks=False)
        except FileNotFoundError:
            raise _Refused(f"its hard link target {shown!r} is not in the archive before it") from None
        except PermissionError:
            raise _Refused(f"its hard link target {shown!r} is a directory") from None

    def _symlink(self, path: str, parts: tuple[str, ...], entry: TarEntry) -> None:
        link = os.fsdecode(entry.linkname)
        # Docker's rule: the link, read from where it stands in the destination (an
        # absolute one from the destination itself), must not lead out of it.
        where = posixpath.join(self.target, *parts[:-1])
        base = self.target if link.startswith("/") else where
        reached = posixpath.normpath(posixpath.join(base, link.lstrip("/")))
        if self.target != "/" and reached != self.target and not reached.startswith(self.target + "/"):
            raise _Refused(f"its symlink target {shortened(link)!r} leads outside the destination")
        os.symlink(link, path)
        self._parents.clear()
        os.chown(path, *self._ids(entry), follow_symlinks=False)
        os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    def finish(self) -> None:
        # Directory times last: creating their children changed them.
        for path, mtime_ns in self.dir_times:
            try:
                os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            except FileNotFoundError:
                continue  # replaced by a later entry


# ------------------------------------------------------------------ other actions


def _mkdir(action: MkdirAction) -> None:
    target = resolve_in("/", action.path)
    owner = _Owner(action.chown).ids
    if os.path.isdir(target):
        return
    if os.path.lexists(target):
        raise FileOpError(f"cannot create directory {action.path}: a file is in the way")
    if action.parents:
        _mkdir_parents(target, owner, action.mtime, action.mode)
    else:
        os.mkdir(target, action.mode)
        if owner:
            os.lchown(target, *owner)


def _mkfile(action: MkfileAction) -> None:
    parent = resolve_in("/", posixpath.dirname(action.path) or "/")
    _mkdir_parents(parent, None, action.mtime)
    target = posixpath.join(parent, posixpath.basename(action.path))
    with open(target, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(action.data)
    os.chmod(target, action.mode)
    owner = _Owner(action.chown).ids
    if owner:
        os.lchown(target, *owner)
    if action.mtime is not None:
        os.utime(target, ns=(action.mtime * 10**9,) * 2)


def _rm(action: RmAction) -> None:
    target = resolve_in("/", action.path, follow_last=False)
    if not os.path.lexists(target):
        if action.allow_not_found:
            return
        raise FileOpError(f"cannot remove {action.path}: not found")
    _remove(target)


def apply_file_plan(root: str, plan: FilePlan) -> tuple[CopyReport | None, ...]:
    """Apply ``plan`` to the filesystem at ``root``, chrooted into it; returns
    the report of each step (None for any but a PlannedCopy asked for one).

    The executor runs this in a thread with its own filesystem context, so
    the chroot is the thread's alone; it is undone before returning, since
    the executor still has mounts to clean up in that thread.
    """
    host_root = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    host_cwd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    old_umask = os.umask(0)
    os.chroot(root)
    os.chdir("/")
    try:
        return _apply(plan)
    finally:
        os.fchdir(host_root)
        os.chroot(".")
        os.fchdir(host_cwd)
        os.umask(old_umask)
        os.close(host_root)
        os.close(host_cwd)


def _apply(plan: FilePlan) -> tuple[CopyReport | None, ...]:
    step: object = None
    reports: list[CopyReport | None] = []
    try:
        for step in plan.steps:
            report = None
            if isinstance(step, PlannedCopy):
                report = _Copier(step).run()
            elif isinstance(step, MkdirAction):
                _mkdir(step)
            elif isinstance(step, MkfileAction):
                _mkfile(step)
            else:
                _rm(step)
            reports.append(report)
        return tuple(reports)
    except OSError as error:
        where = f" {shortened(os.fsdecode(error.filename))}" if error.filename else ""
        if error.errno == errno.EINVAL and (missing := _unmapped_chown(step)):
            raise FileOpError(f"file operation failed:{where}: --chown {missing} is outside the ids this rootless pybuild maps", hint=UNMAPPED_IDS_HINT) from None
        raise FileOpError(f"file operation failed:{where}: {os.strerror(error.errno or errno.EIO)}") from None


def _unmapped_chown(step: object) -> str:
    """The ids of a step's --chown this user namespace lacks (the kernel's EINVAL), in words."""
    action = step.action if isinstance(step, PlannedCopy) else step
    chown = getattr(action, "chown", None)
    if not isinstance(chown, Chown):
        return ""
    return unmapped_ids(*_resolve_chown(chown))
