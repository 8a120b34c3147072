"""A container's runtime state on disk: who supervises it and how it ended.

Everything lives in the container's own directory, so a crash of any
pybuild process (the supervisor included) leaves something ``ps -a`` can
still read and ``rm`` can still remove:

``state.json``
    The last status the supervisor recorded (``created``, ``running``,
    ``exited``), replaced atomically (temp file + rename).
``lock``
    An exclusive ``flock`` the supervisor holds for as long as it lives.  The
    kernel drops it when the supervisor dies, however it dies, so "the
    container is running" is "the lock is held", and a ``running`` state
    whose lock is free means the supervisor was killed.
``log``
    Framed output for ``pybuild logs`` (see ``_containers_log``).

Stdlib only: the supervisor runs it as ``python -I -S`` (see ``_containers_shim``).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import asdict, dataclass, field, replace

STATE_FILE = "state.json"
LOCK_FILE = "lock"
LOG_FILE = "log"

CREATED = "created"
RUNNING = "running"
EXITED = "exited"


@dataclass(frozen=True)
class RuntimeState:
    """What the supervisor last wrote.

    ``init_pid`` is the host pid of the container's pid 1 and ``init_start``
    its start time in clock ticks (``/proc/PID/stat`` field 22), so a signal
    never reaches a process that merely reuses the pid; the same for the
    supervisor.  ``cgroups`` are the
    container's cgroup directories, removed when it ends.
    """

    status: str = CREATED
    supervisor_pid: int = 0
    supervisor_start: int = 0
    init_pid: int = 0
    init_start: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    exit_code: int | None = None
    error: str = ""
    cgroups: tuple[str, ...] = field(default=())

    def but(self, **changes: object) -> RuntimeState:
        return replace(self, **changes)  # type: ignore[arg-type]  # replace checks the field names and the shim's values fit


def read_state(directory: str) -> RuntimeState:
    """The recorded state (``created`` if nothing was recorded yet or the file is unreadable)."""
    try:
        with open(os.path.join(directory, STATE_FILE), "rb") as f:
            data = json.loads(f.read())
    except (OSError, ValueError):
        return RuntimeState()
    if not isinstance(data, dict):
        return RuntimeState()
    known = {k: v for k, v in data.items() if k in RuntimeState.__dataclass_fields__}
    known["cgroups"] = tuple(known.get("cgroups") or ())
    try:
        return RuntimeState(**known)
    except TypeError:
        return RuntimeState()


def write_state(directory: str, state: RuntimeState) -> None:
    """Replace the state file in one rename: a reader sees the old or the new state."""
    temp = os.path.join(directory, f".{STATE_FILE}.{secrets.token_hex(4)}")
    data = asdict(state)
    data["cgroups"] = list(state.cgroups)
    with open(temp, "w") as f:
        json.dump(data, f, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, os.path.join(directory, STATE_FILE))


def take_lock(directory: str) -> int:
    """Take the supervisor's lock (BlockingIOError if another process holds it); returns its fd."""
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def supervised(directory: str) -> bool:
    """Is a live supervisor holding the container's lock?"""
    try:
        fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops the probe's own lock
    return False


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: fields follow the last ')'.
    fields = text.rsplit(b")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
