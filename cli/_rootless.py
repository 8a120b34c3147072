"""Rootless start: a non-root ``pybuild`` enters its user namespace here, before trio.

Every command that touches the pybuild root runs as root inside one user namespace
(``executors.enter_userns``); the ones that only read a Dockerfile (``parse``,
``check``, ``graph``) or need the real root (``binfmt``) never enter.  Commands on
an existing container join the namespace of its supervisor when it is alive, as
its mounts and processes live there; a stopped container's files need only the
same id mapping, which a new namespace of the same user has.
"""

from __future__ import annotations

import argparse
import os

from pybuild.errors import SandboxError

# commands that never enter: they read a Dockerfile, or need the host's root
NEVER_ENTER = frozenset({"parse", "check", "graph", "binfmt"})
# commands on existing containers: join a running one's namespace
JOIN_CONTAINER = frozenset({"exec", "stop", "logs", "diff", "commit", "rm"})


def enter_if_needed(command: str, args: argparse.Namespace) -> None:
    """Enter (or join) the user namespace when not root and ``command`` needs it."""
    if os.geteuid() == 0 or command in NEVER_ENTER:
        return
    _keep_home()
    from pybuild.executors import enter_userns, join_userns

    try:
        supervisor = _running_supervisor(args) if command in JOIN_CONTAINER else None
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


def _keep_home() -> None:
    """Inside, uid 0's passwd entry is root's: the default root, registry credentials and
    XDG paths must stay the caller's, so HOME is fixed from the real uid first."""
    if not os.environ.get("HOME"):
        import pwd

        try:
            os.environ["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            pass


def _running_supervisor(args: argparse.Namespace) -> int | None:
    """The supervisor pid of the first named container that is running, if any."""
    names = [args.container] if getattr(args, "container", None) else list(getattr(args, "containers", None) or ())
    if not names:
        return None
    from pathlib import Path

    from pybuild.cache import default_root_path
    from pybuild.errors import PybuildError
    from pybuild.executors import ContainerRuntime, ContainerStore

    class _At:
        def __init__(self, path: Path) -> None:
            self.path = path

    root = Path(args.root) if getattr(args, "root", None) else default_root_path()
    if not root.is_dir():
        return None
    store = ContainerStore(_At(root))
    for name in names:
        try:
            record = store.get(name)
        except PybuildError:
            continue  # the command reports it, inside the namespace
        status = ContainerRuntime.status(str(record.directory))
        if status.supervised and status.state.supervisor_pid:
            return status.state.supervisor_pid
    return None
