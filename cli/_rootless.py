"""Rootless start: a non-root ``pybuild`` runs its command as root in a user namespace.

Every command that touches the pybuild root enters one user namespace
(``executors.enter_userns``) before trio or any thread starts; the ones that only
read a Dockerfile (``parse``, ``check``, which never creates a root) or need the
real root (``binfmt``) never enter; ``graph`` enters, as opening a root may clean
temp areas holding the namespace's ids.  Commands on existing containers join the namespace of
a running one's supervisor, which owns its mounts and processes (only there may
they be signalled or entered).  Each ``pybuild run`` makes a namespace of its own,
so ``stop``/``rm`` naming containers of several namespaces run once per namespace,
in a forked child each; a stopped container's files need only the same id mapping,
which any namespace of the same user has.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from pybuild.errors import SandboxError

# commands that never enter: they read a Dockerfile, or need the host's root (the build server
# serves root's builds only, and says so)
NEVER_ENTER = frozenset({"parse", "check", "binfmt", "server"})
# commands on existing containers: join a running one's namespace
JOIN_CONTAINER = frozenset({"exec", "stop", "logs", "diff", "commit", "rm"})

Run = Callable[[argparse.Namespace], int]
Guard = Callable[[Callable[[], int]], int]


def run_as_root(command: str, args: argparse.Namespace, run: Run, guarded: Guard) -> int:
    """``run(args)``, in the user namespace when not root and ``command`` needs it.

    ``guarded`` reports a pybuild error as the CLI does and gives its exit code: a
    child forked for one namespace reports its own errors with it.
    """
    if os.geteuid() == 0 or command in NEVER_ENTER:
        return run(args)
    _keep_home()
    groups = _by_namespace(args) if command in JOIN_CONTAINER else []
    if len(groups) <= 1:
        _enter(groups[0][0] if groups else None)
        return run(args)
    return _run_per_namespace(groups, args, run, guarded)


def _enter(supervisor: int | None) -> None:
    from pybuild.executors import enter_userns, join_userns

    try:
        if supervisor:
            join_userns(supervisor)
        else:
            enter_userns()
    except OSError as error:
        raise SandboxError(
            str(error.strerror or error),
            hint="rootless pybuild needs user namespaces (sysctl kernel.unprivileged_userns_clone=1, "
            "user.max_user_namespaces > 0) and Debian's uidmap for subordinate ids",
        ) from None


def _run_per_namespace(groups: list[tuple[int | None, list[str]]], args: argparse.Namespace, run: Run, guarded: Guard) -> int:
    """One forked child per namespace, each on its own containers; the first failure's code."""
    sys.stdout.flush()
    sys.stderr.flush()
    children = []
    for supervisor, names in groups:
        child = os.fork()
        if child == 0:
            code = 1
            try:
                own = argparse.Namespace(**{**vars(args), "containers": names})
                code = guarded(lambda: _entered_run(supervisor, own, run))
            except BaseException:  # a bug: show it as the parent would, then leave
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append(child)
    codes = [os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in children]
    return next((code for code in codes if code != 0), 0)


def _entered_run(supervisor: int | None, args: argparse.Namespace, run: Run) -> int:
    _enter(supervisor)
    return run(args)


def _keep_home() -> None:
    """Inside, uid 0's passwd entry is root's: the default root, registry credentials and
    XDG paths must stay the caller's, so HOME is fixed from the real uid first."""
    if not os.environ.get("HOME"):
        import pwd

        try:
            os.environ["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            pass


def _by_namespace(args: argparse.Namespace) -> list[tuple[int | None, list[str]]]:
    """The named containers grouped by the user namespace of their running supervisor:
    (a supervisor pid to join, names).  Stopped or unknown ones go with the first group
    (any namespace of this user maps their files alike; an unknown name is reported
    by the command), or alone in a new namespace (None) when none runs."""
    several = getattr(args, "containers", None)
    names: list[str] = list(several) if several else [args.container] if getattr(args, "container", None) else []
    groups: dict[str, tuple[int, list[str]]] = {}
    idle: list[str] = []
    for name in names:
        found = _running_supervisor(args, name)
        if found is None:
            idle.append(name)
        else:
            supervisor, namespace = found
            groups.setdefault(namespace, (supervisor, []))[1].append(name)
    result: list[tuple[int | None, list[str]]] = [(pid, group) for pid, group in groups.values()]
    if not result:
        return [(None, names)]
    result[0][1].extend(idle)
    return result


def _running_supervisor(args: argparse.Namespace, name: str) -> tuple[int, str] | None:
    """The supervisor pid of container ``name`` and its user namespace, when it runs."""
    from pathlib import Path

    from pybuild.cache import default_root_path
    from pybuild.errors import PybuildError
    from pybuild.executors import ContainerRuntime, ContainerStore

    class _At:
        def __init__(self, path: Path) -> None:
            self.path = path

    root = Path(args.root) if getattr(args, "root", None) else default_root_path()
    if not (root / "containers").is_dir():
        return None
    try:
        record = ContainerStore(_At(root)).get(name)
    except PybuildError:
        return None  # the command reports it, inside the namespace
    status = ContainerRuntime.status(str(record.directory))
    pid = status.state.supervisor_pid
    if not (status.supervised and pid):
        return None
    try:
        return pid, os.readlink(f"/proc/{pid}/ns/user")
    except OSError:
        return None  # gone meanwhile, or not ours: the command says what it finds
