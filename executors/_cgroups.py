"""Per-step cgroups: a pids limit, an optional memory limit, device rules, kill-all.

Each step gets ``pybuild/<pid>-<n>`` in every hierarchy it uses.  Which
hierarchy serves what is decided from ``/proc/self/mountinfo``:

- pids and memory: the cgroup v1 controller if it is mounted, else the v2
  controller if the v2 root offers it (then enabled in ``pybuild``'s subtree).
- devices: cgroup v1 only.  As in Docker, a step may create any node
  (mknod, "m") but read and write only the ones the sandbox binds into
  /dev: ``RUN mknod`` works and the node is kept in the layer, opening it
  is refused unless it is one of those, or a node of the step's
  ``RUN --device`` (``create(device_rules=...)``).
  On a v2-only machine no device rules are applied (see ``describe``).
- kill: the v2 hierarchy's ``cgroup.kill`` when a v2 hierarchy is mounted
  (it needs no controller), else SIGKILL to every pid listed by a v1 group.

Rootless (in a user namespace), only the hierarchies this process may write
are used (``usable_layout``): on a host that delegates none, a step has no
pids or memory limit and no device rules (pybuild warns once; a memory
limit is an error), as runc rootless without systemd.  A step's processes
still end with it: its init is pid 1 of its pid namespace, so the kernel
kills the rest when it exits.  Where systemd delegated this process's own v2
cgroup to the user (``Delegate=``), that cgroup serves pids and memory
instead (``with_delegation``; the layout in ``_cgroups_delegated``).  Device nodes cannot be made or used there
anyway: mknod of a real device needs CAP_MKNOD in the host's namespace.

The monitor process joins the groups by writing its pid to the
``cgroup.procs`` files returned by ``create``; everything it forks inherits
them.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import sys
from dataclasses import dataclass, field

TYPE_CHECKING = False  # not typing's: the zygote and the shim do not import typing
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

CGROUP_PARENT = "pybuild"

# (type, major, minor) readable and writable in the sandbox (see _sandbox.DEVICES), and mknod of any node.
ALLOWED_DEVICES = (
    "c 1:3 rw",  # null
    "c 1:5 rw",  # zero
    "c 1:7 rw",  # full
    "c 1:8 rw",  # random
    "c 1:9 rw",  # urandom
    "c 5:0 rw",  # tty
    "c 5:2 rw",  # ptmx
    "c 136:* rw",  # pts/*
    "c *:* m",  # Docker's default: creating any node is allowed, using it is not
    "b *:* m",
)

_counter = itertools.count(1)
_warned: list[bool] = []

if __package__:
    from . import _cgroups_delegated as delegated
    from . import _linux as linux
else:  # loaded by the zygote and the shim as top-level modules
    import _cgroups_delegated as delegated
    import _linux as linux


@dataclass(frozen=True)
class CgroupLayout:
    """Where each cgroup feature lives on this machine."""

    v1: dict[str, str] = field(default_factory=dict)  # controller -> mount point
    v2: str | None = None  # cgroup2 mount point
    v2_controllers: frozenset[str] = frozenset()
    # Mounted hierarchies left out because this (rootless) process may not write them.
    unwritable: tuple[str, ...] = ()
    # Rootless with a delegated v2 cgroup: that directory, under which steps' groups go.
    v2_delegated: str | None = None

    def home(self, controller: str) -> str | None:
        """"v1", "v2" or None: which hierarchy serves a controller."""
        if controller in self.v1:
            return "v1"
        if controller in self.v2_controllers:
            return "v2"
        return None

    def describe(self) -> str:
        parts = []
        for controller in ("pids", "memory", "devices"):
            parts.append(f"{controller}: {self.home(controller) or 'unavailable'}")
        parts.append("kill: " + ("v2 cgroup.kill" if self.v2 else "v1 signals"))
        return ", ".join(parts)


def parse_layout(mountinfo: str, read_controllers: Callable[[str], str] | None = None) -> CgroupLayout:
    """The layout from /proc/self/mountinfo text (``read_controllers(path)`` reads a v2 root's list)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        mount_point = fields[4].replace("\\040", " ")
        fstype, super_options = tail[0], tail[2].split(",")
        if fstype == "cgroup":
            for controller in ("pids", "memory", "devices", "freezer"):
                if controller in super_options:
                    v1.setdefault(controller, mount_point)
        elif fstype == "cgroup2" and v2 is None:
            v2 = mount_point
    controllers: frozenset[str] = frozenset()
    if v2 is not None:
        text = (read_controllers or _read_controllers)(v2)
        controllers = frozenset(text.split()) - set(v1)
    return CgroupLayout(v1=v1, v2=v2, v2_controllers=controllers)


def _read_controllers(root: str) -> str:
    try:
        with open(os.path.join(root, "cgroup.controllers")) as f:
            return f.read()
    except OSError:
        return ""


def detect_layout() -> CgroupLayout:
    with open("/proc/self/mountinfo") as f:
        layout = parse_layout(f.read())
    # As root on the host every mounted hierarchy is used (an unwritable one is an error).
    if not linux.in_user_namespace():
        return layout
    with open("/proc/self/cgroup") as f:
        return with_delegation(usable_layout(layout), layout.v2, f.read())


def with_delegation(
    usable: CgroupLayout, mount: str | None, proc_self_cgroup: str, can_write: Callable[[str], bool] | None = None
) -> CgroupLayout:
    """``usable`` (rootless) with the v2 cgroup delegated to this process, if any, serving pids and memory."""
    if usable.v2 is not None or mount is None:
        return usable
    found = delegated.find_delegated(mount, proc_self_cgroup, can_write=can_write)
    if found is None:
        return usable
    directory, offered = found
    return CgroupLayout(
        v1=usable.v1, v2=mount, v2_controllers=offered - set(usable.v1),
        unwritable=tuple(root for root in usable.unwritable if root != mount), v2_delegated=directory,
    )


def claim_delegated(layout: CgroupLayout) -> None:
    """Move this process into its leaf of the delegated cgroup (before it forks long-lived helpers)."""
    if layout.v2_delegated is not None:
        try:
            delegated.prepare(layout.v2_delegated, layout.v2_controllers)
        except OSError as e:
            raise CgroupError(f"cannot use the delegated cgroup: {e.strerror} ({e.filename})") from None


def release_delegated(layout: CgroupLayout) -> None:
    """Leave the delegated cgroup as it was found, once no step group is left in it."""
    if layout.v2_delegated is not None:
        delegated.release(layout.v2_delegated)


def usable_layout(layout: CgroupLayout, can_write: Callable[[str], bool] | None = None) -> CgroupLayout:
    """``layout`` without the hierarchies ``can_write(root)`` refuses (rootless: owned by the host's root)."""
    writable = can_write or _can_write
    v1 = {c: root for c, root in layout.v1.items() if writable(root)}
    v2 = layout.v2 if layout.v2 is not None and writable(layout.v2) else None
    dropped = {root for root in layout.v1.values() if root not in v1.values()}
    if layout.v2 is not None and v2 is None:
        dropped.add(layout.v2)
    return CgroupLayout(v1=v1, v2=v2, v2_controllers=layout.v2_controllers if v2 else frozenset(), unwritable=tuple(sorted(dropped)))


def _can_write(root: str) -> bool:
    """Whether groups can be made here: in ``pybuild`` if it exists (an administrator may hand it over), else the root."""
    parent = os.path.join(root, CGROUP_PARENT)
    return os.access(parent if os.path.isdir(parent) else root, os.W_OK)


def no_memory_reason(layout: CgroupLayout) -> str:
    if layout.unwritable:
        return "a memory limit needs a memory cgroup, and this rootless pybuild may write no cgroup here"
    return "a memory limit needs the memory cgroup controller, which is not available"


def memory_limit_unavailable() -> str | None:
    """Why this process cannot apply a memory limit, or None: asked before a build runs anything,
    so ``--memory`` fails at once rather than at the first step that is not cached."""
    layout = detect_layout()
    return None if layout.home("memory") is not None else no_memory_reason(layout)


def warn_if_limited(layout: CgroupLayout) -> None:
    """Say once per process that rootless steps have no pids or memory limit here."""
    if _warned or (not layout.unwritable and layout.v2_delegated is None) or layout.home("pids") is not None:
        return
    _warned.append(True)
    if layout.v2_delegated is not None:  # systemd delegated memory without pids
        sys.stderr.write(f"warning: rootless: the delegated cgroup {layout.v2_delegated} offers no pids controller, "
                         "so steps and containers run without a pids limit\n")
    else:
        sys.stderr.write(
            "warning: rootless: no cgroup this user may write, so steps and containers run without a pids "
            "or memory limit (--memory is refused); their processes still end with them\n"
        )
    sys.stderr.flush()


class CgroupError(Exception):
    pass


class StepCgroups:
    """The cgroups of one step; ``create`` then, after the step, ``kill`` and ``remove``."""

    def __init__(self, layout: CgroupLayout, name: str | None = None) -> None:
        self.layout = layout
        self.name = name or f"{os.getpid()}-{next(_counter)}"
        self.paths: list[str] = []
        self.memory_events: str | None = None  # where the kernel counts the group's OOM kills

    def create(
        self, pids_limit: int | None, memory_limit: int | None, *, all_devices: bool = False, device_rules: Sequence[str] = ()
    ) -> list[str]:
        """Make the groups, apply the limits; return the cgroup.procs files to join.

        ``all_devices`` (RUN --security=insecure) allows every device, mknod included;
        ``device_rules`` (``c 1:3 rw``) allow more, the nodes of RUN --device.
        """
        layout = self.layout
        warn_if_limited(layout)
        if memory_limit is not None and layout.home("memory") is None:
            raise CgroupError(no_memory_reason(layout))
        try:
            if layout.v2 is not None:
                wanted = [c for c in ("pids", "memory") if layout.home(c) == "v2"]
                path = self._make(layout.v2, wanted)
                if "pids" in wanted and pids_limit is not None:
                    _write(path, "pids.max", str(pids_limit))
                if "memory" in wanted and memory_limit is not None:
                    _write(path, "memory.max", str(memory_limit))
                    _write(path, "memory.swap.max", "0", missing_ok=True)
                    self.memory_events = os.path.join(path, "memory.events")
            if layout.home("pids") == "v1" and pids_limit is not None:
                path = self._make(layout.v1["pids"])
                _write(path, "pids.max", str(pids_limit))
            if layout.home("memory") == "v1" and memory_limit is not None:
                path = self._make(layout.v1["memory"])
                _write(path, "memory.limit_in_bytes", str(memory_limit))
                _write(path, "memory.memsw.limit_in_bytes", str(memory_limit), missing_ok=True)
                self.memory_events = os.path.join(path, "memory.oom_control")
            if "devices" in layout.v1:
                path = self._make(layout.v1["devices"])
                if all_devices:
                    _write(path, "devices.allow", "a")
                else:
                    _write(path, "devices.deny", "a")
                    for rule in (*ALLOWED_DEVICES, *device_rules):
                        _write(path, "devices.allow", rule)
        except OSError as e:
            self.remove()
            raise CgroupError(f"cannot create the step's cgroup: {e.strerror} ({e.filename})") from None
        return [os.path.join(p, "cgroup.procs") for p in self.paths]

    def _make(self, root: str, enable: Sequence[str] = ()) -> str:
        if root == self.layout.v2 and self.layout.v2_delegated is not None:
            # The controllers were enabled when this process moved into its leaf.
            parent = delegated.prepare(self.layout.v2_delegated, self.layout.v2_controllers)
            return self._make_in(parent)
        parent = os.path.join(root, CGROUP_PARENT)
        try:
            os.mkdir(parent, 0o755)
        except FileExistsError:
            pass
        if enable:
            # v2: a controller must be enabled in every ancestor's subtree.
            for directory in (root, parent):
                _write(directory, "cgroup.subtree_control", " ".join("+" + c for c in enable))
        return self._make_in(parent)

    def _make_in(self, parent: str) -> str:
        path = os.path.join(parent, self.name)
        os.mkdir(path, 0o755)
        self.paths.append(path)
        return path

    def kill(self) -> None:
        """SIGKILL every process still in the step's groups."""
        for path in self.paths:
            if self.layout.v2 is not None and path.startswith(self.layout.v2.rstrip("/") + "/"):
                _write(path, "cgroup.kill", "1", missing_ok=True, ignore_errors=True)
                continue
            for pid in _pids(path):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def oom_kills(self) -> int:
        """How many of the group's processes the kernel killed for reaching the memory limit.

        v2 counts them in ``memory.events``, v1 (kernel >= 4.13) in
        ``memory.oom_control``; both as an ``oom_kill N`` line.  Read it
        before ``remove``.
        """
        if self.memory_events is None:
            return 0
        try:
            with open(self.memory_events, encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            return 0
        return parse_oom_kills(text)

    def populated(self) -> bool:
        return any(_pids(path) for path in self.paths)

    def remove(self) -> bool:
        """Remove the groups; False while one still has processes (try again)."""
        remaining = []
        for path in self.paths:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                    raise
                remaining.append(path)
        self.paths = remaining
        return not remaining


def parse_oom_kills(text: str) -> int:
    """The ``oom_kill`` count of a ``memory.events`` or ``memory.oom_control`` file."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def remove_stale(layout: CgroupLayout) -> None:
    """Remove empty step groups left by pybuild processes that no longer exist."""
    if layout.v2_delegated is not None:
        delegated.remove_stale(layout.v2_delegated)
    roots = set(layout.v1.values()) | ({layout.v2} if layout.v2 and layout.v2_delegated is None else set())
    for root in roots:
        parent = os.path.join(root, CGROUP_PARENT)
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            owner = name.split("-", 1)[0]
            if not owner.isdigit() or int(owner) == os.getpid() or os.path.exists(f"/proc/{owner}"):
                continue
            try:
                os.rmdir(os.path.join(parent, name))
            except OSError:
                pass


def _pids(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return [int(line) for line in f if line.strip()]
    except OSError:
        return []


def _write(directory: str, name: str, value: str, *, missing_ok: bool = False, ignore_errors: bool = False) -> None:
    try:
        fd = os.open(os.path.join(directory, name), os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return
        raise
    try:
        os.write(fd, value.encode())
    except OSError:
        if not ignore_errors:
            raise
    finally:
        os.close(fd)
