"""``pybuild server``: the fork server of a root, in the foreground (systemd, debugging);
builds start one in the background themselves.  ``--status`` and ``--stop`` ask about or
end a running one."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from pybuild.errors import UsageError

from . import _wire

DEFAULT_IDLE_TIMEOUT = 900.0  # seconds: a server nobody used for 15 minutes leaves
STOP_WAIT = 30.0  # seconds --stop waits for the server (and the builds it runs) to end


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="the pybuild root (default: $PYBUILD_ROOT or /var/lib/pybuild)")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                        help="exit after this long without a build (default: 900)")
    parser.add_argument("--status", action="store_true", help="say whether this root's server runs, and exit")
    parser.add_argument("--stop", action="store_true", help="stop this root's server (after the builds it runs)")
    parser.add_argument("--background", action="store_true", help=argparse.SUPPRESS)  # a build's start: log to <root>/server/log


def run(args: argparse.Namespace) -> int:
    if os.environ.get("PYBUILD_ROOTLESS") or os.geteuid() != 0:
        raise UsageError("pybuild server serves builds run as root only", hint="rootless builds run in their own process")
    if not args.idle_timeout > 0:  # nan too; inf: never idle (a systemd service)
        raise UsageError(f"--idle-timeout {args.idle_timeout:g}: must be above 0", hint="inf: never leave when idle")
    root = _root(args)
    if args.status or args.stop:
        return _status_or_stop(root, stop=args.stop)
    return _serve(root, args.idle_timeout, background=args.background)


def _root(args: argparse.Namespace) -> str:
    from pybuild.cache import default_root_path

    root = os.path.abspath(args.root or str(default_root_path()))
    if not os.path.isdir(root):
        raise UsageError(f"--root {root}: no such pybuild root", hint="a build makes it")
    return root


def _running_pid(root: str) -> int | None:
    """The server's pid when one holds the lock, else None."""
    import fcntl

    directory = os.path.join(root, _wire.DIRECTORY_NAME)
    try:
        fd = os.open(os.path.join(directory, _wire.LOCK_NAME), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    try:
        with open(os.path.join(directory, _wire.PID_NAME)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _status_or_stop(root: str, *, stop: bool) -> int:
    pid = _running_pid(root)
    if pid is None:
        print(f"no server for {root}")
        return 0 if stop else 3
    if not stop:
        print(f"server for {root}: pid {pid}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while time.monotonic() < deadline:
        if _running_pid(root) is None:
            print(f"stopped the server for {root} (pid {pid})")
            return 0
        time.sleep(0.05)
    print(f"error: the server for {root} (pid {pid}) still runs builds after {STOP_WAIT:g} s", file=sys.stderr)
    return 1


def _serve(root: str, idle_timeout: float, *, background: bool) -> int:
    from . import _place, _preload, _server

    try:
        directory = _place.open_directory(root)
    except (OSError, _place.Unusable) as error:
        raise UsageError(f"cannot use {root}/{_wire.DIRECTORY_NAME}: {error}") from None
    lock = _place.take_lock(directory)
    if lock is None:
        if not background:
            print(f"a server for {root} already runs", file=sys.stderr)
        return 0
    if background:
        _log_to(directory)
    os.chdir("/")  # hold no caller's directory
    try:
        loaded = _preload.preload()
    except _preload.PreloadError as error:
        _server.log(f"cannot serve: {error}")
        return 1
    from pybuild.cli.main import serve_child  # what a served child runs: main's in-process build

    server = _server.Server(root, idle_timeout, serve_child, directory=os.path.join(root, _wire.DIRECTORY_NAME), lock=lock)
    wakeup = _server.wakeup_pipe(server)
    server.listen(directory)
    _place.write_file(directory, _wire.PID_NAME, f"{os.getpid()}\n")
    _server.log(f"listening for {root} ({loaded} modules loaded, idle timeout {idle_timeout:g} s)")
    try:
        return server.serve(wakeup)
    finally:
        server.stop_listening()
        server.release_lock()


def _log_to(directory: int) -> None:
    """The server's own messages and errors into ``server/log`` (truncated): a started
    server's stdout and stderr are /dev/null."""
    fd = os.open(f"/proc/self/fd/{directory}/{_wire.LOG_NAME}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
