"""What a forked child of the server does to become the client's ``pybuild build``.

It takes the client's standard streams and working directory (the descriptors it
sent), environment, umask, resource limits, nice value, CPU affinity and (cgroup
v2, best effort) cgroup; gets a process group of its own, Python's default signal
handlers, a fresh random seed and ``sys.stdin``/``stdout``/``stderr`` made by
Python's own rules for the client's environment; then runs the build as an
in-process one does after its fast path, and leaves with ``os._exit``: nothing of
the server's may run in it afterwards.  What it does not inherit: the client's
controlling terminal, its session, and descriptors other than 0, 1 and 2.
"""

from __future__ import annotations

import io
import locale
import os
import random
import resource
import signal
import socket
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from . import _wire

# the limits a process carries that a build may feel (open files, processes, core size, ...)
RLIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))
DEFAULT_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2)
# what Python itself ignores at start-up (a write to a closed pipe is an error, not a death)
IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
C_LOCALES = ("C", "POSIX", "C.UTF-8", "C.utf8", "UTF-8")  # Python's surrogateescape locales (PEP 538)
REPLY_FD = 3  # the client's connection, kept until ``answer_client``


class Request:
    """A checked request: what the child is to become."""

    def __init__(self, argv: list[str], env: dict[bytes, bytes], umask: int, path: list[str], unbuffered: bool, client_pid: int) -> None:
        self.argv = argv
        self.env = env
        self.umask = umask
        self.path = path
        self.unbuffered = unbuffered  # python -u (no sys.flags field says so)
        self.client_pid = client_pid


def become_build(
    request: Request, fds: list[int], keep_alive: list[socket.socket], run: Callable[[list[str], Callable[[int], None]], int]
) -> NoReturn:
    """Never returns: runs ``run(argv[1:], answer)`` as the client's build and exits with its code.

    ``keep_alive``: the server's socket objects, the client's connection first, detached
    here so that freeing them later can never close a descriptor number the build has
    reused.  ``answer(code)`` sends the client its exit code before the child is done
    (``answer_client``)."""
    code = 1
    try:
        connection = keep_alive[0].fileno()
        _leave_the_server(keep_alive)
        _take_descriptors(fds, connection)
        _take_process_state(request)
        _take_python_state(request)
        _report_imports_at_exit()
        code = run(request.argv[1:], _answer_at_exit if _debugging() else answer_client)
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:  # a bug: shown as the in-process build would show it
        try:
            traceback.print_exc()
        except BaseException:  # noqa: BLE001 - nothing may escape into the server's loop
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _debugging() -> bool:
    return os.environ.get("PYBUILD_SERVER_DEBUG", "") not in ("", "0")


def _answer_at_exit(code: int) -> None:
    """With PYBUILD_SERVER_DEBUG the client hears the code at the child's exit, as before
    ``answer_client``: what the child says until then reaches the client's stderr."""


def _report_imports_at_exit() -> None:
    """With PYBUILD_SERVER_DEBUG, the modules the build still had to import (the server's
    preload missed them) are named on stderr at exit."""
    if not _debugging():
        return
    import atexit

    loaded = set(sys.modules)

    def report() -> None:
        later = sorted(set(sys.modules) - loaded)
        sys.stderr.write(f"pybuild server: the child imported {len(later)} modules: {' '.join(later)}\n")
        sys.stderr.flush()

    atexit.register(report)


def _leave_the_server(keep_alive: list[socket.socket]) -> None:
    os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for sock in keep_alive:
        sock.detach()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in DEFAULT_SIGNALS:
        signal.signal(number, signal.SIG_DFL)
    for number in IGNORED_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _take_descriptors(fds: list[int], connection: int) -> None:
    """The client's stdin, stdout, stderr on 0-2, its working directory, and the client's
    connection on ``REPLY_FD`` (not inherited by what the build runs); nothing else open."""
    stdin, stdout, stderr, cwd = fds
    os.fchdir(cwd)
    for source, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(source, target, inheritable=True)
    os.dup2(connection, REPLY_FD, inheritable=False)
    os.closerange(REPLY_FD + 1, _max_fd())


def answer_client(code: int) -> None:
    """Send the client the build's exit code now, and let go of everything of the client's:
    its streams (a reader of the build's output sees their end as the command returns) and
    the signals it forwards (the client is gone; what the child still does is for later
    builds and must not be cut short).  The server's status at the child's exit then finds
    the connection closed, which it expects."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - the client hears the code all the same
            pass
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(number, signal.SIG_IGN)
    try:
        os.write(REPLY_FD, _wire.message(_wire.STATUS, (code & 0xFF) << 8))  # a wait status, as the server's
    except OSError:
        pass  # the client went away meanwhile: nothing to tell
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for target in (0, 1, 2):
        os.dup2(null, target, inheritable=True)
    os.close(null)
    os.close(REPLY_FD)


def _max_fd() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _take_process_state(request: Request) -> None:
    os.umask(request.umask)
    pid = request.client_pid
    for limit in RLIMITS:
        try:
            resource.setrlimit(limit, resource.prlimit(pid, limit))
        except (OSError, ValueError):
            pass  # best effort: the client's value where the kernel lets us take it
    try:
        os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, pid))
    except OSError:
        pass
    try:  # `taskset`: the CPUs a build counts and runs its steps on
        os.sched_setaffinity(0, os.sched_getaffinity(pid))
    except OSError:
        pass
    _join_cgroup(pid)


def _join_cgroup(pid: int) -> None:
    """Into the client's cgroup v2 (a systemd unit's limits and accounting), best effort.
    cgroup v1 hierarchies are left as they are (the child stays in the server's)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        if line.startswith("0::"):
            relative = line[3:].lstrip("/")
            for mount in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
                if os.path.exists(os.path.join(mount, "cgroup.controllers")):  # a v2 mount (hybrid: unified/)
                    try:
                        with open(os.path.join(mount, relative, "cgroup.procs"), "w") as procs:
                            procs.write("0")
                        return
                    except OSError:
                        continue


def _take_python_state(request: Request) -> None:
    os.environb.clear()
    os.environb.update(request.env)
    try:
        locale.setlocale(locale.LC_CTYPE, "")  # as Python does at start-up, for the client's variables
    except locale.Error:
        pass
    sys.path[:] = request.path
    sys.argv[:] = request.argv
    random.seed()
    _make_streams(request.unbuffered)


def _make_streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr over 0-2 as Python makes them at start-up."""
    encoding, errors = _stdio_encoding()
    sys.stdin = _text(0, "r", encoding, errors, line_buffering=False, unbuffered=unbuffered)
    sys.stdout = _text(1, "w", encoding, errors, line_buffering=os.isatty(1), unbuffered=unbuffered)
    sys.stderr = _text(2, "w", encoding, "backslashreplace", line_buffering=True, unbuffered=unbuffered)
    # the originals too (what a program restores after redirecting): typeshed calls them final
    vars(sys).update(__stdin__=sys.stdin, __stdout__=sys.stdout, __stderr__=sys.stderr)


def _stdio_encoding() -> tuple[str, str]:
    """PYTHONIOENCODING's ``encoding:errors``, else the locale's (UTF-8 mode: UTF-8)."""
    configured = os.environ.get("PYTHONIOENCODING", "") if not sys.flags.ignore_environment else ""
    name, _, errors = configured.partition(":")
    if not name:
        name = "utf-8" if sys.flags.utf8_mode else locale.getencoding()
    if not errors:
        current = locale.setlocale(locale.LC_CTYPE)
        errors = "surrogateescape" if sys.flags.utf8_mode or current in C_LOCALES else "strict"
    return name, errors


def _text(fd: int, mode: str, encoding: str, errors: str, *, line_buffering: bool, unbuffered: bool) -> io.TextIOWrapper:
    raw = io.FileIO(fd, mode, closefd=False)
    buffered = io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw)
    return io.TextIOWrapper(
        buffered, encoding=encoding, errors=errors, newline="\n",
        line_buffering=line_buffering, write_through=unbuffered and mode == "w",
    )

