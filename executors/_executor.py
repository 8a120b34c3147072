"""SandboxExecutor: RUN steps in Linux namespaces, driven from trio.

This is the trio side.  It owns the per-step cgroups, the pipes and the
control socket, and a zygote process (``_zygote.py``) that forks the actual
sandbox processes (``_sandbox.py``), so nothing here ever forks a
multi-threaded interpreter.  Cancellation and timeouts send "kill" to the
step's monitor, which SIGKILLs the sandbox's pid 1 (the kernel then kills
the whole pid namespace); the step's v2 cgroup is killed as well, then
pybuild waits until the zygote has reaped the monitor, i.e. until every
mount of the step is gone, and removes the cgroups.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence

import trio

from pybuild.errors import PybuildError, SandboxError

from . import _wire as wire
from ._cgroups import CgroupError, CgroupLayout, StepCgroups, claim_delegated, detect_layout, release_delegated, remove_stale
from ._overlay import DEFERRED_ENV, OverlayDriver, probe_overlay, step_syncs_deferred, volatile_uppers_requested
from ._sandbox import DEFAULT_PATH, SCHED_ENV
from ._spec import NETWORK_MODES, SECURITY_MODES, BindMount, ExecResult, Mount, OverlayMount, ProcessSpec, Rootfs, SecretMount, TmpfsMount
from ._userns import ROOTLESS_HINT
from ._zygote_process import ZygoteProcess, spawn_zygote

_HERE = os.path.dirname(os.path.abspath(__file__))
_ZYGOTE = os.path.join(_HERE, "_zygote.py")

# How long cleanup waits for a killed sandbox to be reaped before giving up on it.
_REAP_TIMEOUT = 20.0
# How long a monitor asked to kill its sandbox gets before its cgroup is killed.
_KILL_GRACE = 5.0


class SandboxExecutor:
    """The real ``Executor``: each ``run`` is a fresh sandbox (see ``_sandbox``).

    ``state_dir`` is where the executor keeps its private directory (a mount
    point that is only ever used inside the steps' own mount namespaces, and
    flattened prefixes of very deep layer chains); default: the system's temp
    dir.  Use ``async with`` or call ``aclose()`` to stop the zygote and
    remove the directory.
    """

    def __init__(self, *, state_dir: str | None = None, slirp4netns: str | None = None, python: str | None = None) -> None:
        self._state_parent = state_dir
        self._python = python or sys.executable
        self._slirp4netns = slirp4netns or shutil.which("slirp4netns") or "/usr/bin/slirp4netns"
        self._state: str | None = None
        self._zygote: _Zygote | None = None
        self._start_lock = trio.Lock()
        self._layout: CgroupLayout | None = None
        self._overlay: OverlayDriver | None = None
        self._overlay_told = False
        self._primer: _MigrationPrimer | None = None
        self._early: tuple[ZygoteProcess, socket.socket] | None = None  # started by start_early, no step yet

    @property
    def cgroup_layout(self) -> CgroupLayout:
        """Which cgroup hierarchy serves pids, memory, devices and kill here."""
        if self._layout is None:
            self._layout = detect_layout()
        return self._layout

    async def __aenter__(self) -> SandboxExecutor:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def start_early(self) -> None:
        """Start the zygote now, without trio, for a build that will run a RUN step: its
        interpreter start and imports (~40 ms) then pass beside the build's own work before
        that step instead of in front of it.  It never fails: what goes wrong here goes wrong
        again, and is reported, when the first step starts a zygote."""
        if self._zygote is not None or self._early is not None:
            return
        try:
            self._prepare()
            assert self._state is not None
            self._early = _Zygote.spawn(self._python, self._state)
        except (OSError, PybuildError):
            return

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            if self._early is not None:  # no step came (all cached, or a failure first): nothing of
                process, sock = self._early  # its own yet (no monitor, mount or keeper), so no waiting
                self._early = None  # for the end of its start
                process.kill()
                sock.close()
                await process.wait()
            if self._zygote is not None:
                await self._zygote.aclose()
                self._zygote = None
            if self._state is not None:
                shutil.rmtree(self._state, ignore_errors=True)
                self._state = None
            if self._layout is not None:
                release_delegated(self._layout)

    async def run(
        self,
        rootfs: Rootfs,
        process: ProcessSpec,
        mounts: Sequence[Mount] = (),
        *,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> ExecResult:
        validate(rootfs, process, mounts)
        zygote = await self._ensure_zygote()
        assert self._state is not None
        cgroups = StepCgroups(self.cgroup_layout)
        try:
            procs = cgroups.create(
                process.pids_limit, process.memory_limit, all_devices=process.security == "insecure",
                device_rules=[f"{d.kind} {d.major}:{d.minor} {d.permissions}" for d in process.devices],
            )
        except CgroupError as e:
            raise SandboxError(str(e), hint="run pybuild as root on a machine with cgroups mounted") from None
        primed = self._prime_migration() if procs else None
        request = _request(rootfs, process, mounts, procs, self._state, self._slirp4netns)
        self._tell_overlay_driver(on_output)
        step = _Step(on_output)
        try:
            await step.start(zygote, request)
            await step.wait(process.timeout)
        finally:
            with trio.CancelScope(shield=True):
                await step.finish(cgroups)
                if primed is not None and primed.is_alive():
                    await trio.to_thread.run_sync(primed.join)
        return step.result()

    def _prime_migration(self) -> threading.Thread | None:
        if self._primer is None:
            self._primer = _MigrationPrimer.of(self.cgroup_layout)
        return self._primer.start()

    def _tell_overlay_driver(self, on_output: Callable[[str, bytes], None] | None) -> None:
        """Say once, in the first step's output (``--progress=plain``), why layers go through fuse-overlayfs."""
        if self._overlay is None or not self._overlay.reason or self._overlay_told or on_output is None:
            return
        self._overlay_told = True
        on_output("stderr", f"pybuild: {self._overlay.reason}\n".encode())

    async def _ensure_zygote(self) -> _Zygote:
        async with self._start_lock:
            if self._zygote is not None and self._zygote.alive:
                return self._zygote
            if self._zygote is not None:
                await self._zygote.aclose()
            early = self._adopt_early()
            if early is not None and early.alive:
                self._zygote = early
                return early
            if early is not None:  # ended before its first step: another one, whose failure is said
                await early.aclose()
            self._prepare()
            assert self._state is not None
            process, sock = _Zygote.spawn(self._python, self._state)
            self._zygote = _Zygote(process, trio.socket.from_stdlib_socket(sock), _Zygote.log_path_in(self._state))
            return self._zygote

    def _prepare(self) -> None:
        """The private directory, the cgroups and the overlay driver a zygote starts with."""
        if self._state is None:
            self._state = tempfile.mkdtemp(prefix="pybuild-sandbox-", dir=self._state_parent)
            os.mkdir(os.path.join(self._state, "mnt"), 0o700)
            os.mkdir(os.path.join(self._state, "flat"), 0o700)
            remove_stale(self.cgroup_layout)
            try:  # rootless with a delegated cgroup: leave it before the zygote is forked there
                claim_delegated(self.cgroup_layout)
            except CgroupError as e:
                raise SandboxError(str(e), hint="run pybuild in a systemd scope of its own") from None
        if self._overlay is None:
            # Before the zygote starts: the driver chosen travels to it in the environment.
            self._overlay = probe_overlay(self._state)

    def _adopt_early(self) -> _Zygote | None:
        """The zygote ``start_early`` started, as the trio side talks to it (once)."""
        if self._early is None or self._state is None:
            return None
        process, sock = self._early
        self._early = None
        return _Zygote(process, trio.socket.from_stdlib_socket(sock), _Zygote.log_path_in(self._state))


class _MigrationPrimer:
    """Starts the kernel's slow part of the monitor's move into the step's cgroups early.

    Every write to a ``cgroup.procs`` file takes the kernel's global
    ``cgroup_threadgroup_rwsem`` for writing, and the first such write after
    a quiet spell waits for an RCU grace period (``rcu_sync_enter``): 4-15 ms
    measured on a 2-CPU machine, a third to a half of a ``RUN true``'s time in
    the sandbox.  Writes
    within about a grace period of the previous one do not wait.  So as a step
    starts, a thread moves pybuild into the cgroup it is already in (a move
    that changes nothing) while the zygote forks the monitor and the monitor
    mounts the rootfs; by the time the monitor joins the step's groups, the
    wait has passed or is mostly over.  pybuild's own pid, never another: it
    cannot exit or be reused meanwhile.  Where the write is refused (a rootless
    cgroup pybuild may not write), priming stops for good: it is only a speed-up.
    """

    def __init__(self, procs: str | None) -> None:
        self.procs = procs
        self.pid = str(os.getpid()).encode()

    @classmethod
    def of(cls, layout: CgroupLayout) -> _MigrationPrimer:
        return cls(own_cgroup_procs(layout, _read_or_empty("/proc/self/cgroup")))

    def start(self) -> threading.Thread | None:
        if self.procs is None:
            return None
        thread = threading.Thread(target=self._move_in_place, name="pybuild-cgroup-primer", daemon=True)
        thread.start()
        return thread

    def _move_in_place(self) -> None:
        procs = self.procs
        if procs is None:
            return
        try:
            fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, self.pid)
            finally:
                os.close(fd)
        except OSError:
            self.procs = None


def own_cgroup_procs(layout: CgroupLayout, proc_cgroup: str) -> str | None:
    """The ``cgroup.procs`` of the cgroup ``/proc/self/cgroup`` (``proc_cgroup``) names,
    in the v2 hierarchy if one is mounted, else in a mounted v1 one."""
    found: dict[bool, str] = {}  # is it the v2 one -> its file
    for line in proc_cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        v2 = hierarchy == "0" and not controllers
        root = layout.v2 if v2 else next((layout.v1[c] for c in controllers.split(",") if c in layout.v1), None)
        if root is not None and path.startswith("/") and "/.." not in path:
            found.setdefault(v2, os.path.join(root, path.lstrip("/"), "cgroup.procs"))
    return found.get(True, found.get(False))


def _read_or_empty(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def validate(rootfs: Rootfs, process: ProcessSpec, mounts: Sequence[Mount]) -> None:
    """Reject specs the sandbox cannot honour, with a clear message."""
    if os.geteuid() != 0:
        raise SandboxError(
            "the RUN sandbox needs root or a user namespace of its own (namespaces, overlayfs)",
            hint=ROOTLESS_HINT,
        )
    if not process.args or not all(isinstance(a, str) for a in process.args):
        raise SandboxError("a RUN step needs a command", hint="give RUN a command to run")
    if process.network not in NETWORK_MODES:
        raise SandboxError(
            f"unknown network mode {process.network!r}", hint="use --network=default, --network=none or --network=host"
        )
    if process.security not in SECURITY_MODES:
        raise SandboxError(f"unknown security mode {process.security!r}", hint="use --security=sandbox or --security=insecure")
    if not process.cwd.startswith("/"):
        raise SandboxError(f"working directory {process.cwd!r} is not absolute", hint="WORKDIR takes an absolute path")
    if not process.hostname or len(process.hostname.encode()) > 64 or "/" in process.hostname:
        raise SandboxError(f"invalid hostname {process.hostname!r}")
    texts = [*process.args, *process.env, process.cwd, process.user, *process.extra_hosts]
    for mount in mounts:
        if not isinstance(mount, (BindMount, OverlayMount, TmpfsMount, SecretMount)):
            raise SandboxError(f"unknown mount {type(mount).__name__}")
        if not mount.target.startswith("/"):
            raise SandboxError(f"mount target {mount.target!r} is not absolute", hint="RUN --mount target= takes an absolute path")
        texts.append(mount.target)
    for node in process.devices:
        if not node.path.startswith("/dev/") or "/.." in node.path or node.kind not in ("c", "b"):
            raise SandboxError(f"device node {node.path!r} must be a c or b node under /dev")
        if node.host_path and not node.host_path.startswith("/"):
            raise SandboxError(f"device node {node.path!r} has a relative host path {node.host_path!r}")
        texts += [node.path, node.host_path]
    for entry in process.env:
        if "=" not in entry:
            raise SandboxError(f"environment entry {entry!r} has no '='")
    if any("=" not in entry or "\0" in entry for entry in process.secret_env):
        raise SandboxError("a secret environment entry is malformed", hint="secret env entries are NAME=value")
    if any("\0" in text for text in texts):
        raise SandboxError("a NUL character cannot appear in a command, path or environment variable")
    if not rootfs.readonly and not (os.path.isdir(rootfs.upper) and os.path.isdir(rootfs.work)):
        raise SandboxError("the step's upper and work directories must exist", hint="this is a pybuild bug")


def _request_mounts(mounts: Sequence[Mount]) -> list[tuple[wire.Message, ...]]:
    """Mounts in their wire form (plain tuples, see ``_sandbox.open_detached_mount``)."""
    result: list[tuple[wire.Message, ...]] = []
    for mount in mounts:
        if isinstance(mount, BindMount):
            result.append(("bind", mount.target, mount.source, mount.readonly, mount.subpath))
        elif isinstance(mount, OverlayMount):
            result.append(("overlay", mount.target, tuple(mount.lowers), mount.upper, mount.work, mount.subpath))
        elif isinstance(mount, TmpfsMount):
            result.append(("tmpfs", mount.target, mount.size, mount.mode))
        elif isinstance(mount, SecretMount):
            result.append(("secret", mount.target, mount.data, mount.mode, mount.uid, mount.gid))
        else:
            raise SandboxError(f"unknown mount {type(mount).__name__}")
    return result


def _request(rootfs: Rootfs, process: ProcessSpec, mounts: Sequence[Mount], procs: list[str], state: str, slirp: str) -> dict[str, wire.Message]:
    return {
        "rootfs": (tuple(rootfs.lowers), rootfs.upper, rootfs.work, rootfs.readonly),
        "mounts": _request_mounts(mounts),
        "process": {
            "args": list(process.args),
            "env": list(process.env),
            "secret_env": list(process.secret_env),
            "cwd": process.cwd,
            "user": process.user,
            "network": process.network,
            "hostname": process.hostname,
            "etc_hostname": process.etc_hostname,
            "extra_hosts": list(process.extra_hosts),
            "devices": [(d.path, d.kind, d.major, d.minor, d.file_mode, d.uid, d.gid, d.host_path or d.path) for d in process.devices],
            **security_request(process),
        },
        "cgroup_procs": procs,
        "state_dir": os.path.join(state, "mnt"),
        "flatten_dir": os.path.join(state, "flat"),
        "slirp4netns": slirp,
    }


def security_request(process: ProcessSpec) -> dict[str, wire.Message]:
    """What the sandbox needs to confine the process: its capabilities, seccomp program, no_new_privs."""
    from . import _seccomp
    from ._caps import DOCKER_DEFAULT_MASK
    if process.security == "insecure":
        # BuildKit's insecure mode: every capability (that pybuild itself holds), and no filter.
        return {"capabilities": own_bounding_set(), "seccomp": None, "insecure": True, "no_new_privs": process.no_new_privileges}
    try:
        program = _seccomp.compile_filter(process.seccomp, DOCKER_DEFAULT_MASK)
    except PybuildError as e:
        raise SandboxError(e.message, hint=e.hint) from None
    return {"capabilities": DOCKER_DEFAULT_MASK, "seccomp": program, "insecure": False, "no_new_privs": process.no_new_privileges}


def own_bounding_set() -> int:
    """The capabilities this process could hold: the most a sandbox can be given."""
    with open("/proc/self/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split(":", 1)[1], 16)
    raise SandboxError("cannot read pybuild's own capabilities from /proc/self/status")


class _Zygote:
    def __init__(self, process: ZygoteProcess, sock: trio.socket.SocketType, log_path: str) -> None:
        self.process = process
        self.sock = sock
        self.log_path = log_path
        self.broken = False

    @staticmethod
    def log_path_in(state: str) -> str:
        return os.path.join(state, "zygote.log")

    @staticmethod
    def spawn(python: str, state: str) -> tuple[ZygoteProcess, socket.socket]:
        try:
            return spawn_zygote([python, "-I", "-S", _ZYGOTE], _Zygote.log_path_in(state), _zygote_environ())
        except OSError as e:
            raise SandboxError(f"cannot start the sandbox helper: {e.strerror}", hint=f"check that {python} runs") from None

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.returncode is None

    def failure_detail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read()[-4096:].decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return lines[-1] if lines else ""

    async def submit(self, fds: list[int]) -> None:
        try:
            await self.sock.sendmsg([b"step"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        except OSError as e:
            self.broken = True
            detail = self.failure_detail()
            raise SandboxError(
                "the sandbox helper process is not running" + (f": {detail}" if detail else ""),
                hint="this is a pybuild bug; the next step starts a new helper",
            ) from e

    async def aclose(self) -> None:
        self.sock.close()  # the zygote exits at end of file, killing its monitors
        with trio.move_on_after(5):
            await self.process.wait()
            return
        self.process.kill()
        await self.process.wait()


class _Step:
    """One step's conversation with its monitor."""

    def __init__(self, on_output: Callable[[str, bytes], None] | None) -> None:
        self.on_output = on_output
        self.zygote: _Zygote | None = None
        self.ctl: trio.socket.SocketType | None = None
        self.streams: list[tuple[str, trio.lowlevel.FdStream]] = []
        self.decoder = wire.Decoder()
        self.status: int | None = None
        self.error: tuple[str, str | None] | None = None
        self.reaped = False
        self.lost = False
        self.timed_out = False
        self.oom_killed = False
        self.kill_sent = False
        self.started = 0.0
        self.ended: float | None = None

    async def start(self, zygote: _Zygote, request: dict[str, wire.Message]) -> None:
        self.zygote = zygote
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ctl = trio.socket.from_stdlib_socket(ours)
        out_r, out_w = os.pipe2(os.O_CLOEXEC)
        err_r, err_w = os.pipe2(os.O_CLOEXEC)
        self.streams = [("stdout", trio.lowlevel.FdStream(out_r)), ("stderr", trio.lowlevel.FdStream(err_r))]
        self.started = time.monotonic()
        try:
            await zygote.submit([theirs.fileno(), out_w, err_w])
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
        data = memoryview(wire.encode(request))
        while data:
            try:
                sent = await self.ctl.send(data)
            except OSError:
                return  # the monitor is gone already; wait() sees the end of file
            data = data[sent:]

    async def wait(self, timeout: float | None) -> None:
        drained = trio.Event()
        open_streams = [len(self.streams)]
        async with trio.open_nursery() as nursery:
            for name, stream in self.streams:
                nursery.start_soon(self._pump, name, stream, open_streams, drained)
            with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
                await self._read_control(until_exit=True)
            if scope.cancelled_caught:
                self.timed_out = True
                await self._kill()
            await self._read_control(until_exit=False)
            # Every writer is dead once the monitor is reaped; the grace period
            # only guards against a bug keeping a pipe open.
            with trio.move_on_after(_REAP_TIMEOUT):
                await drained.wait()
            nursery.cancel_scope.cancel()

    async def _pump(self, name: str, stream: trio.lowlevel.FdStream, open_streams: list[int], drained: trio.Event) -> None:
        try:
            while True:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                if self.on_output is not None:
                    self.on_output(name, chunk)
        finally:
            open_streams[0] -= 1
            if not open_streams[0]:
                drained.set()

    async def _read_control(self, *, until_exit: bool) -> None:
        assert self.ctl is not None
        while not self.reaped and not self.lost:
            if until_exit and (self.status is not None or self.error is not None):
                return
            try:
                data = await self.ctl.recv(65536)
            except OSError:  # ECONNRESET: the monitor died with our request unread
                data = b""
            if not data:
                self.lost = True
                return
            for message in self.decoder.feed(data):
                kind = message[0]
                if kind == "exit":
                    self.status = message[1]
                    self.ended = time.monotonic()
                elif kind == "error":
                    self.error = (message[1], message[2])
                elif kind == "reaped":
                    self.reaped = True

    async def _kill(self) -> None:
        if self.kill_sent or self.ctl is None:
            return
        self.kill_sent = True
        try:
            await self.ctl.send(wire.encode(("kill",)))
        except OSError:
            pass

    async def finish(self, cgroups: StepCgroups) -> None:
        """Make sure the sandbox is gone, then release everything (runs shielded)."""
        if self.ctl is not None and not self.reaped and not self.lost:
            # The monitor kills the sandbox and then cleans up (mount stubs);
            # killing the cgroup first would kill the monitor too early.
            await self._kill()
            with trio.move_on_after(_KILL_GRACE):
                await self._read_control(until_exit=False)
            if not self.reaped:
                cgroups.kill()
                with trio.move_on_after(_REAP_TIMEOUT):
                    await self._read_control(until_exit=False)
        cgroups.kill()  # nothing should be left; if something is, it must not outlive the step
        self.oom_killed = cgroups.oom_kills() > 0
        for _ in range(400):
            if cgroups.remove():
                break
            await trio.sleep(0.005)
        if self.ctl is not None:
            self.ctl.close()
        for _, stream in self.streams:
            await stream.aclose()

    def result(self) -> ExecResult:
        if self.error is not None:
            raise SandboxError(self.error[0], hint=self.error[1])
        if self.status is None:
            detail = self.zygote.failure_detail() if self.zygote is not None else ""
            raise SandboxError(
                "the sandbox ended before reporting the command's exit" + (f": {detail}" if detail else ""),
                hint="this is a pybuild bug",
            )
        duration = (self.ended or time.monotonic()) - self.started
        if os.WIFSIGNALED(self.status):
            sig = os.WTERMSIG(self.status)
            return ExecResult(exit_code=128 + sig, duration=duration, signal=sig, timed_out=self.timed_out, oom_killed=self.oom_killed)
        return ExecResult(exit_code=os.WEXITSTATUS(self.status), duration=duration, timed_out=self.timed_out, oom_killed=self.oom_killed)


def _zygote_environ() -> dict[str, str]:
    """The zygote's whole environment: nothing of the caller's but the choices made through
    pybuild's own variables (volatile overlays, deferred syncs, the network driver, the steps'
    scheduling), as they are now."""
    environ = {"PATH": DEFAULT_PATH, "LC_ALL": "C.UTF-8"}
    if volatile_uppers_requested():
        environ["PYBUILD_VOLATILE_OVERLAYS"] = "1"
    if step_syncs_deferred():
        environ[DEFERRED_ENV] = "deferred"
    for name in ("PYBUILD_NETWORK_DRIVER", SCHED_ENV):
        if name in os.environ:
            environ[name] = os.environ[name]
    return environ
