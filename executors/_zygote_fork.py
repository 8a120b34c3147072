"""The zygote forked from pybuild's own process, before the build needs it.

Started as a script (``python -I -S _zygote.py``), the zygote costs an
interpreter start and its imports, about 40 ms, and the first RUN step of
every build waits for them.  pybuild has imported the same modules already,
so while it has no thread but its main one (before the build's trio run)
it can fork the zygote instead: under a millisecond, and the first step finds
it ready.  Forking a process with other threads could copy a lock one of them
holds, so the caller checks there are none; the script stays the way in
every other case.

The child keeps nothing of pybuild's but the interpreter and the modules:
its stdin and stdout are /dev/null, its stderr the zygote's log, the request
socket fd 3, every other descriptor is closed; its environment is the one the
script gets, its directory ``/``, its signal handlers the defaults, and it
leaves with ``os._exit`` (no ``atexit`` handler or buffer of pybuild's runs
there).  The objects it inherited are frozen out of the garbage collector,
so none is finalized there (closing a descriptor number the zygote reuses).
"""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import socket
import sys
import threading
import traceback

import trio

_REQUESTS_FD = 3  # where the child's request socket goes (the script gets its number as argv[1])
_HIGH_FD = 64  # above the stdio and the socket while they are put in place


def can_fork() -> bool:
    """Whether this process may fork the zygote now: no thread but the calling main one."""
    return threading.active_count() == 1 and threading.current_thread() is threading.main_thread()


def fork_zygote(log_path: str, environ: dict[str, str]) -> tuple[ForkedProcess, socket.socket]:
    """Fork a zygote (``_zygote.main``) and return it with pybuild's end of its request socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    opened: list[int] = []
    try:
        opened.append(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600))
        opened.append(os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC))
        pid = os.fork()
        if pid == 0:
            _become_zygote(theirs.fileno(), opened[0], opened[1], environ)
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
        for fd in opened:
            os.close(fd)
    return ForkedProcess(pid), ours


def _become_zygote(requests: int, log: int, null: int, environ: dict[str, str]) -> None:
    """The child: put its descriptors, environment and signals in place, run the zygote, leave."""
    status = 1
    try:
        gc.freeze()
        # first out of the way of 0-3 (any of them may be among these), then into place
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, _HIGH_FD) for fd in (requests, log, null)]
        os.dup2(high[2], 0)
        os.dup2(high[2], 1)
        os.dup2(high[1], 2)
        os.dup2(high[0], _REQUESTS_FD, inheritable=False)
        os.closerange(_REQUESTS_FD + 1, os.sysconf("SC_OPEN_MAX"))
        os.environ.clear()
        os.environ.update(environ)
        os.chdir("/")
        _default_signals()
        from . import _zygote

        status = _zygote.main(["_zygote.py", str(_REQUESTS_FD)])
    except BaseException:
        try:
            traceback.print_exc(file=sys.__stderr__)
            sys.__stderr__.flush()  # type: ignore[union-attr]  # fd 2: the zygote's log
        except BaseException:
            pass
    finally:
        os._exit(status)


def _default_signals() -> None:
    """The handlers a fresh interpreter has: pybuild's own (a served build's) are not the zygote's."""
    signal.set_wakeup_fd(-1)
    for number in signal.valid_signals():
        try:
            handler = signal.getsignal(number)
        except (OSError, ValueError):
            continue
        if callable(handler) and handler is not signal.default_int_handler:
            signal.signal(number, signal.default_int_handler if number == signal.SIGINT else signal.SIG_DFL)


class ForkedProcess:
    """A forked zygote as ``_Zygote`` uses a ``trio.Process``: pid, returncode, wait, kill."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._status: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by someone else: gone all the same
                self._status = -1
                return self._status
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
        return self._status

    async def wait(self) -> int:
        while (code := self.returncode) is None:
            # unreaped, so the pid is still this child's: its pidfd turns readable when it exits
            pidfd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)
