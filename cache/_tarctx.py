"""A build context sent as a tar stream (``pybuild build - < ctx.tar``).

The tar is unpacked into a temp directory of the pybuild root and then hashed
like any context directory.  Unpacking is defensive, since the tar is data
from outside: names that climb out (``..``) are refused and absolute names
are taken relative to the context, as Docker does; nothing is ever written
through a symlink (a parent that is not a real directory is refused, and an
existing final entry is replaced, never opened); hard links must point at a
file unpacked before; devices are skipped; and the unpacked size and entry
count have budgets.  Plain, gzip, bzip2 and xz tars are accepted.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zlib
from pathlib import Path
from typing import BinaryIO

from pybuild.errors import ContextError

from ._gomatch import go_clean
from ._root import Root
from ._util import remove_tree

DEFAULT_MAX_BYTES = 16 << 30
DEFAULT_MAX_ENTRIES = 1_000_000
_CHUNK = 1 << 20


def _tar_error(message: str) -> ContextError:
    return ContextError(f"the build context tar {message}", hint="send a tar made with `tar -c` of a directory")


def _safe_name(name: str) -> str:
    """The entry's path relative to the context ("." for the context itself)."""
    if "\0" in name:
        raise _tar_error(f"has an entry name with a NUL byte: {name!r}")
    cleaned = go_clean(name)
    if cleaned == ".." or cleaned.startswith("../"):
        raise _tar_error(f"has an entry outside the context: {name!r}")
    return cleaned.lstrip("/") or "."


class _Extractor:
    def __init__(self, dest: Path, max_bytes: int, max_entries: int) -> None:
        self.dest = dest
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.total_bytes = 0
        self.entries = 0
        self.real_dirs: set[str] = {"."}
        self.dir_modes: dict[str, int] = {}

    def _ensure_parents(self, rel: str) -> None:
        parts = rel.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent in self.real_dirs:
                continue
            path = self.dest / parent
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise _tar_error(f"writes {rel!r} below {parent!r}, which is not a directory")
            self.real_dirs.add(parent)

    def _clear(self, rel: str, keep_dir: bool) -> None:
        path = self.dest / rel
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return
        remove_tree(path)
        if stat.S_ISDIR(st.st_mode):
            # forget the directory and everything known below it
            below = rel + "/"
            self.real_dirs = {d for d in self.real_dirs if d != rel and not d.startswith(below)}
            self.dir_modes = {d: m for d, m in self.dir_modes.items() if d != rel and not d.startswith(below)}

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.entries += 1
        if self.entries > self.max_entries:
            raise _tar_error(f"has more than {self.max_entries} entries")
        rel = _safe_name(member.name)
        mode = member.mode & 0o7777
        if rel == ".":
            if member.isdir():
                self.dir_modes["."] = mode
            return
        self._ensure_parents(rel)
        path = self.dest / rel
        if member.isdir():
            self._clear(rel, keep_dir=True)
            if rel not in self.real_dirs:
                os.mkdir(path, 0o700)
                self.real_dirs.add(rel)
            self.dir_modes[rel] = mode
        elif member.isreg():
            self.total_bytes += member.size
            if self.total_bytes > self.max_bytes:
                raise _tar_error(f"unpacks to more than {self.max_bytes} bytes")
            self._clear(rel, keep_dir=False)
            source = tar.extractfile(member)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                with os.fdopen(fd, "wb", closefd=False) as out:
                    if source is not None:
                        while chunk := source.read(_CHUNK):
                            out.write(chunk)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
        elif member.issym():
            self._clear(rel, keep_dir=False)
            os.symlink(member.linkname, path)
        elif member.islnk():
            target = _safe_name(member.linkname)
            target_path = self.dest / target
            try:
                target_mode = os.lstat(target_path).st_mode
            except FileNotFoundError:
                raise _tar_error(f"hard-links {rel!r} to {member.linkname!r}, which comes later or not at all") from None
            if not stat.S_ISREG(target_mode) or any(
                p not in self.real_dirs for p in _parents(target)
            ):
                raise _tar_error(f"hard-links {rel!r} to {member.linkname!r}, which is not a regular file")
            if target == rel:
                return
            self._clear(rel, keep_dir=False)
            os.link(target_path, path, follow_symlinks=False)
        elif member.isfifo():
            self._clear(rel, keep_dir=False)
            os.mkfifo(path, mode)
        # character and block devices are skipped: a context has no use for them

    def finish(self) -> None:
        # deepest first, so a read-only directory is closed after its contents
        for rel in sorted(self.dir_modes, key=lambda r: r.count("/"), reverse=True):
            fd = os.open(self.dest / rel, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                os.fchmod(fd, self.dir_modes[rel])
            finally:
                os.close(fd)


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def extract_context_tar(
    stream: BinaryIO,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> None:
    """Unpack a context tar (optionally compressed) into the empty directory ``dest``."""
    extractor = _Extractor(Path(dest), max_bytes, max_entries)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                extractor.add(tar, member)
        extractor.finish()
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise _tar_error(f"is damaged: {error}") from None
    except OSError as error:
        if error.errno is None:  # gzip/bz2 report bad data as OSError without errno
            raise _tar_error(f"is damaged: {error}") from None
        raise ContextError(
            f"cannot unpack the build context tar: {error.strerror}",
            hint="check free space in the pybuild root",
        ) from None


class TarContext:
    """A context tar unpacked into the pybuild root's temp area; ``path`` is the
    context directory.  Removed on ``close()`` (or, after a crash, by the next
    process that opens the root)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def close(self) -> None:
        remove_tree(self.path.parent)

    def __enter__(self) -> TarContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tar_context(
    root: Root,
    stream: BinaryIO,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_entries: int = DEFAULT_MAX_ENTRIES,
) -> TarContext:
    """Unpack a context tar from ``stream`` into ``root``'s temp area."""
    holder = root.tmp_dir("context-")
    context = TarContext(holder / "context")
    try:
        os.mkdir(context.path, 0o755)
        extract_context_tar(stream, context.path, max_bytes=max_bytes, max_entries=max_entries)
    except BaseException:
        context.close()
        raise
    return context
