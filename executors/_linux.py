"""Thin ctypes bindings for the Linux calls the sandbox needs.

Stdlib only: this module is also imported by the zygote process, which runs as
``python -I -S`` without pybuild on its path (see ``_zygote.py``).  Every
wrapper raises ``OSError`` with the errno; translating that into a pybuild
error is the job of the caller at the package edge.

The "new mount API" calls (``fsopen`` ...) have the same syscall number on
every architecture (they were added after the tables were unified); the older
ones that glibc does not wrap are looked up per architecture.
"""

from __future__ import annotations

import ctypes
import os

TYPE_CHECKING = False  # not typing's: the zygote does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterator

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# Numbers shared by all architectures (asm-generic, >= 424).
SYS_pidfd_send_signal = 424
SYS_open_tree = 428
SYS_move_mount = 429
SYS_fsopen = 430
SYS_fsconfig = 431
SYS_fsmount = 432
SYS_close_range = 436
SYS_openat2 = 437
SYS_mount_setattr = 442

_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SYS_pivot_root = _PIVOT_ROOT.get(os.uname().machine, -1)  # platform.machine(), without importing platform
_RT_SIGACTION = {"x86_64": 13, "aarch64": 134, "riscv64": 134, "ppc64le": 173, "s390x": 174}
SYS_rt_sigaction = _RT_SIGACTION.get(os.uname().machine, -1)

# unshare(2) / clone(2) flags
CLONE_FS = 0x00000200
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount(2) flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MNT_DETACH = 0x2

# new mount API
FSOPEN_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
FSMOUNT_CLOEXEC = 0x1
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
AT_FDCWD = -100

# openat2 resolve flags
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_CHILD_SUBREAPER = 36

CLOSE_RANGE_CLOEXEC = 1 << 2

_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _b(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return os.fsencode(value)


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    result = _libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(result, f"mount {fstype or 'bind'} on {target}", target)


def syncfs(fd: int) -> None:
    """Write out the file system of ``fd``; an error the file system hit since ``fd`` was opened raises."""
    _check(_libc.syncfs(ctypes.c_int(fd)), "syncfs")


def umount2(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_syscall(ctypes.c_long(SYS_pivot_root), _b(new_root), _b(put_old)), "pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    args = [ctypes.c_ulong(a) for a in (arg2, arg3, arg4, arg5)]
    return _check(_libc.prctl(ctypes.c_int(option), *args), "prctl")


def fsopen(fstype: str) -> int:
    return _check(_syscall(ctypes.c_long(SYS_fsopen), _b(fstype), ctypes.c_uint(FSOPEN_CLOEXEC)), f"fsopen {fstype}")


def fsconfig_string(fs_fd: int, key: str, value: str | bytes) -> None:
    result = _syscall(
        ctypes.c_long(SYS_fsconfig), ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_STRING), _b(key), _b(value), ctypes.c_int(0)
    )
    _check(result, f"fsconfig {key}", value if isinstance(value, str) else None)


def fsconfig_flag(fs_fd: int, key: str) -> None:
    result = _syscall(
        ctypes.c_long(SYS_fsconfig), ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_SET_FLAG), _b(key), None, ctypes.c_int(0)
    )
    _check(result, f"fsconfig {key}")


def fsconfig_create(fs_fd: int) -> None:
    result = _syscall(
        ctypes.c_long(SYS_fsconfig), ctypes.c_int(fs_fd), ctypes.c_uint(FSCONFIG_CMD_CREATE), None, None, ctypes.c_int(0)
    )
    _check(result, "fsconfig create")


def fsmount(fs_fd: int, attr_flags: int = 0) -> int:
    result = _syscall(
        ctypes.c_long(SYS_fsmount), ctypes.c_int(fs_fd), ctypes.c_uint(FSMOUNT_CLOEXEC), ctypes.c_uint(attr_flags)
    )
    return _check(result, "fsmount")


def open_tree(path: str, flags: int, dirfd: int = AT_FDCWD) -> int:
    result = _syscall(ctypes.c_long(SYS_open_tree), ctypes.c_int(dirfd), _b(path), ctypes.c_uint(flags))
    return _check(result, "open_tree", path)


def move_mount_to(mount_fd: int, target: str, target_dirfd: int = AT_FDCWD) -> None:
    """Attach a detached mount (from fsmount/open_tree) at ``target``."""
    result = _syscall(
        ctypes.c_long(SYS_move_mount),
        ctypes.c_int(mount_fd),
        b"",
        ctypes.c_int(target_dirfd),
        _b(target),
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
    )
    _check(result, f"move_mount to {target}", target)


def move_mount_onto(mount_fd: int, target_fd: int, what: str) -> None:
    """Attach a detached mount on the file or directory open as ``target_fd`` (no path lookup)."""
    result = _syscall(
        ctypes.c_long(SYS_move_mount),
        ctypes.c_int(mount_fd),
        b"",
        ctypes.c_int(target_fd),
        b"",
        ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH),
    )
    _check(result, f"move_mount to {what}", what)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(mount_fd: int, attr_set: int, *, recursive: bool = True) -> None:
    attr = _MountAttr(attr_set, 0, 0, 0)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    result = _syscall(
        ctypes.c_long(SYS_mount_setattr),
        ctypes.c_int(mount_fd),
        b"",
        ctypes.c_uint(flags),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    _check(result, "mount_setattr")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    result = _syscall(
        ctypes.c_long(SYS_openat2), ctypes.c_int(dirfd), _b(path), ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how))
    )
    return _check(result, "openat2", path)


def close_range_cloexec(first: int) -> None:
    """Mark every descriptor >= ``first`` close-on-exec (kept usable until exec)."""
    result = _syscall(ctypes.c_long(SYS_close_range), ctypes.c_uint(first), ctypes.c_uint(0xFFFFFFFF), ctypes.c_uint(CLOSE_RANGE_CLOEXEC))
    _check(result, "close_range")


def pidfd_send_signal(pidfd: int, sig: int) -> None:
    result = _syscall(ctypes.c_long(SYS_pidfd_send_signal), ctypes.c_int(pidfd), ctypes.c_int(sig), None, ctypes.c_uint(0))
    _check(result, "pidfd_send_signal")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(header), data), "capset")


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install_seccomp(program: bytes) -> None:
    """Install a seccomp BPF program (libseccomp's exported bytes, in native byte order).

    Without no_new_privs this needs CAP_SYS_ADMIN, so the caller installs
    it before dropping capabilities, as runc does.
    """
    count = len(program) // ctypes.sizeof(_SockFilter)
    if count == 0 or count * ctypes.sizeof(_SockFilter) != len(program):
        raise OSError(22, "install_seccomp: malformed BPF program")
    instructions = (_SockFilter * count).from_buffer_copy(program)
    prog = _SockFprog(count, ctypes.cast(instructions, ctypes.POINTER(_SockFilter)))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def exited_children() -> Iterator[tuple[int, int]]:
    """(pid, wait status) of each child that has ended by now, reaped one by one; never blocks."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return  # no children left
        if pid == 0:
            return  # the others are still running
        yield pid, status


def default_signal_action(sig: int) -> None:
    """Set ``sig`` to SIG_DFL with the raw syscall.

    glibc refuses to touch the signals it reserves for itself (32 and 33), yet
    an ignored one is inherited across exec; a kernel ``struct sigaction`` of
    zeros is SIG_DFL, no flags and an empty mask on every architecture.
    """
    action = ctypes.create_string_buffer(64)
    _check(_syscall(SYS_rt_sigaction, sig, action, None, 8), "rt_sigaction")


# The zygote's id maps and setgroups, read once when it starts (``remember_id_maps``): its
# user namespace never changes, and the monitors and inits it forks ask several times a step.
_REMEMBERED_MAPS: dict[str, list[tuple[int, int, int]]] = {}
_REMEMBERED_SETGROUPS: list[bool] = []


def remember_id_maps() -> None:
    """Read this process's id maps and setgroups once, for it and the processes it forks.

    Only for a process that never enters another user namespace (the zygote);
    anywhere else each question reads ``/proc/self`` as it is then.
    """
    for which in ("uid_map", "gid_map"):
        _REMEMBERED_MAPS[which] = _read_id_map(which)
    _REMEMBERED_SETGROUPS[:] = [_read_setgroups_allowed()]


def read_id_map(which: str = "uid_map") -> list[tuple[int, int, int]]:
    """This process's ``uid_map`` or ``gid_map``: (first id inside, first id outside, count) lines."""
    remembered = _REMEMBERED_MAPS.get(which)
    return list(remembered) if remembered is not None else _read_id_map(which)


def _read_id_map(which: str) -> list[tuple[int, int, int]]:
    try:
        with open(f"/proc/self/{which}", "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return [(0, 0, 0xFFFFFFFF)]
    result = []
    for line in lines:
        fields = line.split()
        if len(fields) == 3 and all(x.isdigit() for x in fields):  # bytes: no codec to load
            result.append((int(fields[0]), int(fields[1]), int(fields[2])))
    return result


def in_user_namespace() -> bool:
    """True in a user namespace other than the host's (a rootless pybuild, after it entered its own).

    The initial namespace maps every id to itself: ``0 0 4294967295``.
    """
    return read_id_map() != [(0, 0, 0xFFFFFFFF)]


def id_is_mapped(ident: int, which: str = "gid_map") -> bool:
    """Whether ``ident`` (seen from inside) has a host id in this process's namespace."""
    return any(inside <= ident < inside + count for inside, _outside, count in read_id_map(which))


def setgroups_allowed() -> bool:
    """False in a user namespace whose ``setgroups`` is ``deny`` (a one-id rootless mapping)."""
    return _REMEMBERED_SETGROUPS[0] if _REMEMBERED_SETGROUPS else _read_setgroups_allowed()


def _read_setgroups_allowed() -> bool:
    try:
        with open("/proc/self/setgroups", "rb") as f:
            return f.read().strip() != b"deny"
    except OSError:
        return True


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except OSError:
        return 40
