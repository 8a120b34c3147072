"""The sandbox side of a RUN step, run in a process forked from the zygote.

Three processes per step, none of them the (multi-threaded) trio process:

``monitor`` (forked by the zygote, host pid namespace)
    Reads the request, builds a private mount namespace with the overlay
    rootfs on a tmpfs that only it can see, joins the step's cgroups, makes the
    uts/ipc/cgroup/net namespaces, gives the ``default`` network a veth to
    pybuild's bridge (as root, ``_bridge.py``) or starts slirp4netns for it
    (rootless, containers, or when the bridge cannot be used), then unshares
    a pid namespace and forks the init.  It waits for
    the init (or a "kill" from pybuild), reports the exit status, unmounts
    everything and removes the mount-point stubs it had to create in the
    layer.  It dies with the zygote (PR_SET_PDEATHSIG).
``init`` (pid 1 of the new pid namespace)
    Unshares its own mount namespace, pivots into the rootfs and detaches the
    host's tree, so every later path is resolved inside the sandbox (an
    image's symlinks cannot point out of it).  Then it mounts /proc, /dev,
    /sys, the masks, /etc/hosts & co. and the step's mounts (prepared by the
    monitor as detached mounts before the pivot), resolves USER from the
    image's own files, drops capabilities and execs the command.  The
    command *is* pid 1: when it exits the kernel kills every other process
    of the namespace, double-forked daemons included.
``slirp4netns`` (network ``default`` without the bridge only)
    Forked before the monitor joins the step's cgroups (it needs /dev/net/tun
    which the step's devices cgroup denies) and stopped through its exit fd.

Errors are reported to pybuild as ``("error", message, hint)``; the command's
end as ``("exit", wait_status)``.  Stdlib only: this module runs in the
zygote, which is started as ``python -I -S`` (see ``_zygote.py``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import socket
import stat
import struct

TYPE_CHECKING = False  # not typing's: the zygote does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import NoReturn, TypeVar

    _T = TypeVar("_T")

if __package__:
    from . import _bridge as bridge
    from . import _caps as caps
    from . import _linux as linux
    from . import _netfiles as netfiles
    from . import _overlay as overlay
    from . import _passwd as passwd
    from . import _paths as paths
    from . import _wire as wire
else:  # loaded by the zygote as top-level modules
    import _bridge as bridge
    import _caps as caps
    import _linux as linux
    import _netfiles as netfiles
    import _overlay as overlay
    import _passwd as passwd
    import _paths as paths
    import _wire as wire

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Device nodes bound from the host into the sandbox's /dev (all allowed "rw"
# by the step's devices cgroup; nothing is allowed "m", so mknod fails).
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

# Docker's defaults (moby oci/defaults.go): masked paths get /dev/null (files)
# or an empty read-only tmpfs (directories); read-only paths a read-only bind.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

# What BuildKit's insecure mode adds to /dev, when the host has it: the kernel log,
# fuse, kvm, tun and the loop devices (image builders mount filesystem images).
INSECURE_DEVICES = ("kmsg", "fuse", "cuse", "kvm", "net/tun", "loop-control")

ETC_FILES = ("hosts", "resolv.conf", "hostname")

SLIRP_READY_TIMEOUT = 30.0
_MAX_ACCOUNT_FILE = 16 << 20

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")


class SetupError(Exception):
    """The sandbox could not be made; the message is shown to the user."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def reset_signals() -> None:
    """Give every signal its default action and unblock them all.

    Undoes what the zygote's Python runtime changed (ignored SIGPIPE ...) and
    any signal the process that started pybuild ignored: ignored signals are
    inherited across exec, and a build step must not depend on who ran pybuild.
    """
    signal.set_wakeup_fd(-1)
    for sig in range(1, signal.SIGRTMAX + 1):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            linux.default_signal_action(sig)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


# --------------------------------------------------------------------------
# the monitor


def monitor_main(ctl: int, out_fd: int, err_fd: int) -> int:
    """Entry point of the monitor process (returns its exit status)."""
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    reset_signals()
    request = wire.read_message(ctl)
    if request is None:
        return 1
    return _Monitor(ctl, out_fd, err_fd, request).run()


SCHED_ENV = "PYBUILD_STEP_SCHED"  # "other": a build step keeps the caller's SCHED_OTHER


def batch_scheduling() -> None:
    """Build steps are batch work: the zygote takes SCHED_BATCH, and every step's monitor,
    init and processes, forked from it, inherit it.  SCHED_BATCH is Linux's policy for
    non-interactive CPU work (the same nice value and CPU share, but a task woken up does not
    preempt the running one).  A pipeline then hands over whole pipe buffers instead of a
    page at a time: four CPU-bound ``dd | sha256sum`` steps on two cores took
    2.35-2.42 s instead of 2.80-2.99 s.  Only from SCHED_OTHER (a caller that chose another
    policy, SCHED_IDLE for one, keeps it); ``PYBUILD_STEP_SCHED=other`` keeps SCHED_OTHER."""
    if os.environ.get(SCHED_ENV) == "other":
        return
    try:
        if os.sched_getscheduler(0) == os.SCHED_OTHER:
            os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError:
        pass  # refused (a seccomp policy of the caller's): the step runs as it would have


class _Monitor:
    # What the init's setup errors say it could not set up.
    setting_up = "sandbox"

    def __init__(self, ctl: int, out_fd: int, err_fd: int, request: dict[str, wire.Message]) -> None:
        self.ctl = ctl
        self.out_fd = out_fd
        self.err_fd = err_fd
        self.request = request
        self.process = request["process"]
        self.state = request["state_dir"]
        self.network = self.process["network"]
        self.slirp: _Slirp | None = None
        self.bridge: bridge.Lease | None = None
        self.host_resolv = _read_host_resolv()
        self.bridge_nameservers: list[str] = []
        self.mounted = False
        self.sync_fd = -1  # the upper dir, opened before the step writes: syncfs reports errors since then
        self.stubs: list[tuple[str, str]] = []
        self.parents: dict[str, paths.DirMeta] = {}

    def init_console(self) -> None:
        """Called in the init once fds 0-2 are in place; a RUN step has no console to set up."""

    def send(self, message: object) -> None:
        try:
            wire.write_message(self.ctl, message)
        except OSError:
            pass  # pybuild went away; the step is being torn down anyway

    def run(self) -> int:
        try:
            try:
                prepared = self.prepare()
            except SetupError as e:
                self.send(("error", e.message, e.hint))
                return 0
            except OSError as e:
                self.send(("error", f"cannot set up the sandbox: {e.strerror or e}" + _where(e), None))
                return 0
            try:
                status, error = self.supervise(prepared)
            except OSError as e:
                self.send(("error", f"sandbox failed: {e.strerror or e}", None))
                return 0
            if error is None and self.sync_fd >= 0:
                error = sync_step_changes(self.sync_fd)
            if error is not None:
                self.send(("error", error[0], error[1]))
            else:
                self.send(("exit", status))
            return 0
        finally:
            self.teardown()

    # -- preparation (host side of the pivot) ------------------------------

    def prepare(self) -> "_Prepared":
        request = self.request
        if self.network == "default":
            self.bridge = self.bridge_lease()
            if self.bridge is None:
                self.slirp = _Slirp.fork(request["slirp4netns"])

        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        mount_state_tmpfs(self.state)
        self.mounted = True
        rootfs_dir = os.path.join(self.state, "rootfs")
        scratch = os.path.join(self.state, "scratch")
        for path in (rootfs_dir, scratch):
            os.mkdir(path, 0o700)

        lowers, upper, work, readonly = request["rootfs"]
        if not lowers:
            empty = os.path.join(self.state, "empty")
            os.mkdir(empty, 0o755)
            lowers = (empty,)
        if not readonly and overlay.step_sync_wanted(upper):
            self.sync_fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = overlay_fd(lowers, None if readonly else upper, None if readonly else work, scratch, request["flatten_dir"])
        except OSError as e:
            raise SetupError(f"cannot mount the root filesystem: {e.strerror}" + _where(e)) from None
        try:
            linux.move_mount_to(fd, rootfs_dir)
        finally:
            os.close(fd)
        mounts = [
            open_detached_mount(spec, index, self.state, scratch, request["flatten_dir"])
            for index, spec in enumerate(request["mounts"])
        ]

        # Cgroups before the namespaces: the cgroup namespace is rooted at the step's cgroup.
        for procs in request["cgroup_procs"]:
            _write_text(procs, str(os.getpid()))
        flags = linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWCGROUP
        if self.network != "host":
            flags |= linux.CLONE_NEWNET
        linux.unshare(flags)
        if self.slirp is not None:
            self.slirp.start(os.getpid())
        if self.bridge is not None:
            try:
                self.bridge.connect()
            except OSError as e:
                raise SetupError(f"cannot connect the step to the bridge {bridge.BRIDGE}: {e.strerror or e}", bridge.FALLBACK_HINT) from None

        etc = self.prepare_etc_files()
        names = DEVICES + (host_devices_for_insecure() if self.process["insecure"] else ())
        devices = [
            (name, linux.open_tree(f"/dev/{name}", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)) for name in names
        ]
        devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        prepared = _Prepared(rootfs_dir, mounts, etc, devices, devnull)
        if linux.in_user_namespace():
            prepared.device_binds = host_device_binds(self.process.get("devices", ()))
        if self.slirp is not None:
            self.slirp.wait_ready()
        return prepared

    def bridge_lease(self) -> "bridge.Lease | None":
        """The step's address on pybuild's bridge, or None for slirp4netns.

        The bridge is for RUN steps as real root (a container keeps slirp4netns,
        which forwards its published ports; a user namespace has no say over the
        host's network), with a resolver it can reach, unless
        ``PYBUILD_NETWORK_DRIVER=slirp4netns``; when the host refuses the bridge
        the step quietly uses slirp4netns, unless ``bridge`` was asked for.
        """
        setting = bridge.driver_setting()
        if self.setting_up != "sandbox" or setting == bridge.SLIRP or linux.in_user_namespace() or os.geteuid() != 0:
            return None
        self.bridge_nameservers = bridge.nameservers_for_bridge(self.host_resolv)
        if not self.bridge_nameservers:
            return None  # only a loopback resolver (systemd-resolved ...): slirp4netns forwards to it
        try:
            return bridge.Lease.take(os.getppid())
        except bridge.BridgeUnavailable as e:
            if setting == bridge.BRIDGE_DRIVER:
                raise SetupError(f"cannot set up the bridge {bridge.BRIDGE}: {e}", bridge.FALLBACK_HINT) from None
            return None

    def prepare_etc_files(self) -> list[tuple[str, int]]:
        process = self.process
        bridged = self.bridge_nameservers if self.bridge is not None else None
        try:
            contents = {
                "hosts": netfiles.hosts_file(process["hostname"], tuple(process["extra_hosts"])),
                "resolv.conf": netfiles.resolv_conf(self.host_resolv, self.network, bridged),
                "hostname": netfiles.hostname_file(process["hostname"]),
            }
        except netfiles.BadExtraHost as e:
            raise SetupError(str(e), "extra hosts are written name:ip") from None
        directory = os.path.join(self.state, "etc")
        os.mkdir(directory, 0o755)
        result = []
        # A RUN step keeps the image's /etc/hostname, as BuildKit's does; containers get one.
        names = ETC_FILES if process.get("etc_hostname") else tuple(n for n in ETC_FILES if n != "hostname")
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "wb") as f:
                f.write(contents[name])
            os.chmod(path, 0o644)
            fd = linux.open_tree(path, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
            linux.mount_setattr(fd, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV)
            result.append((name, fd))
        return result

    # -- running ------------------------------------------------------------

    def supervise(self, prepared: "_Prepared") -> tuple[int, tuple[str, str | None] | None]:
        report_r, report_w = os.pipe2(os.O_CLOEXEC)
        linux.unshare(linux.CLONE_NEWPID)
        pid = os.fork()
        if pid == 0:
            os.close(report_r)
            _init_main(self, prepared, report_w)  # never returns
        os.close(report_w)
        for fd in (self.out_fd, self.err_fd):
            os.close(fd)
        prepared.close()

        pidfd = os.pidfd_open(pid)
        poller = select.poll()
        poller.register(self.ctl, select.POLLIN)
        poller.register(report_r, select.POLLIN)
        poller.register(pidfd, select.POLLIN)
        control = wire.Decoder()
        report = wire.Decoder()
        messages: list[wire.Message] = []
        status = None
        killed = False
        while status is None:
            for fd, _events in poller.poll():
                if fd == pidfd:
                    _, status = os.waitpid(pid, 0)
                elif fd == report_r:
                    data = os.read(report_r, 65536)
                    if data:
                        messages += report.feed(data)
                    else:
                        poller.unregister(report_r)
                elif fd == self.ctl:
                    data = _read_or_empty(self.ctl)
                    if not data:
                        poller.unregister(self.ctl)
                    # "kill" or pybuild going away: end the step now.
                    if (not data or "kill" in [m[0] for m in control.feed(data)]) and not killed:
                        killed = True
                        linux.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)
        while True:  # the init is gone: the report pipe has no writer left
            data = os.read(report_r, 65536)
            if not data:
                break
            messages += report.feed(data)
        os.close(report_r)
        error = None
        for message in messages:
            if message[0] == "stubs":
                self.stubs, self.parents = message[1], message[2]
            elif message[0] == "error":
                error = (message[1], message[2])
        return status, error

    # -- after the step -------------------------------------------------------

    def teardown(self) -> None:
        if self.sync_fd >= 0:
            os.close(self.sync_fd)
            self.sync_fd = -1
        if self.mounted:
            try:
                linux.umount2(self.state, linux.MNT_DETACH)
            except OSError:
                pass
        if not self.request["rootfs"][3]:
            overlay.normalise_upper(self.request["rootfs"][1])
        if self.stubs and not self.request["rootfs"][3]:
            remove_stubs(self.request["rootfs"][1], self.stubs, self.parents)
        if self.slirp is not None:
            self.slirp.stop()
        if self.bridge is not None:
            self.bridge.release()


def sync_step_changes(upper_fd: int) -> tuple[str, str | None] | None:
    """Write out what the step left in its upper dir (its volatile mount did not), before pybuild
    commits it: the one sync that a non-volatile mount made at its unmount.  An error the file
    system hit while the step wrote (a failed writeback) fails the step instead of committing it."""
    try:
        linux.syncfs(upper_fd)
    except OSError as e:
        return f"cannot write the step's changes to disk: {e.strerror or e}", "check the disk pybuild's root is on (dmesg)"
    return None


def _read_host_resolv() -> str:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def devpts_options() -> str:
    """Docker's devpts options; the tty group (5) only where it is mapped (a one-id rootless
    mapping has no gid 5, and the kernel refuses an unmapped gid=), as runc rootless drops it."""
    options = "newinstance,ptmxmode=0666,mode=0620"
    return options + ",gid=5" if linux.id_is_mapped(5, "gid_map") else options


def host_devices_for_insecure() -> tuple[str, ...]:
    """The INSECURE_DEVICES and loop devices this host has (character or block devices only)."""
    try:
        loops = sorted(n for n in os.listdir("/dev") if n.startswith("loop") and n[4:].isdigit())
    except OSError:
        loops = []
    present = []
    for name in (*INSECURE_DEVICES, *loops):
        try:
            mode = os.stat(f"/dev/{name}").st_mode
        except OSError:
            continue
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            present.append(name)
    return tuple(present)


class _Prepared:
    """Detached mounts and fds the init attaches after the pivot."""

    def __init__(self, rootfs_dir: str, mounts: list[wire.Message], etc: list[wire.Message], devices: list[wire.Message], devnull: int) -> None:
        self.rootfs_dir = rootfs_dir
        self.mounts = mounts
        self.etc = etc
        self.devices = devices
        self.devnull = devnull
        # Rootless: /proc and /sys made before the pivot (see rootless_kernel_mounts).
        self.kernel_mounts: dict[str, int] = {}
        # Rootless: RUN --device's nodes as detached binds of the host's (see host_device_binds).
        self.device_binds: dict[str, int] = {}

    def close(self) -> None:
        for _, fd, _ in self.mounts:
            os.close(fd)
        for _, fd in self.etc + self.devices:
            os.close(fd)
        for fd in self.device_binds.values():
            os.close(fd)
        os.close(self.devnull)


def host_device_binds(devices: list[wire.Message]) -> dict[str, int]:
    """RUN --device's nodes for a sandbox in a user namespace: {path inside: detached bind of the host's node}.

    mknod of a device needs CAP_MKNOD in the host's namespace, so rootless the
    host's node is bound in, as runc rootless binds every device; whether the
    step may open it is then the host's permission on that node.  The host
    path is a CDI spec's (an administrator's), never a Dockerfile's.
    """
    binds: dict[str, int] = {}
    try:
        for path, kind, major, minor, _mode, _uid, _gid, host_path in devices:
            fd = linux.open_tree(host_path, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
            binds[path] = fd
            st = os.fstat(fd)
            expected = stat.S_ISCHR(st.st_mode) if kind == "c" else stat.S_ISBLK(st.st_mode)
            if not expected or st.st_rdev != os.makedev(major, minor):
                raise SetupError(f"cannot use the device node {path}: {host_path} on the host is not the {kind} {major}:{minor} device")
    except OSError as e:
        for fd in binds.values():
            os.close(fd)
        raise SetupError(f"cannot bind the device node {e.filename} from the host: {e.strerror}", "a rootless pybuild cannot make device nodes; it binds the host's") from None
    except SetupError:
        for fd in binds.values():
            os.close(fd)
        raise
    return binds


def rootless_kernel_mounts(network: str) -> dict[str, int]:
    """Detached /proc and /sys for a sandbox in a user namespace, made while the host's are visible.

    The kernel lets a user namespace's root mount proc or sysfs only where the
    mount namespace still shows one fully (``mount_too_revealing``), so the init
    makes them before it detaches the host's tree, as runc makes its rootfs'
    mounts before pivot_root.  sysfs belongs to the network namespace, which
    with ``--network=host`` is the host's: then the host's /sys is bound
    read-only instead, as runc rootless does for a shared network namespace.
    """
    hardened = linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC
    mounts = {"/proc": _kernel_mount("proc", hardened)}
    if network == "host":
        fd = linux.open_tree("/sys", linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_RECURSIVE)
        linux.mount_setattr(fd, linux.MOUNT_ATTR_RDONLY | hardened)
        mounts["/sys"] = fd
    else:
        mounts["/sys"] = _kernel_mount("sysfs", hardened | linux.MOUNT_ATTR_RDONLY)
    return mounts


def _kernel_mount(fstype: str, attributes: int) -> int:
    fs_fd = linux.fsopen(fstype)
    try:
        linux.fsconfig_create(fs_fd)
        return linux.fsmount(fs_fd, attributes)
    finally:
        os.close(fs_fd)


def open_detached_mount(spec: tuple[wire.Message, ...], index: int, state: str, scratch: str, flatten_dir: str) -> tuple[str, int, bool]:
    """A detached mount for one step mount: (target, mount fd, target is a file).

    ``spec`` is the wire form of a ``Mount``; secrets are written to a file in
    ``state`` (a tmpfs) and bound from there.
    """
    kind, target = spec[0], spec[1]
    try:
        if kind == "bind":
            _, _, source, readonly, subpath = spec
            if subpath is None:  # a host path pybuild chose (cache directory, ssh socket)
                try:
                    is_file = not stat.S_ISDIR(os.stat(source).st_mode)
                except FileNotFoundError:
                    raise SetupError(f"mount source {source} does not exist") from None
                fd = linux.open_tree(source, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_RECURSIVE)
            else:
                fd, is_file = clone_in_root(source, subpath)
            if readonly:
                linux.mount_setattr(fd, linux.MOUNT_ATTR_RDONLY)
            return target, fd, is_file
        if kind == "overlay":
            _, _, lowers, upper, work, subpath = spec
            fd = overlay_fd(tuple(lowers), upper, work, scratch, flatten_dir)
            if subpath is None or not subpath.strip("/"):
                return target, fd, False
            try:
                return (target, *_clone_in_mount(fd, subpath, scratch))
            finally:
                os.close(fd)
        if kind == "tmpfs":
            _, _, size, mode = spec
            fs_fd = linux.fsopen("tmpfs")
            try:
                linux.fsconfig_string(fs_fd, "mode", f"{mode:o}")
                if size is not None:
                    linux.fsconfig_string(fs_fd, "size", str(size))
                linux.fsconfig_create(fs_fd)
                return target, linux.fsmount(fs_fd, linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV), False
            finally:
                os.close(fs_fd)
        if kind == "secret":
            _, _, data, mode, uid, gid = spec
            unmapped = [f"{which} {ident}" for which, ident, table in (("uid", uid, "uid_map"), ("gid", gid, "gid_map")) if not linux.id_is_mapped(ident, table)]
            if unmapped:  # rootless: the kernel's EINVAL from fchown would say nothing
                raise SetupError(
                    f"cannot prepare the secret mount at {target}: {' and '.join(unmapped)} not mapped in this rootless pybuild's user namespace",
                    ADD_SUBORDINATE_IDS,
                )
            secrets = os.path.join(state, "secrets")
            os.makedirs(secrets, 0o700, exist_ok=True)
            path = os.path.join(secrets, str(index))
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            fd = linux.open_tree(path, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC)
            linux.mount_setattr(
                fd, linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV | linux.MOUNT_ATTR_NOEXEC
            )
            return target, fd, True
    except OSError as e:
        # Never name a secret's bytes; the target and the errno are enough.
        raise SetupError(f"cannot prepare the {kind} mount at {target}: {e.strerror}") from None
    raise SetupError(f"unknown mount type {kind!r}")


def clone_in_root(root: str, subpath: str) -> tuple[int, bool]:
    """A detached bind mount of ``subpath`` resolved inside ``root``: (mount fd, is a file).

    The entry is opened inside its root (see ``paths.open_in_root``) and
    cloned through that descriptor, never by a path the host would resolve:
    a stage's ``/dir -> /`` is the stage's own root, not the host's.
    """
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        entry = paths.open_in_root(root_fd, subpath)
    except (FileNotFoundError, NotADirectoryError):
        raise SetupError(f"mount source {subpath} not found") from None
    except OSError as e:
        raise SetupError(f"mount source {subpath}: {e.strerror}") from None
    finally:
        os.close(root_fd)
    try:
        is_file = not stat.S_ISDIR(os.fstat(entry).st_mode)
        flags = linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_RECURSIVE | linux.AT_EMPTY_PATH
        return linux.open_tree("", flags, dirfd=entry), is_file
    finally:
        os.close(entry)


def _clone_in_mount(mount_fd: int, subpath: str, scratch: str) -> tuple[int, bool]:
    """``clone_in_root`` inside a detached mount, attached for the time it takes in ``scratch``."""
    point = os.path.join(scratch, f"source-{len(os.listdir(scratch))}")
    os.mkdir(point, 0o700)
    linux.move_mount_to(mount_fd, point)
    try:
        return clone_in_root(point, subpath)
    finally:
        linux.umount2(point, linux.MNT_DETACH)


def mount_state_tmpfs(path: str) -> None:
    # noswap (Linux >= 6.4) keeps secrets off the swap device too.
    try:
        linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0700,noswap")
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        linux.mount("tmpfs", path, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "mode=0700")


def overlay_fd(lowers: tuple[str, ...], upper: str | None, work: str | None, scratch: str, flatten_dir: str) -> int:
    """A detached overlay mount of a chain of any length (fuse-overlayfs mounts at a point, then cloned)."""
    if overlay.driver() == overlay.KERNEL and overlay.lowerdir_plus_supported() and len(lowers) <= overlay.MAX_LOWERS:
        return overlay.mount_overlay_fd(tuple(lowers), upper, work)
    point = os.path.join(scratch, f"overlay-{len(os.listdir(scratch))}")
    os.mkdir(point)
    overlay.mount_overlay_at(point, tuple(lowers), upper, work, scratch=scratch, flatten_dir=flatten_dir)
    try:
        return linux.open_tree(point, linux.OPEN_TREE_CLONE | linux.OPEN_TREE_CLOEXEC | linux.AT_RECURSIVE)
    finally:
        linux.umount2(point, linux.MNT_DETACH)


def _write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _read_or_empty(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except ConnectionResetError:
        return b""


def _where(e: OSError) -> str:
    return f" ({e.filename})" if getattr(e, "filename", None) else ""


def slirp_failure(stderr: str) -> str:
    """The line of slirp4netns' output that says why it failed: its last one that is not a
    warning (it warns about its seccomp filter before and after the error)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("WARNING:") and not line.startswith("child failed")]
    return (errors or lines or [""])[-1]


class _Slirp:
    """slirp4netns for the ``default`` network, forked before the namespaces exist."""

    def __init__(self, pid: int, go_w: int, ready_r: int, exit_w: int, err_r: int) -> None:
        self.pid, self.go_w, self.ready_r, self.exit_w, self.err_r = pid, go_w, ready_r, exit_w, err_r

    @classmethod
    def fork(cls, binary: str) -> "_Slirp":
        go_r, go_w = os.pipe2(os.O_CLOEXEC)
        ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
        exit_r, exit_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            try:
                for fd in (go_w, ready_r, exit_w, err_r):
                    os.close(fd)
                target = os.read(go_r, 64)
                if not target:
                    os._exit(1)
                os.dup2(err_w, 2)
                os.dup2(err_w, 1)
                # Only the two pipes reach slirp4netns: an inherited stdout of
                # the step would keep pybuild waiting for its end of file.
                linux.close_range_cloexec(3)
                os.set_inheritable(ready_w, True)
                os.set_inheritable(exit_r, True)
                args = [
                    binary,
                    "--configure",
                    "--mtu=65520",
                    "--disable-host-loopback",
                    "--enable-sandbox",
                    "--enable-seccomp",
                    f"--ready-fd={ready_w}",
                    f"--exit-fd={exit_r}",
                    target.decode(),
                    "tap0",
                ]
                os.execv(binary, args)
            except BaseException:
                pass
            os._exit(127)
        for fd in (go_r, ready_w, exit_r, err_w):
            os.close(fd)
        return cls(pid, go_w, ready_r, exit_w, err_r)

    def start(self, target_pid: int) -> None:
        os.write(self.go_w, str(target_pid).encode())
        os.close(self.go_w)
        self.go_w = -1

    def wait_ready(self) -> None:
        poller = select.poll()
        poller.register(self.ready_r, select.POLLIN)
        if poller.poll(int(SLIRP_READY_TIMEOUT * 1000)) and os.read(self.ready_r, 1) == b"1":
            return
        detail = b""
        try:
            os.set_blocking(self.err_r, False)
            detail = os.read(self.err_r, 4096)
        except OSError:
            pass
        reason = slirp_failure(detail.decode(errors="replace"))
        hint = "install slirp4netns (Debian package) or use RUN --network=none"
        if "/dev/net/tun" in reason and linux.in_user_namespace():
            hint = "a rootless pybuild needs /dev/net/tun open to every user (mode 0666, Debian's default), or use RUN --network=none"
        raise SetupError("cannot start the default network (slirp4netns)" + (f": {reason}" if reason else ""), hint)

    def stop(self) -> None:
        """Tell slirp4netns to exit, without waiting for it.

        Its exit tears down the tap device, which waits for an RCU grace
        period (tens of ms); nothing of the step depends on it, so the zygote
        (a child subreaper) reaps it whenever it is done.
        """
        for fd in (self.go_w, self.ready_r, self.exit_w, self.err_r):
            if fd >= 0:
                os.close(fd)
        self.go_w = self.ready_r = self.exit_w = self.err_r = -1


# --------------------------------------------------------------------------
# mount-point stubs


# Overlay's own bookkeeping (origin, impure) says nothing about the layer's
# content; these do (after ``trusted.overlay.``, or ``user.overlay.`` rootless).
_MEANINGFUL_OVERLAY_XATTRS = frozenset({"opaque", "redirect", "metacopy", "whiteouts"})


def remove_stubs(upper: str, stubs: list[tuple[str, str]], parents: dict[str, paths.DirMeta]) -> None:
    """Remove from ``upper`` the mount points the init had to create.

    ``stubs`` are ("dir" | "file", path) in creation order; only a stub still
    empty is removed.  ``parents`` are metadata of existing directories the
    stubs were created in: a directory copied up only to hold a stub, empty
    again and unchanged, is removed too, so the layer does not show it.
    Paths are walked without following symlinks: the step could have replaced
    a directory by a link to somewhere on the host.
    """
    try:
        root = os.open(upper, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        for kind, path in reversed(stubs):
            _at_parent(root, path, _remove_if_stub, kind)
        for path in sorted(parents, key=lambda p: -p.count("/")):
            _at_parent(root, path, _remove_if_unchanged_copy, parents[path])
    finally:
        os.close(root)


def _open_parent(root: int, path: str) -> tuple[int, str] | None:
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    fd = os.dup(root)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError:
        os.close(fd)
        return None
    return fd, parts[-1]


def _at_parent(root: int, path: str, remove: Callable[[int, str, _T], None], what: _T) -> None:
    """``remove(parent_fd, name, what)`` for ``path`` under ``root``; one that cannot be reached or removed is left."""
    opened = _open_parent(root, path)
    if opened is None:
        return
    fd, name = opened
    try:
        remove(fd, name, what)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_if_stub(fd: int, name: str, kind: str) -> None:
    st = os.lstat(name, dir_fd=fd)
    if kind == "dir" and stat.S_ISDIR(st.st_mode):
        os.rmdir(name, dir_fd=fd)  # fails (and is kept) unless empty
    elif kind == "file" and stat.S_ISREG(st.st_mode) and st.st_size == 0:
        os.unlink(name, dir_fd=fd)


def _remove_if_unchanged_copy(fd: int, name: str, meta: paths.DirMeta) -> None:
    st = os.lstat(name, dir_fd=fd)
    if not stat.S_ISDIR(st.st_mode) or (st.st_mode, st.st_uid, st.st_gid) != meta[:3]:
        return
    child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    try:
        if os.listdir(child):
            return
        names = os.listxattr(child)
        own = overlay.overlay_xattr_prefix()
        if any(n.startswith(own) and n[len(own) :] in _MEANINGFUL_OVERLAY_XATTRS for n in names):
            return  # an opaque directory hides the layers below: keep it
        xattrs = {n: os.getxattr(child, n) for n in names if not n.startswith(own)}
    finally:
        os.close(child)
    if xattrs == meta[3]:
        os.rmdir(name, dir_fd=fd)


# --------------------------------------------------------------------------
# the init (pid 1), after fork


def _init_main(monitor: _Monitor, prepared: _Prepared, report_w: int) -> None:
    status = 125
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        os.dup2(prepared.devnull, 0)
        os.dup2(monitor.out_fd, 1)
        os.dup2(monitor.err_fd, 2)
        monitor.init_console()
        linux.unshare(linux.CLONE_NEWNS)
        if linux.in_user_namespace():
            prepared.kernel_mounts = rootless_kernel_mounts(monitor.network)
        os.chdir(prepared.rootfs_dir)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        _Inside(monitor.process, prepared, report_w).run()
    except SetupError as e:
        _report(report_w, ("error", e.message, e.hint))
    except OSError as e:
        _report(report_w, ("error", f"cannot set up the {monitor.setting_up}: {e.strerror or e}" + _where(e), None))
    except BaseException as e:  # noqa: BLE001 - the init must never unwind into the monitor's code
        _report(report_w, ("error", f"cannot set up the {monitor.setting_up}: {type(e).__name__}: {e}", None))
    os._exit(status)


def _report(fd: int, message: object) -> None:
    try:
        wire.write_message(fd, message)
    except OSError:
        pass


class _Inside:
    """Setup inside the pivoted root: every path here is the sandbox's own."""

    def __init__(self, process: dict[str, wire.Message], prepared: _Prepared, report_w: int) -> None:
        self.process = process
        self.prepared = prepared
        self.report_w = report_w
        self.stubs: list[tuple[str, str]] = []
        self.parents: dict[str, paths.DirMeta] = {}

    def run(self) -> None:
        process = self.process
        self.mount_system()
        self.mount_etc_files()
        self.mount_step_mounts()
        _report(self.report_w, ("stubs", self.stubs, self.parents))
        socket.sethostname(process["hostname"])
        if process["network"] != "host":
            _loopback_up()
        user = self.resolve_user()
        cwd = self.enter_workdir(process["cwd"])
        env = _environment(process["env"], process["secret_env"], user.home)
        os.umask(0o022)
        confine_and_exec(process, user, process["args"], env, cwd, die_with_parent=True)

    # -- mounts ---------------------------------------------------------------

    def mount_system(self) -> None:
        hardened = linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC
        early = self.prepared.kernel_mounts
        self.ensure("/proc", directory=True)
        if "/proc" in early:
            linux.move_mount_to(early["/proc"], "/proc")
        else:
            linux.mount("proc", "/proc", "proc", hardened)

        self.ensure("/dev", directory=True)
        linux.mount("tmpfs", "/dev", "tmpfs", linux.MS_NOSUID, "mode=755,size=65536")
        for name, fd in self.prepared.devices:
            path = f"/dev/{name}"
            if "/" in name:  # net/tun
                os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
            linux.move_mount_to(fd, path)
        self.make_device_nodes()
        os.mkdir("/dev/pts", 0o755)
        linux.mount("devpts", "/dev/pts", "devpts", linux.MS_NOSUID | linux.MS_NOEXEC, devpts_options())
        os.symlink("pts/ptmx", "/dev/ptmx")
        os.mkdir("/dev/shm", 0o1777)
        linux.mount("shm", "/dev/shm", "tmpfs", hardened, "mode=1777,size=67108864")
        os.mkdir("/dev/mqueue", 0o755)
        linux.mount("mqueue", "/dev/mqueue", "mqueue", hardened)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"/dev/{name}")

        self.ensure("/sys", directory=True)
        if "/sys" in early:
            linux.move_mount_to(early["/sys"], "/sys")
        else:
            linux.mount("sysfs", "/sys", "sysfs", hardened | linux.MS_RDONLY)

        if self.process["insecure"]:
            return  # RUN --security=insecure: /proc and /sys as they are, as BuildKit's insecure mode
        for path in MASKED_PATHS:
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                linux.mount("tmpfs", path, "tmpfs", linux.MS_RDONLY | hardened)
            else:
                linux.mount("/dev/null", path, None, linux.MS_BIND)
        for path in READONLY_PATHS:
            if not os.path.lexists(path):
                continue
            linux.mount(path, path, None, linux.MS_BIND | linux.MS_REC)
            linux.mount(None, path, None, linux.MS_BIND | linux.MS_REMOUNT | linux.MS_RDONLY | hardened)

    def make_device_nodes(self) -> None:
        """RUN --device's nodes, made in the /dev tmpfs (so never in the layer); the step's
        devices cgroup allows each one, and the spec's mode and owner are set on it."""
        for path, kind, major, minor, mode, uid, gid, _host_path in self.process.get("devices", ()):
            os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
            if path in self.prepared.device_binds:  # rootless: the host's node, its mode and owner as they are
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666))
                linux.move_mount_to(self.prepared.device_binds[path], path)
                continue
            node = stat.S_IFCHR if kind == "c" else stat.S_IFBLK
            try:
                os.mknod(path, node | 0o600, os.makedev(major, minor))
                os.chown(path, uid, gid)
                os.chmod(path, mode)
            except OSError as e:
                raise SetupError(f"cannot make the device node {path}: {e.strerror}") from None

    def mount_etc_files(self) -> None:
        for name, fd in self.prepared.etc:
            try:
                path = self.ensure(f"/etc/{name}", directory=False)
            except (SetupError, OSError):
                continue  # an image without a usable /etc (read-only or odd): skip, as BuildKit does
            linux.move_mount_to(fd, path)

    def mount_step_mounts(self) -> None:
        # Parents before children, whatever order the caller gave.
        for target, fd, is_file in sorted(self.prepared.mounts, key=lambda m: mount_depth(m[0])):
            path = self.ensure(target, directory=not is_file)
            try:
                paths.attach_in_root(fd, "/", path)
            except OSError as e:
                raise SetupError(f"cannot mount at {target}: {e.strerror}") from None

    def ensure(self, target: str, *, directory: bool) -> str:
        """Resolve ``target`` in the sandbox, creating a stub mount point if missing."""
        try:
            return paths.ensure_mount_point("/", target, directory=directory, stubs=self.stubs, parents=self.parents)
        except paths.PathError as e:
            raise SetupError(str(e)) from None

    # -- process --------------------------------------------------------------

    def resolve_user(self) -> passwd.ResolvedUser:
        spec = self.process["user"]
        passwd_text = _read_account_file("/etc/passwd")
        group_text = _read_account_file("/etc/group")
        try:
            return passwd.resolve_user(spec, passwd_text, group_text)
        except passwd.UnknownUserError as e:
            raise SetupError(str(e), "add the user to the image (e.g. RUN adduser) or use USER uid:gid") from None

    def enter_workdir(self, cwd: str) -> str:
        path = os.path.normpath("/" + cwd)
        try:
            os.makedirs(path, 0o755, exist_ok=True)
            os.chdir(path)
        except OSError as e:
            raise SetupError(f"cannot use working directory {cwd}: {e.strerror}") from None
        return path


def mount_depth(path: str) -> int:
    return len([p for p in os.path.normpath("/" + path).split("/") if p])


def _read_account_file(path: str) -> str | None:
    """Read /etc/passwd or /etc/group as a plain file (never a fifo or device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX_ACCOUNT_FILE)
    finally:
        os.close(fd)
    return data.decode("utf-8", errors="replace")


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = _IFREQ.unpack(fcntl.ioctl(s, _SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0)))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | _IFF_UP))


def _environment(env: list[str], secret_env: list[str], home: str) -> dict[bytes, bytes]:
    result: dict[bytes, bytes] = {}
    for entry in list(env) + list(secret_env):
        key, _, value = entry.partition("=")
        result[os.fsencode(key)] = os.fsencode(value)
    result.setdefault(b"HOME", os.fsencode(home or "/"))
    return result


def confine_and_exec(security: dict[str, wire.Message], user: passwd.ResolvedUser, args: list[str], env: dict[bytes, bytes], cwd: str, *, die_with_parent: bool) -> None:
    """Drop to ``user`` with ``security``'s capabilities, filter its syscalls, exec ``args``.

    ``security`` holds ``capabilities`` (the mask kept), ``seccomp`` (a BPF
    program or None) and ``no_new_privs``.  The order is runc's: installing
    a filter without no_new_privs needs CAP_SYS_ADMIN, so it goes in just
    before the capabilities are dropped (the few calls after it, prctl,
    setgroups, setres[ug]id, capset, close_range and execve, are ones every
    profile must allow anyway); with no_new_privs it goes in last, right
    before exec.
    """
    program, no_new_privs = security["seccomp"], security["no_new_privs"]
    if no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if program is not None and not no_new_privs:
        _install_filter(program)
    _drop_privileges(user, security["capabilities"])
    if die_with_parent:  # cleared by the uid change above, so set again
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    linux.close_range_cloexec(3)
    if program is not None and no_new_privs:
        _install_filter(program)
    _exec(args, env, cwd)


def _install_filter(program: bytes) -> None:
    try:
        linux.install_seccomp(program)
    except OSError as e:
        raise SetupError(f"cannot install the seccomp filter: {e.strerror or e}", "a seccomp profile must allow prctl, capset, setgroups, setresuid, setresgid, close_range and execve") from None


def _drop_privileges(user: passwd.ResolvedUser, keep: int = caps.DOCKER_DEFAULT_MASK) -> None:
    last = linux.cap_last_cap()
    for cap in caps.capabilities_to_drop(keep, last):
        try:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: a capability this kernel does not know
                raise
    linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    if linux.in_user_namespace():
        _check_mapped(user)
    if linux.setgroups_allowed():
        os.setgroups(list(user.supplementary_gids))
    # else a one-id rootless namespace: the kernel refuses setgroups for good, and the step keeps
    # the caller's own groups, which it sees as nogroup (runc rootless skips setgroups alike)
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    if user.uid == 0:
        linux.capset(keep, keep, 0)
    else:
        linux.capset(0, 0, 0)


ADD_SUBORDINATE_IDS = "give your user subordinate ids, e.g. usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER"


def _check_mapped(user: passwd.ResolvedUser) -> None:
    """A rootless step's user and group must have host ids; the kernel's EINVAL would say nothing."""
    unmapped = [f"uid {user.uid}"] if not linux.id_is_mapped(user.uid, "uid_map") else []
    unmapped += [f"gid {user.gid}"] if not linux.id_is_mapped(user.gid, "gid_map") else []
    if linux.setgroups_allowed():
        unmapped += [f"supplementary gid {g}" for g in user.supplementary_gids if not linux.id_is_mapped(g, "gid_map")]
    if unmapped:
        raise SetupError(
            f"cannot run as user {user.uid}:{user.gid}: {' and '.join(unmapped)} not mapped in this rootless pybuild's user namespace",
            ADD_SUBORDINATE_IDS,
        )


def _exec(args: list[str], env: dict[bytes, bytes], cwd: str) -> None:
    """execve like a shell would look the command up; on failure exit 126/127 with a message."""
    if not args:
        _die(127, "pybuild: no command to run")
    program = args[0]
    argv = [os.fsencode(a) for a in args]
    if "/" in program:
        candidates = [program]
    else:
        path = env.get(b"PATH", os.fsencode(DEFAULT_PATH)).decode(errors="surrogateescape")
        candidates = [os.path.join(d or ".", program) for d in path.split(":")]
    error: OSError | None = None
    for candidate in candidates:
        try:
            os.execve(candidate, argv, env)
        except OSError as e:
            if error is None or e.errno not in (errno.ENOENT, errno.ENOTDIR):
                error = e
    if error is None or error.errno in (errno.ENOENT, errno.ENOTDIR):
        where = "" if "/" in program else " in $PATH"
        _die(127, f'pybuild: exec "{program}": executable file not found{where}')
    _die(126, f'pybuild: exec "{program}": {error.strerror}')


def _die(code: int, message: str) -> NoReturn:
    try:
        os.write(2, message.encode(errors="replace") + b"\n")
    finally:
        os._exit(code)
