"""``pybuild exec``: a process started inside a running container.

The new process enters the namespaces of the container's init (``setns`` on
``/proc/PID/ns/*``) and its cgroups, so it sees the container's root, its
processes, network, hostname and limits, and dies with it.  Then it gets
what the container's own command got from the sandbox: the user resolved
from the container's ``/etc/passwd``, Docker's capabilities, a new session
(with the pty as controlling terminal for ``-t``), the environment and the
working directory.

Two processes, both forked from the calling pybuild process (which runs no
threads): the *entrant* joins the cgroups and the pid namespace -- which
only takes effect for its children -- and forks the *process*, which joins
the other namespaces and execs the command.  The entrant waits for it and
exits with its status (``128 + signal`` if it was killed), so the caller
waits for an ordinary child.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from . import _containers_tty as ttys
from . import _linux as linux
from . import _passwd as passwd
from . import _sandbox as sandbox

# Joined in this order by the process; the mount namespace last, since
# joining it also moves the root and working directory into the container.
_NAMESPACES = (
    ("ipc", linux.CLONE_NEWIPC),
    ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET),
    ("cgroup", linux.CLONE_NEWCGROUP),
    ("mnt", linux.CLONE_NEWNS),
)

# Docker's exit status when the runtime cannot start the exec'd command.
CANNOT_START = 126


def spawn(
    init_pid: int,
    cgroup_procs: tuple[str, ...],
    process: dict[str, Any],  # Any: the sandbox request's process part
    stdio: tuple[int, int, int],
    *,
    tty: bool,
    detach: bool = False,
) -> int:
    """Fork the entrant; returns its pid (the caller waits for it).

    ``process`` has ``args``, ``env`` (``K=V`` strings), ``cwd``,
    ``user`` and the container's confinement (see
    ``_sandbox.confine_and_exec``).  ``stdio`` are the descriptors the command gets as 0, 1, 2;
    with ``tty`` they are a pty's slave, which becomes its controlling
    terminal.  With ``detach`` the entrant exits at once, leaving the
    command to the container (``exec -d``).
    """
    # Opened here, before the fork, so a container that is already gone is an OSError for the caller.
    namespaces = [(os.open(f"/proc/{init_pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC), kind) for name, kind in _NAMESPACES]
    pid_namespace = os.open(f"/proc/{init_pid}/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        entrant = os.fork()
        if entrant == 0:
            _entrant(namespaces, pid_namespace, cgroup_procs, process, stdio, tty, detach)
        return entrant
    finally:
        for fd, _ in namespaces:
            os.close(fd)
        os.close(pid_namespace)


def _entrant(
    namespaces: list[tuple[int, int]],
    pid_namespace: int,
    cgroup_procs: tuple[str, ...],
    process: dict[str, Any],  # Any: the sandbox request's process part
    stdio: tuple[int, int, int],
    tty: bool,
    detach: bool,
) -> None:
    status = CANNOT_START
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if not detach:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        for procs in cgroup_procs:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        linux.setns(pid_namespace, linux.CLONE_NEWPID)
        child = os.fork()
        if child == 0:
            _process(namespaces, process, stdio, tty, detach)
        if detach:
            os._exit(0)
        for fd in set(stdio) - {0, 1, 2}:
            os.close(fd)
        while True:
            try:
                _, wait_status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        status = 128 + os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else os.WEXITSTATUS(wait_status)
    except BaseException as e:  # noqa: BLE001 - a forked child must never return into the caller's code
        _say(f"pybuild: cannot enter the container: {_describe(e)}")
    finally:
        os._exit(status)


def _process(namespaces: list[tuple[int, int]], process: dict[str, Any], stdio: tuple[int, int, int], tty: bool, detach: bool) -> None:
    try:
        if not detach:
            linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        sandbox.reset_signals()
        for fd, kind in namespaces:
            linux.setns(fd, kind)
        os.setsid()
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        if tty:
            ttys.make_controlling_terminal(0)
        user = _resolve_user(process["user"])
        cwd = _enter_workdir(process["cwd"])
        env = sandbox._environment(process["env"], [], user.home)
        os.umask(0o022)
        # exits 126/127 with a message if it cannot exec
        sandbox.confine_and_exec(process, user, list(process["args"]), env, cwd, die_with_parent=not detach)
    except _ExecFailure as e:
        _say(f"pybuild: {e}")
    except sandbox.SetupError as e:
        _say(f"pybuild: {e.message}")
    except BaseException as e:  # noqa: BLE001
        _say(f"pybuild: cannot start the command in the container: {_describe(e)}")
    os._exit(CANNOT_START)


class _ExecFailure(Exception):
    pass


def _resolve_user(spec: str) -> passwd.ResolvedUser:
    try:
        return passwd.resolve_user(spec, sandbox._read_account_file("/etc/passwd"), sandbox._read_account_file("/etc/group"))
    except passwd.UnknownUserError as e:
        raise _ExecFailure(str(e)) from None


def _enter_workdir(cwd: str) -> str:
    path = os.path.normpath("/" + (cwd or "/"))
    try:
        os.chdir(path)
    except OSError as e:
        raise _ExecFailure(f"cannot use working directory {path}: {e.strerror}") from None
    return path


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return f"{type(error).__name__}: {error}"


def _say(message: str) -> None:
    try:
        os.write(2, message.encode(errors="replace") + b"\n")
    except OSError:
        pass


def exit_status_of(wait_status: int) -> int:
    """The shell's convention for a wait status: the exit code, or 128 + the signal."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)

