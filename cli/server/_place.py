"""The server's place in the root: ``<root>/server``, a 0700 directory of root's holding
the socket, the lock that makes one server per root, its pid and its log.  Every file in
it is opened through the directory's descriptor, none through a symlink."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time

from . import _wire

LOCK_WAIT = 0.5  # seconds a new server waits for the lock (one leaving for new code lets go at once)


class Unusable(Exception):
    """The server directory cannot be used (the message says why)."""


def open_directory(root: str) -> int:
    """An O_PATH descriptor of ``<root>/server``: made 0700 if missing; a symlink, another
    owner or another mode is refused (the clients would refuse it too)."""
    path = os.path.join(root, _wire.DIRECTORY_NAME)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid():
        os.close(fd)
        raise Unusable(f"{path} belongs to uid {st.st_uid}")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(f"/proc/self/fd/{fd}", 0o700)  # ours, made by an older umask: close it
    return fd


def take_lock(directory_fd: int, wait: float = LOCK_WAIT) -> int | None:
    """The lock's descriptor, held; None when another server holds it for ``wait`` seconds."""
    fd = os.open(f"/proc/self/fd/{directory_fd}/{_wire.LOCK_NAME}", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


def write_file(directory_fd: int, name: str, text: str) -> None:
    """``text`` into ``name`` of the directory, replaced whole."""
    temporary = f"/proc/self/fd/{directory_fd}/.{name}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.rename(temporary, f"/proc/self/fd/{directory_fd}/{name}")
