"""Rootless cgroup v2 delegation: step groups under the cgroup systemd handed to this user.

systemd's ``Delegate=`` (docs/CGROUP_DELEGATION.md) gives a unit's cgroup to
its user: the directory and its ``cgroup.procs`` and
``cgroup.subtree_control`` are the user's, and its ``cgroup.controllers``
lists the controllers the parent enabled for it (``pids memory`` by
default for ``user@.service``, as runc's docs/cgroup-v2.md says).  In
pybuild's user namespace the owner is the caller, so ``os.access`` says
whether it was delegated.

cgroup v2's "no internal processes" rule lets a group enable controllers for
its children only while it holds no process itself, so, as rootlesskit's
``--evacuate-cgroup2`` and BuildKit's rootless mode (docs/rootless.md,
"systemd-run --user -p Delegate=yes") arrange it, pybuild moves itself into a
leaf::

    <own>/pybuild-<pid>/main      the processes that were in <own> (pybuild, helpers it started)
    <own>/pybuild-<pid>/<step>    one per step or container, with pids.max, memory.max

and enables the offered ``pids``/``memory`` in ``<own>`` and
``<own>/pybuild-<pid>``.  As rootlesskit's evacuation, every process of
``<own>`` moves (a fuse-overlayfs pybuild started, or whatever shares a
delegated unit with it; best is a scope of its own, ``systemd-run --user
--scope -p Delegate=yes pybuild ...``), and moves back at the end.

Every function takes the cgroup2 mount point and the /proc/self/cgroup text,
so tests can point them at a tree of plain files.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False  # not typing's: the shim does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

LIMITED = ("pids", "memory")  # the controllers steps are limited by, in the order enabled
PREFIX = "pybuild-"
LEAF = "main"

_prepared: dict[tuple[str, int], str] = {}


def own_cgroup(proc_self_cgroup: str) -> str | None:
    """This process's cgroup v2 path (the ``0::/path`` line), or None on a v1-only machine."""
    for line in proc_self_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "" and path.startswith("/"):
            return path
    return None


def find_delegated(
    mount: str, proc_self_cgroup: str, *, pid: int | None = None, can_write: Callable[[str], bool] | None = None
) -> tuple[str, frozenset[str]] | None:
    """The delegated directory and the limit controllers it offers, or None.

    Delegated means: this process's own cgroup (below the hierarchy's root),
    writable with its ``cgroup.procs`` and ``cgroup.subtree_control``, and
    offering ``pids`` or ``memory``.  Once ``prepare`` moved this process into
    its leaf, the delegated group is the leaf's grandparent.
    """
    path = own_cgroup(proc_self_cgroup)
    if path is None:
        return None
    leaf = f"/{PREFIX}{os.getpid() if pid is None else pid}/{LEAF}"
    if path.endswith(leaf):
        path = path[: -len(leaf)]
    parts = [part for part in path.split("/") if part]
    if not parts or ".." in parts:
        return None  # the hierarchy's root is never delegated
    directory = os.path.join(mount, *parts)
    writable = can_write or (lambda p: os.access(p, os.W_OK))
    if not all(writable(os.path.join(directory, name)) for name in ("", "cgroup.procs", "cgroup.subtree_control")):
        return None
    try:
        with open(os.path.join(directory, "cgroup.controllers")) as f:
            offered = frozenset(f.read().split()) & set(LIMITED)
    except OSError:
        return None
    return (directory, offered) if offered else None


def parent_of(directory: str, pid: int | None = None) -> str:
    return os.path.join(directory, f"{PREFIX}{os.getpid() if pid is None else pid}")


def prepare(directory: str, controllers: Iterable[str], *, pid: int | None = None) -> str:
    """Move this process into its leaf and enable ``controllers``; the parent of its step groups.

    Done once per process, before the zygote is forked.  Raises OSError
    (EBUSY naming the cause if processes keep joining ``directory``).
    """
    pid = os.getpid() if pid is None else pid
    key = (directory, pid)
    if key in _prepared:
        return _prepared[key]
    enable = " ".join("+" + c for c in LIMITED if c in set(controllers))
    parent = parent_of(directory, pid)
    leaf = os.path.join(parent, LEAF)
    os.makedirs(leaf, 0o755, exist_ok=True)
    _write(leaf, "cgroup.procs", str(pid))
    try:
        _move_all(directory, leaf)
        if enable:
            _write(directory, "cgroup.subtree_control", enable)
            _write(parent, "cgroup.subtree_control", enable)
    except OSError as e:
        _undo(directory, parent)
        if e.errno == errno.EBUSY:
            raise OSError(
                errno.EBUSY,
                "processes keep joining the delegated cgroup; run pybuild in a scope of its own "
                "(systemd-run --user --scope -p Delegate=yes pybuild ...)",
                directory,
            ) from None
        raise
    _prepared[key] = parent
    return parent


def release(directory: str, *, pid: int | None = None, rmdir: Callable[[str], None] | None = None) -> None:
    """Give ``directory`` back as it was: controllers off, this process back in it, its subtree gone.

    Left as is while a step or a detached container still has a group there
    (a later pybuild's ``remove_stale`` removes it once this process is gone).
    """
    pid = os.getpid() if pid is None else pid
    parent = _prepared.pop((directory, pid), None)
    if parent is None:
        return
    remove = rmdir or os.rmdir
    try:
        if any(entry.is_dir() and entry.name != LEAF for entry in os.scandir(parent)):
            return
        off = " ".join("-" + c for c in LIMITED)
        _write(parent, "cgroup.subtree_control", off)
        if not any(entry.is_dir() and entry.name != os.path.basename(parent) for entry in os.scandir(directory)):
            _write(directory, "cgroup.subtree_control", off)
        _move_all(os.path.join(parent, LEAF), directory)
        remove(os.path.join(parent, LEAF))
        remove(parent)
    except OSError:
        pass  # a sibling still uses the controllers: stay in the leaf, a later pybuild removes it


def remove_stale(
    directory: str, *, alive: Callable[[int], bool] | None = None, rmdir: Callable[[str], None] | None = None
) -> None:
    """Remove the ``pybuild-<pid>`` subtrees of pybuild processes that no longer exist."""
    is_alive = alive or (lambda pid: os.path.exists(f"/proc/{pid}"))
    remove = rmdir or os.rmdir
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        owner = name[len(PREFIX):] if name.startswith(PREFIX) else ""
        if not owner.isdigit() or int(owner) == os.getpid() or is_alive(int(owner)):
            continue
        parent = os.path.join(directory, name)
        try:
            for entry in os.scandir(parent):
                if entry.is_dir():
                    remove(entry.path)
            remove(parent)
        except OSError:
            pass  # a detached container still runs there


def _move_all(source: str, target: str) -> None:
    """Move every process of ``source`` into ``target``; a few rounds, as a process may fork meanwhile."""
    for _ in range(8):
        pids = _procs(source)
        if not pids:
            return
        for pid in pids:
            try:
                _write(target, "cgroup.procs", pid)
            except ProcessLookupError:
                pass  # it ended


def _procs(directory: str) -> list[str]:
    with open(os.path.join(directory, "cgroup.procs")) as f:
        return f.read().split()


def _undo(directory: str, parent: str) -> None:
    try:
        _move_all(os.path.join(parent, LEAF), directory)
        os.rmdir(os.path.join(parent, LEAF))
        os.rmdir(parent)
    except OSError:
        pass


def _write(directory: str, name: str, value: str) -> None:
    fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)
