"""Files a user names for pybuild to write: ``save -o``, ``--output ...,dest=``, ``--iidfile``.

What is at the path decides how it is written, so that nothing there is
ever replaced by something of another kind:

- nothing, or a regular file: a temp file beside it
  (``.NAME.pybuild-PID-XXXXXXXX``) is written, fsynced and renamed over it;
  until then the old file stays whole, and a failure leaves it as it was.
- a symbolic link: followed; what it names is written by these same rules
  and the link stays (the target of a dangling link is created).
- a FIFO, a character device (``/dev/null``, a terminal) or a socket:
  opened (connected) and written into as a shell's ``>`` would, never
  truncated or replaced.
- one of the process's own descriptors (``/dev/stdout``, ``/dev/fd/N``):
  written to as it is, whatever it is open on (a pipe, a file the shell
  opened for appending).
- a directory or a block device: refused with a ``UsageError``.

A temp file is locked (``flock``) from just after it is made until it is
renamed.  One that no process holds a lock on, whose writer's PID is gone
or which is older than a minute (PIDs are reused), was left by a killed
export: the next write to the same path removes it.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from pybuild.cache import open_with_writeback
from pybuild._frozen import frozen
from pybuild.errors import UsageError


_TEMP_MARK = ".pybuild-"
_TEMP_TAG = re.compile(r"(\d+)(?:-[0-9a-f]{8})?")
_STALE_AFTER = 60.0  # seconds: an unlocked temp file this old is stale whatever its PID says


@frozen
class OutputFile:
    """Where to write: ``own`` is a temp file of pybuild's own, which the writer
    may seek back in and truncate (a FIFO or a device may not be)."""

    stream: BinaryIO
    own: bool


@contextmanager
def open_output(path: str | os.PathLike[str]) -> Iterator[OutputFile]:
    """Write the file ``path`` names, by the rules above, within a ``with`` block.

    A new or regular file gets the block's writes only if it ends without an
    exception; a FIFO, device or descriptor receives them as they are made.
    An ``OSError`` (no space, no permission ...) becomes a ``UsageError``.
    """
    where = os.fspath(path)
    try:
        descriptor = _own_descriptor(where)
        found = _stat(where) if descriptor is None else os.fstat(descriptor)
        if found is not None and stat.S_ISDIR(found.st_mode):
            raise UsageError(f"cannot write {where}: it is a directory", hint="name a file, not a directory")
        if found is not None and stat.S_ISBLK(found.st_mode):
            raise UsageError(f"cannot write {where}: it is a block device", hint="write to a file, then copy it to the device")
        if descriptor is not None:
            with open(os.dup(descriptor), "wb") as out:
                yield OutputFile(out, own=False)
                out.flush()
        elif found is None or stat.S_ISREG(found.st_mode):
            with _replaced(_replaceable_path(where, found), found) as out:
                yield OutputFile(out, own=True)
        else:
            with _written_through(where, found) as out:
                yield OutputFile(out, own=False)
    except OSError as error:
        raise UsageError(f"cannot write {where}: {_what_failed(error, where)}", hint=_hint(error)) from None


def write_output_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """``data`` as the whole content of the file ``path`` names (``--iidfile``, ``--metadata-file``)."""
    with open_output(path) as output:
        output.stream.write(data)


def _stat(where: str) -> os.stat_result | None:
    """What ``where`` leads to through symlinks; None if nothing (a new file, or a dangling link)."""
    try:
        return os.stat(where)
    except FileNotFoundError:
        return None


def _own_descriptor(where: str) -> int | None:
    """N, if ``where`` leads through symlinks to ``/proc/self/fd/N`` (``/dev/stdout``, ``/dev/fd/3``).

    Writing there means writing to that descriptor, as it is: a file the
    shell opened for appending is appended to, not replaced.
    """
    own = re.compile(rf"/proc/(?:self|thread-self|{os.getpid()}(?:/task/\d+)?)/fd/(\d+)")
    current = os.path.abspath(where)
    for _ in range(40):  # the kernel's limit on links followed
        current = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        match = own.fullmatch(current)
        if match:
            return int(match[1])
        try:
            link = os.readlink(current)
        except OSError:
            return None
        current = os.path.join(os.path.dirname(current), link)
    return None


def _replaceable_path(where: str, found: os.stat_result | None) -> str:
    """The path to rename a temp file onto: ``where``, or what its symlinks lead to."""
    if not os.path.islink(where):
        return where
    real = os.path.realpath(where)
    if found is not None:
        try:
            landed: os.stat_result | None = os.stat(real)
        except FileNotFoundError:
            landed = None
        if landed is None or (landed.st_dev, landed.st_ino) != (found.st_dev, found.st_ino):
            # another process's /proc/PID/fd link to a deleted file: no path to rename onto
            raise UsageError(f"cannot write {where}: its link leads to no file that can be replaced", hint="name the file itself")
    return real


@contextmanager
def _replaced(target: str, existing: os.stat_result | None) -> Iterator[BinaryIO]:
    import fcntl
    import secrets

    directory, name = os.path.split(os.path.abspath(target))
    _remove_stale_temp_files(directory, name)
    temp = os.path.join(directory, f".{name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    renamed = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held until closed, after the rename: the file is being written
        if existing is not None:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode) & 0o777)  # the file replaced keeps its permissions
        with open_with_writeback(fd) as out:
            fd = -1  # the stream owns it now
            yield out
            out.flush()
            os.fsync(out.fileno())
            os.rename(temp, target)
            renamed = True
        _sync_directory(directory)
    finally:
        if fd >= 0:
            os.close(fd)
        if not renamed:
            _unlink_quietly(temp)


@contextmanager
def _written_through(where: str, found: os.stat_result) -> Iterator[BinaryIO]:
    if stat.S_ISSOCK(found.st_mode):
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(where)
            with sock.makefile("wb") as out:
                yield out
                out.flush()
            sock.shutdown(socket.SHUT_WR)
        return
    # A FIFO or a character device: opened as it is, neither truncated nor created.
    with open(os.open(where, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC), "wb") as out:
        yield out
        out.flush()


def _remove_stale_temp_files(directory: str, name: str) -> None:
    """Remove the temp files of earlier writes of ``directory/name`` that no one is writing any more."""
    prefix = f".{name}{_TEMP_MARK}"
    try:
        with os.scandir(directory) as entries:
            leftovers = [entry.name for entry in entries if entry.name.startswith(prefix)]
    except OSError:
        return  # an unreadable directory: the write itself will say what is wrong
    for leftover in leftovers:
        pid = _TEMP_TAG.fullmatch(leftover[len(prefix) :])  # PID-XXXXXXXX, or PID alone (older pybuilds)
        if pid is not None:
            _remove_if_stale(os.path.join(directory, leftover), int(pid[1]))


def _remove_if_stale(path: str, pid: int) -> None:
    import fcntl
    import time

    try:
        seen = os.lstat(path)
        if not stat.S_ISREG(seen.st_mode):
            return  # not a temp file of ours (never open a FIFO or device to find out)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return
    try:
        held = os.fstat(fd)
        if (held.st_dev, held.st_ino) != (seen.st_dev, seen.st_ino):
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # its writer holds the lock: still being written
        just_made = time.time() - held.st_mtime < _STALE_AFTER
        if just_made and _alive(pid):
            return  # made a moment ago by a live process that has not locked it yet
        os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _sync_directory(directory: str) -> None:
    """Make the rename durable; some filesystems cannot sync a directory, which only loses that."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _what_failed(error: OSError, where: str) -> str:
    strerror = error.strerror or str(error)
    name = os.fsdecode(error.filename) if error.filename is not None else None
    if name is None or name == where or _TEMP_MARK in os.path.basename(name):
        return strerror
    return f"{name}: {strerror}"


def _hint(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free space on the destination's filesystem, or write elsewhere"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "check the destination and its directory are writable"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "check the directory exists"
    return "check the path"
