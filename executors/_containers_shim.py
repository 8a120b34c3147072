"""The supervisor of one container: what keeps it running after pybuild returns.

``pybuild run`` starts this script as ``python -I -S _containers_shim.py FD``
(like the zygote: no site, no user paths, only stdlib siblings), in a
session of its own and in the container's directory, and sends the
request on FD, a socket that stays the line to the client.  The script
forks once and the first process exits, so the supervisor is nobody's
child but init's and outlives the command that started it.

The supervisor then

- takes the container's lock (held until it exits: see ``_containers_state``),
- forks the monitor (``_containers_monitor``: the RUN sandbox's monitor with
  a console), which builds the sandbox and forks the container's init,
- waits for the init to exec the container's command, publishes ports
  through slirp4netns's API and records the container as running,
- copies the container's output into ``log`` and, while a client is
  attached (a foreground ``run``), to the client's descriptors; with a tty,
  it also feeds the client's keystrokes to the pty,
- on SIGTERM, has the monitor kill the container (``pybuild stop`` sends the
  stop signal to the init itself first),
- when the monitor has been reaped -- every mount of the container gone --
  removes the cgroups, records how the container ended, removes the
  container (``run --rm``) and tells the client.

The client line carries ``("started", info)``, then ``("exited", code)``;
or ``("failed", message, hint, code)`` if the command never ran.  When the
client goes away, the supervisor detaches it and the container goes on.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import sys
import time

TYPE_CHECKING = False  # not typing's: the shim does not import typing
if TYPE_CHECKING:
    from collections.abc import Callable

if __package__:
    from . import _cgroups as cgroups
    from . import _containers_log as logs
    from . import _containers_monitor as monitors
    from . import _containers_net as net
    from . import _containers_state as states
    from . import _containers_tty as ttys
    from . import _linux as linux
    from . import _wire as wire
else:  # run as a script with -I (which leaves the script's directory off sys.path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _cgroups as cgroups
    import _containers_log as logs
    import _containers_monitor as monitors
    import _containers_net as net
    import _containers_state as states
    import _containers_tty as ttys
    import _linux as linux
    import _wire as wire

# How often the supervisor looks whether the init has exec'd the command, until it has.
_READY_POLL_MS = 5
# How long a killed container's cgroups get to empty before the supervisor gives up on removing them.
_CGROUP_REMOVE_TIMEOUT = 10.0
# How long the supervisor waits for slirp4netns to exit after the container.
_ORPHAN_TIMEOUT = 10.0
# Lines of the container's stderr shown when its command could not be started.
_FAILURE_TAIL = 5


def main(argv: list[str]) -> int:
    channel = socket.socket(fileno=int(argv[1]))
    request = wire.read_message(channel.fileno())
    if not isinstance(request, dict):
        return 1
    if os.fork() > 0:
        os._exit(0)  # the launching pybuild reaps this one; the supervisor lives on, re-parented
    status = Supervisor(channel, request).run()
    sys.stderr.flush()
    os._exit(status)  # at once: the lock goes with the process


class Supervisor:
    def __init__(self, channel: socket.socket, request: dict[str, wire.Message]) -> None:
        self.channel: socket.socket | None = channel
        self.request = request
        self.directory = request["directory"]
        self.tty = bool(request["tty"])
        self.fds: dict[str, int | None] = request["fds"]
        self.sandbox = dict(request["sandbox"])
        self.state = states.RuntimeState(
            supervisor_pid=os.getpid(),
            supervisor_start=states.process_start_time(os.getpid()) or 0,
            cgroups=tuple(request["cgroups"]),
        )
        self.log = logs.LogWriter(os.path.join(self.directory, states.LOG_FILE))
        self.relay = ttys.Relay()
        self.monitor_pid = 0
        self.monitor_status: int | None = None
        self.ctl: int = -1
        self.decoder = wire.Decoder()
        self.exit_status: int | None = None
        self.error: tuple[str, str | None] | None = None
        self.init_pid: int | None = None
        self.ready = False
        self.kill_sent = False
        self.stderr_tail = bytearray()
        self.outputs_open = 0
        self.signals: list[int] = []

    # -- the life of the container ---------------------------------------------

    def run(self) -> int:
        try:
            # Never closed: the kernel releases it as this process exits, so whoever
            # sees the lock free knows the supervisor is gone, not merely going.
            states.take_lock(self.directory)
        except BlockingIOError:
            self.tell(("failed", "the container is already running", None, 125))
            return 1
        states.write_state(self.directory, self.state)
        self.start()
        self.loop()
        self.finish()
        return 0

    def start(self) -> None:
        wakeup_r, wakeup_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.wakeup = wakeup_r
        signal.set_wakeup_fd(wakeup_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM):
            signal.signal(sig, lambda number, _frame: self.signals.append(number))
        for sig in (signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        # slirp4netns outlives its monitor for a moment: orphans come here and are reaped.
        linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
        if self.request["ports"]:
            self.sandbox["slirp4netns"] = net.write_wrapper(self.directory, self.sandbox["slirp4netns"])

        stdin: int | None
        if self.tty:
            slave = self.fds["pty_slave"]
            assert slave is not None
            out_w, err_w, stdin = os.dup(slave), os.dup(slave), os.dup(slave)
            self.close_fd("pty_slave")
            master = self.fds["pty_master"]
            assert master is not None
            self.outputs_open = 1
            self.relay.copy(master, [self.logger(logs.STDOUT), self.keep_stderr, self.to_client("client_stdout")], self.output_ended)
            if self.fds.get("client_stdin") is not None:
                self.relay.feed(self.fds["client_stdin"], master)  # type: ignore[arg-type]  # not None: checked just above
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            stdin = self.fds.get("stdin")
            self.outputs_open = 2
            self.relay.copy(out_r, [self.logger(logs.STDOUT), self.to_client("client_stdout")], self.output_ended)
            self.relay.copy(err_r, [self.logger(logs.STDERR), self.keep_stderr, self.to_client("client_stderr")], self.output_ended)
        keep_for_child = [out_w, err_w] + ([stdin] if stdin is not None else [])

        ctl_ours, ctl_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                signal.set_wakeup_fd(-1)
                ctl_ours.close()
                self.close_everything_but(keep_for_child + [ctl_theirs.fileno(), 0, 1, 2])
                status = monitors.monitor_main(ctl_theirs.detach(), out_w, err_w, self.sandbox, stdin, self.tty)
            finally:
                os._exit(status)
        self.monitor_pid = pid
        ctl_theirs.close()
        for fd in keep_for_child:
            os.close(fd)
        if not self.tty and self.fds.get("stdin") is not None:
            self.fds["stdin"] = None  # closed above: the container owns it now
        self.ctl = ctl_ours.detach()

    def loop(self) -> None:
        while self.monitor_status is None or self.relay.active:
            poller = select.poll()
            for fd, events in self.relay.poll_entries():
                poller.register(fd, events)
            poller.register(self.wakeup, select.POLLIN)
            if self.ctl >= 0:
                poller.register(self.ctl, select.POLLIN)
            if self.channel is not None:
                poller.register(self.channel.fileno(), select.POLLIN)
            waiting_for_exec = not self.ready and self.monitor_status is None and self.exit_status is None and self.error is None
            for fd, events in poller.poll(_READY_POLL_MS if waiting_for_exec else None):
                if fd == self.wakeup:
                    self.on_signals()
                elif fd == self.ctl:
                    self.on_monitor_message()
                elif self.channel is not None and fd == self.channel.fileno():
                    self.on_client_message()
                else:
                    self.relay.handle(fd, events)
            if waiting_for_exec:
                self.check_ready()
            if self.monitor_status is not None and self.outputs_open == 0:
                break

    def check_ready(self) -> None:
        if self.init_pid is None:
            self.init_pid = monitors.find_init(self.monitor_pid)
            if self.init_pid is None:
                return
        if not monitors.has_exec_d(self.init_pid, self.monitor_pid):
            return
        self.ready = True
        try:
            self.publish_ports()
        except net.PortError as e:
            self.error = (str(e), "choose another host port with -p HOSTPORT:PORT")
            self.kill()
            return
        start = states.process_start_time(self.init_pid) or 0
        self.state = self.state.but(status=states.RUNNING, init_pid=self.init_pid, init_start=start, started_at=time.time())
        states.write_state(self.directory, self.state)
        self.tell(("started", {"init_pid": self.init_pid}))

    def publish_ports(self) -> None:
        if not self.request["ports"]:
            return
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for host_ip, host_port, container_port, protocol in self.request["ports"]:
                net.add_forward(directory, host_ip, host_port, container_port, protocol)
        finally:
            os.close(directory)

    def finish(self) -> None:
        status = self.monitor_status
        self.reap_orphans()
        self.remove_cgroups()
        self.log.close()
        if self.exit_status is not None and os.WIFSIGNALED(self.exit_status):
            code = 128 + os.WTERMSIG(self.exit_status)
        elif self.exit_status is not None:
            code = os.WEXITSTATUS(self.exit_status)
        else:
            code = None
        now = time.time()
        if self.error is not None or code is None:
            message, hint = self.error or ("the container's monitor ended without reporting an exit", "this is a pybuild bug")
            if status is not None and code is None and not self.error:
                message += f" (monitor status {status})"
            self.state = self.state.but(status=states.CREATED, init_pid=0, error=message, finished_at=now)
            outcome: tuple[object, ...] = ("failed", message, hint, 125)
        elif self.exec_failed(code):
            tail = bytes(self.stderr_tail).decode(errors="replace").strip().splitlines()[-_FAILURE_TAIL:]
            message = "; ".join(line.removeprefix("pybuild: ") for line in tail)
            self.state = self.state.but(status=states.CREATED, init_pid=0, exit_code=code, error=message, finished_at=now)
            outcome = ("failed", message, None, code)
        else:
            started = self.state.started_at or now  # a command that ended before it was seen running
            self.state = self.state.but(status=states.EXITED, init_pid=0, exit_code=code, started_at=started, finished_at=now)
            outcome = ("exited", code)
        if self.request["remove_on_exit"]:
            remove_paths(self.request["remove_on_exit"])
        else:
            states.write_state(self.directory, self.state)
        self.tell(outcome)

    def exec_failed(self, code: int) -> bool:
        """Did the init end without running the command (not found: 127, not runnable: 126)?

        The sandbox's init says so on stderr before it exits; a command
        that ran and ended before the supervisor saw it running did not.
        """
        return not self.ready and code in (126, 127) and b'pybuild: exec "' in self.stderr_tail

    def reap_orphans(self) -> None:
        """Wait (briefly) for slirp4netns, which the monitor left behind, so nothing outlives the container."""
        deadline = time.monotonic() + _ORPHAN_TIMEOUT
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.01)

    # -- events --------------------------------------------------------------

    def on_signals(self) -> None:
        try:
            while os.read(self.wakeup, 4096):
                pass
        except BlockingIOError:
            pass
        received, self.signals = self.signals, []
        if signal.SIGTERM in received:
            self.kill()
        for pid, status in linux.exited_children():
            if pid == self.monitor_pid:
                self.monitor_status = status

    def on_monitor_message(self) -> None:
        try:
            data = os.read(self.ctl, 65536)
        except ConnectionResetError:
            data = b""
        if not data:
            os.close(self.ctl)
            self.ctl = -1
            return
        for message in self.decoder.feed(data):
            assert isinstance(message, tuple)
            if message[0] == "exit":
                self.exit_status = message[1]
            elif message[0] == "error":
                self.error = (message[1], message[2])

    def on_client_message(self) -> None:
        assert self.channel is not None
        try:
            data = self.channel.recv(4096)
        except OSError:
            data = b""
        if not data:
            self.detach_client()

    def kill(self) -> None:
        """Have the monitor SIGKILL the container's init (the kernel then kills the rest)."""
        if self.kill_sent or self.ctl < 0:
            return
        self.kill_sent = True
        try:
            wire.write_message(self.ctl, ("kill",))
        except OSError:
            pass

    # -- output ----------------------------------------------------------------

    def logger(self, stream: int) -> Callable[[bytes], None]:
        return lambda data: self.log.write(stream, data)

    def keep_stderr(self, data: bytes) -> None:
        if not self.ready:
            self.stderr_tail += data[-4096:]
            del self.stderr_tail[:-4096]

    def to_client(self, name: str) -> Callable[[bytes], None]:
        def sink(data: bytes) -> None:
            fd = self.fds.get(name)
            if fd is None:
                return
            try:
                ttys.write_all(fd, data)
            except OSError:
                self.detach_client()

        return sink

    def output_ended(self) -> None:
        self.outputs_open -= 1

    def tell(self, message: tuple[object, ...]) -> None:
        if self.channel is None:
            return
        try:
            self.channel.sendall(wire.encode(message))
        except OSError:
            self.detach_client()

    def detach_client(self) -> None:
        """The client is gone: stop reading and writing its descriptors; the container goes on."""
        for name in ("client_stdin", "client_stdout", "client_stderr"):
            fd = self.fds.get(name)
            if fd is not None:
                self.relay.drop(fd)
                self.close_fd(name)
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    # -- cleanup -------------------------------------------------------------------

    def remove_cgroups(self) -> None:
        if not self.state.cgroups:
            return
        groups = cgroups.StepCgroups(cgroups.detect_layout(), name="container")
        groups.paths = list(self.state.cgroups)
        groups.kill()
        deadline = time.monotonic() + _CGROUP_REMOVE_TIMEOUT
        while not groups.remove() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close_fd(self, name: str) -> None:
        fd = self.fds.get(name)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
            self.fds[name] = None

    def close_everything_but(self, keep: list[int]) -> None:
        """In the monitor: drop the supervisor's descriptors (lock, client, log, pipes)."""
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass


def remove_paths(paths: list[str]) -> None:
    """Remove the container (``run --rm``): each path renamed aside first, so it vanishes at once."""
    for path in paths:
        if os.path.islink(path) or os.path.isfile(path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        trash = f"{path}.removing-{os.getpid()}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
