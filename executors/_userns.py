"""Rootless pybuild: one user namespace, entered once at start, where the caller is root.

A non-root ``pybuild`` calls ``enter_userns()`` before trio or any thread starts
(unshare(CLONE_NEWUSER) needs a single-threaded process).  A helper forked
before the unshare stays in the host's namespace and maps the ids from there:
``newuidmap``/``newgidmap`` (setuid, Debian's ``uidmap``) map container id 0 to
the caller and 1.. onto the caller's subordinate ranges (``/etc/subuid``,
``/etc/subgid``), as rootlesskit and Podman do.  Without ranges the process
maps only itself (``0 UID 1``, setgroups denied) and warns once about what
cannot work.  Then it becomes uid/gid 0 and takes a private mount namespace:
from there on every code path is the root one, so layers record the ids as
the container sees them and a rootless build makes the same images as root.

Commands on an existing container join the user namespace of its supervisor
instead (``join_userns``): its mounts and processes belong to that namespace.

Stdlib only (like ``_linux``), and cheap to import: ``cli`` imports it at start.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass

from . import _linux as linux

TYPE_CHECKING = False  # not typing's: this module is imported at every rootless start
if TYPE_CHECKING:
    from collections.abc import Callable

CLONE_NEWUSER = 0x10000000
# set in the environment once entered: a child pybuild (or the container shim) knows it is
# already inside the namespace, and the rest of this process can ask `rootless()`
ENV_MARKER = "PYBUILD_ROOTLESS"
SUBUID_FILE = "/etc/subuid"
SUBGID_FILE = "/etc/subgid"
# the id range pybuild asks for in the warning, as Podman's and Docker's rootless docs do
SUGGESTED_RANGE = "100000-165535"
# for a caller neither root nor inside a namespace (the library used directly)
ROOTLESS_HINT = "run it through the pybuild command, which enters a user namespace when not root (or call executors.enter_userns() first)"


@dataclass(frozen=True)
class IdRange:
    """``count`` host ids from ``host`` on, seen in the namespace from ``inside`` on."""

    inside: int
    host: int
    count: int


@dataclass(frozen=True)
class RootlessInfo:
    """How this rootless process maps ids: the caller's ``uid``/``gid`` on the host
    become 0; ``subuids``/``subgids`` are the subordinate ranges mapped after it
    (empty with ``one_id``, the mapping of the caller alone)."""

    uid: int
    gid: int
    subuids: tuple[IdRange, ...]
    subgids: tuple[IdRange, ...]
    one_id: bool


_entered: RootlessInfo | None = None


def rootless() -> RootlessInfo | None:
    """How ids are mapped if this process entered a user namespace at start, else None."""
    return _entered


def host_uid() -> int:
    """The caller's uid on the host (for names of per-user files outside the root, such as
    in /tmp): a rootless process is uid 0 inside, which would be real root's name."""
    return _entered.uid if _entered is not None else os.geteuid()


def subordinate_ranges(path: str, name: str, ident: int) -> tuple[IdRange, ...]:
    """The caller's ranges in ``/etc/subuid``-style ``path`` (lines ``NAME|ID:START:COUNT``),
    laid out one after the other from id 1 in the namespace (0 is the caller)."""
    ranges: list[IdRange] = []
    inside = 1
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ()
    for line in lines:
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (name, str(ident)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start < 0 or count <= 0:
            continue
        ranges.append(IdRange(inside, start, count))
        inside += count
    return tuple(ranges)


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _map_arguments(own: int, ranges: tuple[IdRange, ...]) -> list[str]:
    arguments = ["0", str(own), "1"]
    for r in ranges:
        arguments += [str(r.inside), str(r.host), str(r.count)]
    return arguments


class UsernsError(OSError):
    """The namespace could not be entered; ``cli`` turns it into a SandboxError."""


def enter_userns(warn: Callable[[str], None] | None = None) -> RootlessInfo:
    """Enter a new user namespace (root inside) and a private mount namespace.

    Call only when not root, before any thread starts.  ``warn`` (a callable taking
    one line) gets the one-id warning; stderr by default.
    """
    global _entered
    uid, gid = os.getuid(), os.getgid()
    name = _user_name(uid)
    subuids = subordinate_ranges(SUBUID_FILE, name, uid)
    subgids = subordinate_ranges(SUBGID_FILE, name, uid)
    one_id = not (subuids and subgids and _have_map_tools())
    if one_id:
        _unshare_user()
        _write_one_id_map(uid, gid)
    else:
        _map_through_helper(uid, gid, subuids, subgids)
    _become_root(keep_groups=not one_id)
    _private_mounts()
    _entered = RootlessInfo(uid, gid, () if one_id else subuids, () if one_id else subgids, one_id)
    os.environ[ENV_MARKER] = "1"
    if one_id:
        _warn_one_id(name, warn)
    return _entered


def join_userns(pid: int, uid: int | None = None, gid: int | None = None) -> RootlessInfo:
    """Join the user namespace of process ``pid`` (a container's supervisor, which an
    earlier rootless pybuild of this user started), become root there and take a
    private mount namespace.  The ranges are read again: they are what that run mapped."""
    global _entered
    uid = os.getuid() if uid is None else uid
    gid = os.getgid() if gid is None else gid
    try:
        fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as error:
        raise UsernsError(error.errno, f"cannot open the user namespace of process {pid}: {error.strerror}") from None
    try:
        linux.setns(fd, CLONE_NEWUSER)
    except OSError as error:
        raise _namespace_error(f"cannot join the user namespace of process {pid}", error) from None
    finally:
        os.close(fd)
    subuids, subgids = _mapped_after_root("uid_map"), _mapped_after_root("gid_map")
    one_id = not subuids
    _become_root(keep_groups=not one_id)
    _private_mounts()
    _entered = RootlessInfo(uid, gid, subuids, subgids, one_id)
    os.environ[ENV_MARKER] = "1"
    return _entered


def _mapped_after_root(which: str) -> tuple[IdRange, ...]:
    """The ranges after id 0 in this process's map (once joined: what that run mapped)."""
    return tuple(IdRange(inside, host, count) for inside, host, count in linux.read_id_map(which) if inside != 0)


def _have_map_tools() -> bool:
    import shutil

    return shutil.which("newuidmap") is not None and shutil.which("newgidmap") is not None


def _unshare_user() -> None:
    try:
        linux.unshare(CLONE_NEWUSER)
    except OSError as error:
        raise _namespace_error("cannot create a user namespace", error) from None


def _namespace_error(what: str, error: OSError) -> UsernsError:
    """The kernel's refusal; EINVAL from a process with threads means it entered too late
    (unshare(2) and setns(2) of a user namespace need a single-threaded caller)."""
    import threading

    if error.errno == errno.EINVAL and threading.active_count() > 1:
        return UsernsError(error.errno, f"{what}: the process already runs threads (enter before starting any)")
    return UsernsError(error.errno, f"{what}: {error.strerror}")


def _write_one_id_map(uid: int, gid: int) -> None:
    # a process may map only its own ids without privileges, and only once setgroups is denied
    try:
        with open("/proc/self/setgroups", "w", encoding="ascii") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w", encoding="ascii") as f:
            f.write(f"0 {uid} 1\n")
        with open("/proc/self/gid_map", "w", encoding="ascii") as f:
            f.write(f"0 {gid} 1\n")
    except OSError as error:
        raise UsernsError(error.errno, f"cannot map ids in the user namespace: {error.strerror}") from None


def _map_through_helper(uid: int, gid: int, subuids: tuple[IdRange, ...], subgids: tuple[IdRange, ...]) -> None:
    """Fork a helper that stays outside, unshare, and let the helper run newuidmap/newgidmap
    on this process: the setuid tools only work from the namespace's parent."""
    target = os.getpid()
    go_read, go_write = os.pipe()
    done_read, done_write = os.pipe()
    helper = os.fork()
    if helper == 0:  # the helper: wait for the unshare, map, report, exit
        os.close(go_write)
        os.close(done_read)
        code = 1
        try:
            if os.read(go_read, 1) == b"1":
                problem = _run_map_tools(target, uid, gid, subuids, subgids)
                os.write(done_write, problem.encode()[:4000])
                code = 0
        finally:
            os._exit(code)
    os.close(go_read)
    os.close(done_write)
    try:
        try:
            linux.unshare(CLONE_NEWUSER)
        except OSError as error:
            os.write(go_write, b"0")
            raise _namespace_error("cannot create a user namespace", error) from None
        os.write(go_write, b"1")
        problem = _read_all(done_read).decode(errors="replace").strip()
    finally:
        os.close(go_write)
        os.close(done_read)
        os.waitpid(helper, 0)
    if problem:
        raise UsernsError(0, f"cannot map the subordinate ids: {problem}")


def _run_map_tools(target: int, uid: int, gid: int, subuids: tuple[IdRange, ...], subgids: tuple[IdRange, ...]) -> str:
    """Run newuidmap and newgidmap on ``target`` (side by side: each is an exec of a setuid
    binary, the one cost of entering); their complaint, or "" when both worked."""
    import subprocess

    running = []
    for tool, own, ranges in (("newuidmap", uid, subuids), ("newgidmap", gid, subgids)):
        try:
            running.append((tool, subprocess.Popen(
                [tool, str(target), *_map_arguments(own, ranges)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )))  # fmt: skip
        except OSError as error:
            return f"{tool}: {error.strerror}"
    problems = []
    for tool, process in running:
        _, stderr = process.communicate()
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            problems.append(lines[-1] if lines else f"{tool} exited with {process.returncode}")
    return "; ".join(problems)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def _become_root(*, keep_groups: bool) -> None:
    try:
        os.setresgid(0, 0, 0)
        if keep_groups:
            # the host's supplementary groups would show as the overflow gid: drop them
            os.setgroups([])
        os.setresuid(0, 0, 0)
    except OSError as error:
        raise UsernsError(error.errno, f"cannot become root in the user namespace: {error.strerror}") from None


def _private_mounts() -> None:
    try:
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError as error:
        raise UsernsError(error.errno, f"cannot create a mount namespace: {error.strerror}") from None


def one_id_warning(name: str) -> str:
    return (
        f"no subordinate ids for user {name} in {SUBUID_FILE} and {SUBGID_FILE} (or newuidmap/newgidmap "
        "missing: Debian's uidmap): building with your id alone as root; USER other than root, chown "
        "to other ids and package managers that drop to their own user (apt's _apt) cannot work. "
        f"Add a range: sudo usermod --add-subuids {SUGGESTED_RANGE} --add-subgids {SUGGESTED_RANGE} {name}"
    )


def _warn_one_id(name: str, warn: Callable[[str], None] | None) -> None:
    message = one_id_warning(name)
    if warn is not None:
        warn(message)
    else:
        sys.stderr.write(f"warning: {message}\n")
        sys.stderr.flush()
