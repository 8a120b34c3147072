"""Small helpers shared by the store modules: digests, fsync, removal, processes."""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

from pybuild.errors import StoreError

_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
# Snapshot ids and similar names become directory names: keep them to a
# safe alphabet so no id can name "..", a path or a hidden file.
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,199}")


def digest_hex(digest: str) -> str:
    """The hex part of a ``sha256:<hex>`` digest; StoreError if it is malformed."""
    if not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
        raise StoreError(
            f"invalid content digest {digest!r}",
            hint="digests look like sha256:<64 lower-case hex digits>",
        )
    return digest[7:]


def is_digest(value: str) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise StoreError(
            f"invalid {kind} {name!r}",
            hint="use letters, digits, '_', '.', ':' and '-' (at most 200)",
        )
    return name


def syncfs(fd: int) -> None:
    """``syncfs(2)`` of the file system ``fd`` is on; OSError for a write error the file
    system met since ``fd`` was opened (what a later open would not hear of)."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_writable_and_retry(
    function: Callable[[str], object], path: str, excinfo: BaseException | tuple[object, BaseException, object]
) -> None:
    """shutil.rmtree onerror: a read-only directory (chmod 0555, an overlay
    work dir) blocks unlinking its entries for a non-root user; open it up."""
    error = excinfo[1] if isinstance(excinfo, tuple) else excinfo
    if isinstance(error, FileNotFoundError):
        return
    if not isinstance(error, PermissionError):
        raise error
    parent = os.path.dirname(path)
    try:
        os.chmod(parent, stat.S_IRWXU)
        if function is not os.unlink and os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, stat.S_IRWXU)
    except OSError:
        raise error from None
    function(path)


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree; missing is fine."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, onerror=_make_writable_and_retry)


def tree_disk_usage(path: Path) -> int:
    """Bytes a tree occupies on disk (allocated blocks; hard links counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [os.fspath(path)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                        key = (st.st_dev, st.st_ino)
                        if key in seen:
                            continue
                        seen.add(key)
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


# --- process identity (for leases and temp areas) ------------------------


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ")"
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])  # field 22, starttime
    except (IndexError, ValueError):
        return None


def process_alive(pid: int, start_time: int, boot: str) -> bool:
    """Is the process that recorded (pid, start_time, boot) still running?"""
    if boot != boot_id():
        return False
    current = process_start_time(pid)
    if current is not None:
        return current == start_time
    # no /proc entry to read: fall back to "does the pid exist" (keeping a
    # dead lease a while is safe; dropping a live one is not)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def my_identity() -> tuple[int, int, str]:
    pid = os.getpid()
    start = process_start_time(pid)
    return pid, -1 if start is None else start, boot_id()


def errno_hint(error: OSError) -> str | None:
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "set PYBUILD_ROOT to a directory you can write, or run as root"
    if error.errno == errno.ENOSPC:
        return "free disk space, e.g. with `pybuild prune`"
    if error.errno == errno.EXDEV:
        return "keep the whole pybuild root on one file system"
    return None


def store_error(what: str, error: OSError) -> StoreError:
    """Translate an OSError met while using the pybuild root."""
    return StoreError(f"{what}: {error.strerror or error}", hint=errno_hint(error))
