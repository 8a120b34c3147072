"""Containers at run time: the RUN sandbox kept alive under a supervisor.

A container runs in exactly the sandbox a RUN step gets (``_sandbox``), over
an overlay whose upper directory is the container's writable layer.  What
a RUN step's executor does from trio -- make the cgroups, hand the request
to a monitor, wait -- is done here for a process that must outlive the
pybuild command: ``start`` launches a supervisor (``_containers_shim``) that
keeps the container, its log and its published ports, and returns once the
command runs (``run -d``), or stays attached until it ends (``run``, with
``-it`` relaying pybuild's terminal).  ``exec`` enters a running container
(``_containers_exec``), ``stop`` and ``kill`` end one.

All the state a later command needs sits in the container's directory
(``_containers_state``), so this class keeps none: any pybuild process can
ask about, stop or enter any container.

The container's bookkeeping -- its directory under the root, name, image
and config -- is ``_containers_store``'s; this module runs what it describes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from pybuild.errors import PybuildError, SandboxError

from . import _containers_exec as entering
from . import _containers_log as logs
from . import _containers_state as states
from . import _containers_tty as ttys
from . import _wire as wire
from ._cgroups import CGROUP_PARENT, CgroupError, StepCgroups, detect_layout
from ._containers_store import PublishedPort
from ._executor import _request, security_request, validate
from ._sandbox import DEFAULT_PATH
from ._spec import ProcessSpec, Rootfs

_HERE = os.path.dirname(os.path.abspath(__file__))
_SHIM = os.path.join(_HERE, "_containers_shim.py")
_SUPERVISOR_LOG = "supervisor.log"

# How long ``kill`` waits for a supervisor to take its container down.
_KILL_TIMEOUT = 30.0
# How long a starting container may take before its supervisor can be asked about it.
_STARTING_TIMEOUT = 30.0

RuntimeState = states.RuntimeState
Frame = logs.Frame
STDOUT, STDERR = logs.STDOUT, logs.STDERR


@dataclass(frozen=True)
class ContainerLaunch:
    """What starting a container needs; the caller made ``directory`` and the rootfs dirs.

    ``rootfs.upper`` is the container's layer and survives it.  ``directory``
    receives the runtime's files (state, lock, log, the sandbox's mount
    point).  ``remove_on_exit`` are paths the supervisor deletes when the
    container ends (``run --rm``).  ``cgroup_name`` names the container's
    cgroups (unique per container).
    """

    directory: str
    rootfs: Rootfs
    process: ProcessSpec
    cgroup_name: str
    tty: bool = False
    interactive: bool = False
    ports: tuple[PublishedPort, ...] = ()
    remove_on_exit: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class ContainerStatus:
    """The recorded state plus whether a supervisor is alive to back it."""

    state: states.RuntimeState
    supervised: bool

    @property
    def running(self) -> bool:
        return self.supervised and self.state.status == states.RUNNING

    @property
    def lost(self) -> bool:
        """Recorded as running, but its supervisor was killed."""
        return not self.supervised and self.state.status == states.RUNNING


class ContainerRuntime:
    """Starts, enters and ends containers; stateless (everything is in their directories)."""

    def __init__(self, *, python: str | None = None, slirp4netns: str | None = None) -> None:
        self._python = python or sys.executable
        self._slirp4netns = slirp4netns or shutil.which("slirp4netns") or "/usr/bin/slirp4netns"

    # -- starting ---------------------------------------------------------------

    def start(self, launch: ContainerLaunch, *, attach: bool) -> int | None:
        """Start the container's command; None once it runs (detached), else its exit code.

        Attached, the container's output goes to this process's stdout and
        stderr (with ``-i`` it reads this process's stdin), a tty is relayed
        in raw mode, SIGWINCH resizes it and SIGINT/SIGTERM are passed on to
        the container's pid 1.  Raises ``SandboxError`` if the command
        cannot be started (its ``exit_code`` is Docker's: 125, 126 or 127).
        """
        validate(launch.rootfs, launch.process, ())
        for name in ("mnt", "flat"):
            os.makedirs(os.path.join(launch.directory, name), 0o700, exist_ok=True)
        groups = StepCgroups(detect_layout(), name=launch.cgroup_name)
        try:
            procs = groups.create(launch.process.pids_limit, launch.process.memory_limit)
        except CgroupError as e:
            raise SandboxError(str(e), hint="run pybuild as root on a machine with cgroups mounted") from None
        except FileExistsError:
            raise SandboxError(f"the container's cgroup {launch.cgroup_name} exists already", hint="is the container running?") from None
        try:
            with contextlib.ExitStack() as stack:
                console = _Console(launch, attach, stack)
                channel = self._launch_supervisor(launch, procs, groups.paths, console)
                stack.callback(channel.close)
                return _Session(channel, console, launch.directory).follow(attach)
        except BaseException:
            # A supervisor that got as far as the monitor removes the groups itself; this only
            # catches groups nobody entered (removal of a group in use fails and is left to it).
            groups.remove()
            raise

    def _launch_supervisor(self, launch: ContainerLaunch, procs: list[str], cgroup_dirs: list[str], console: _Console) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        request = {
            "directory": launch.directory,
            "sandbox": _request(launch.rootfs, launch.process, (), procs, launch.directory, self._slirp4netns),
            "tty": launch.tty,
            "fds": console.child_fds,
            "ports": [(p.host_ip, p.host_port, p.container_port, p.protocol) for p in launch.ports],
            "remove_on_exit": list(launch.remove_on_exit),
            "cgroups": list(cgroup_dirs),
        }
        try:
            with open(os.path.join(launch.directory, _SUPERVISOR_LOG), "ab") as log:
                process = subprocess.Popen(
                    [self._python, "-I", "-S", _SHIM, str(theirs.fileno())],
                    pass_fds=(theirs.fileno(), *console.passed),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    cwd=launch.directory,
                    env={"PATH": DEFAULT_PATH, "LC_ALL": "C.UTF-8"},
                    start_new_session=True,
                )
        except OSError as e:
            ours.close()
            raise SandboxError(f"cannot start the container's supervisor: {e.strerror}", hint=f"check that {self._python} runs") from None
        finally:
            theirs.close()
            console.passed_to_child()
        try:
            wire.write_message(ours.fileno(), request)
        except OSError:
            ours.close()
            process.wait()
            raise SandboxError(
                "the container's supervisor died at start", hint=f"see {os.path.join(launch.directory, _SUPERVISOR_LOG)}"
            ) from None
        process.wait()  # the supervisor forks and this first process exits at once
        return ours

    # -- looking -------------------------------------------------------------------

    @staticmethod
    def status(directory: str) -> ContainerStatus:
        return ContainerStatus(states.read_state(directory), states.supervised(directory))

    @staticmethod
    def log_frames(directory: str, offset: int = 0) -> tuple[list[logs.Frame], int]:
        """Whole log frames from ``offset`` on, and where the next read starts."""
        return logs.read_frames(os.path.join(directory, states.LOG_FILE), offset)

    # -- ending ----------------------------------------------------------------------

    def stop(self, directory: str, *, timeout: float, stop_signal: int = signal.SIGTERM) -> None:
        """Send the stop signal to the container's pid 1, then kill it after ``timeout`` seconds."""
        if not states.supervised(directory):
            self.release(directory)
            return
        state = _settled_state(directory)
        if state.status == states.RUNNING and _same_process(state.init_pid, state.init_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.init_pid, stop_signal)
            if _wait_unsupervised(directory, timeout):
                return
        self.kill(directory)

    def kill(self, directory: str) -> None:
        """SIGKILL the container and wait until its supervisor has cleaned up."""
        if not states.supervised(directory):
            self.release(directory)
            return
        state = _settled_state(directory)
        if state.supervisor_pid and _same_process(state.supervisor_pid, state.supervisor_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.supervisor_pid, signal.SIGTERM)  # the supervisor's "kill the container"
        if not _wait_unsupervised(directory, _KILL_TIMEOUT):
            raise SandboxError(
                "the container did not stop",
                hint=f"its supervisor (pid {state.supervisor_pid}) did not end; see {directory}/{_SUPERVISOR_LOG}",
            )

    @staticmethod
    def release(directory: str, cgroup_name: str | None = None) -> None:
        """Clean up after a supervisor that was killed: its container's processes and cgroups.

        ``cgroup_name`` (the launch's) also finds groups made by a pybuild
        that died before its supervisor could record them.
        """
        if states.supervised(directory):
            return
        layout = detect_layout()
        paths = set(states.read_state(directory).cgroups)
        if cgroup_name:
            roots = {*layout.v1.values(), *([layout.v2] if layout.v2 else [])}
            paths |= {os.path.join(root, CGROUP_PARENT, cgroup_name) for root in roots}
        groups = StepCgroups(layout, name="container")
        groups.paths = sorted(p for p in paths if os.path.isdir(p))
        if not groups.paths:
            return
        groups.kill()
        deadline = time.monotonic() + _KILL_TIMEOUT
        while not groups.remove() and time.monotonic() < deadline:
            time.sleep(0.01)

    # -- entering ------------------------------------------------------------------

    def exec(self, directory: str, process: ProcessSpec, *, tty: bool, interactive: bool, detach: bool = False) -> int:
        """Run ``process`` in the running container; its exit code (0 at once with ``detach``)."""
        status = self.status(directory)
        state = status.state
        if not status.running or not _same_process(state.init_pid, state.init_start):
            raise PybuildError("the container is not running", hint="start a new one with pybuild run")
        procs = tuple(os.path.join(p, "cgroup.procs") for p in state.cgroups if os.path.isdir(p))
        spec = {"args": list(process.args), "env": list(process.env), "cwd": process.cwd, "user": process.user}
        spec.update(security_request(process))
        with contextlib.ExitStack() as stack:
            if tty:
                master, slave = os.openpty()
                stack.callback(os.close, master)
                ttys.set_window_size(slave, _terminal_size())
                stdio = (slave, slave, slave)
            else:
                null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                stack.callback(os.close, null)
                stdio = (0 if interactive and not detach else null, null if detach else 1, null if detach else 2)
            try:
                entrant = entering.spawn(state.init_pid, procs, spec, stdio, tty=tty, detach=detach)
            except OSError as e:
                raise PybuildError(f"cannot enter the container: {e.strerror}", hint="is it still running? see pybuild ps") from None
            finally:
                if tty:
                    os.close(slave)
            if tty and not detach:
                stack.enter_context(_resizing(master))
                if interactive:
                    stack.enter_context(ttys.raw_terminal(0))
                _relay_terminal(master, 0 if interactive else None)
            with _ignoring_interrupts(not tty):
                _, wait_status = os.waitpid(entrant, 0)
            return entering.exit_status_of(wait_status)


# ------------------------------------------------------------------------------
# the client side of a supervisor


class _Console:
    """The descriptors a starting container gets from this process, and their cleanup.

    With a tty, pybuild allocates the pty (keeping the master to resize it)
    and the supervisor relays it; otherwise the container reads this
    process's stdin directly (``-i``) and the supervisor copies its output
    here.  Detached, the container gets neither.
    """

    def __init__(self, launch: ContainerLaunch, attach: bool, stack: contextlib.ExitStack) -> None:
        self.tty = launch.tty
        self.master: int | None = None
        self.child_fds: dict[str, int | None] = {}
        self.passed: list[int] = []
        self._to_close: list[int] = []
        if launch.tty:
            master, slave = os.openpty()
            ttys.set_window_size(slave, _terminal_size())
            self.master = os.dup(master)  # ours, for resizing
            stack.callback(os.close, self.master)
            self._give("pty_master", master)
            self._give("pty_slave", slave)
            if attach:
                if launch.interactive:
                    self._give("client_stdin", os.dup(0))
                    stack.enter_context(ttys.raw_terminal(0))
                self._give("client_stdout", os.dup(1))
        elif attach:
            if launch.interactive:
                self._give("stdin", os.dup(0))
            self._give("client_stdout", os.dup(1))
            self._give("client_stderr", os.dup(2))

    def _give(self, name: str, fd: int) -> None:
        self.child_fds[name] = fd
        self.passed.append(fd)
        self._to_close.append(fd)

    def passed_to_child(self) -> None:
        """The supervisor has its copies: drop ours (the pty slave above all, or it never hangs up)."""
        for fd in self._to_close:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._to_close = []


class _Session:
    """Reads what the supervisor says: started, exited or failed."""

    def __init__(self, channel: socket.socket, console: _Console, directory: str) -> None:
        self.channel = channel
        self.console = console
        self.directory = directory
        self.decoder = wire.Decoder()
        self.pending: list[wire.Message] = []
        self.init_pid = 0

    def follow(self, attach: bool) -> int | None:
        with contextlib.ExitStack() as stack:
            if attach and self.console.master is not None:
                stack.enter_context(_resizing(self.console.master))
                stack.enter_context(_leaving_on_termination())
            if attach and not self.console.tty:
                stack.enter_context(_forwarding_signals(lambda: self.init_pid))
            while True:
                message = self._next()
                if message[0] == "started":
                    self.init_pid = message[1]["init_pid"]
                    if not attach:
                        return None
                elif message[0] == "exited":
                    self._until_supervisor_gone()
                    return None if not attach else int(message[1])
                elif message[0] == "failed":
                    self._until_supervisor_gone()
                    _, text, hint, code = message
                    error = SandboxError(text, hint=hint)
                    error.exit_code = code
                    raise error

    def _until_supervisor_gone(self) -> None:
        """The supervisor's last word comes just before it exits: wait for that, so
        that when ``start`` returns nothing of the container is left running."""
        self.channel.settimeout(_KILL_TIMEOUT)
        try:
            while self.channel.recv(65536):
                pass
        except OSError:
            pass
        _wait_unsupervised(self.directory, _KILL_TIMEOUT)

    def _next(self) -> wire.Message:
        while not self.pending:
            try:
                data = self.channel.recv(65536)
            except InterruptedError:
                continue
            if not data:
                raise SandboxError(
                    "the container's supervisor ended without a word", hint=f"see {_SUPERVISOR_LOG} in the container's directory"
                )
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)


@contextlib.contextmanager
def _handling(handler: Callable[[int, object], None] | signal.Handlers, *signals: signal.Signals) -> Iterator[None]:
    """``handler`` takes ``signals`` while the block runs; their previous handlers come back after it."""
    saved = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)


def _resizing(master: int) -> contextlib.AbstractContextManager[None]:
    """While attached, SIGWINCH copies this terminal's size to the container's pty."""
    return _handling(lambda *_: ttys.set_window_size(master, _terminal_size()), signal.SIGWINCH)


def _forwarding_signals(target: Callable[[], int]) -> contextlib.AbstractContextManager[None]:
    """While attached without a tty, SIGINT and SIGTERM go to the container's pid 1 (Docker's sig-proxy)."""

    def forward(number: int, _frame: object) -> None:
        pid = target()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)

    return _handling(forward, signal.SIGINT, signal.SIGTERM)


class _Terminated(SystemExit):
    pass


def _leaving_on_termination() -> contextlib.AbstractContextManager[None]:
    """With a tty, SIGTERM or SIGHUP ends pybuild cleanly: its terminal leaves raw mode, the
    supervisor sees the client go and the container goes on (Docker's client does the same)."""

    def leave(number: int, _frame: object) -> None:
        raise _Terminated(128 + number)

    return _handling(leave, signal.SIGTERM, signal.SIGHUP)


def _ignoring_interrupts(enabled: bool) -> contextlib.AbstractContextManager[None]:
    """``exec`` without a tty: Ctrl-C reaches the entrant (same process group) and ends it; pybuild waits."""
    return _handling(signal.SIG_IGN, signal.SIGINT) if enabled else contextlib.nullcontext()


def _relay_terminal(master: int, stdin: int | None) -> None:
    """Copy the pty's output to stdout (and stdin to it) until the last process closes it."""
    import select

    relay = ttys.Relay()
    done = [False]
    relay.copy(master, [lambda data: ttys.write_all(1, data)], lambda: done.__setitem__(0, True))
    if stdin is not None:
        relay.feed(stdin, master)
    while not done[0]:
        poller = select.poll()
        for fd, events in relay.poll_entries():
            poller.register(fd, events)
        for fd, events in poller.poll():
            relay.handle(fd, events)
    os.set_blocking(master, True)


def _terminal_size() -> tuple[int, int] | None:
    for fd in (0, 1, 2):
        size = ttys.window_size(fd)
        if size is not None:
            return size
    return None


def _settled_state(directory: str) -> states.RuntimeState:
    """The state once a starting container's supervisor has recorded itself (bounded wait)."""
    deadline = time.monotonic() + _STARTING_TIMEOUT
    while True:
        state = states.read_state(directory)
        if state.supervisor_pid or time.monotonic() > deadline or not states.supervised(directory):
            return state
        time.sleep(0.01)


def _same_process(pid: int, start: int) -> bool:
    return bool(pid) and states.process_start_time(pid) == start


def _wait_unsupervised(directory: str, timeout: float) -> bool:
    """Wait until the supervisor has exited (its lock is free); False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while states.supervised(directory):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True
