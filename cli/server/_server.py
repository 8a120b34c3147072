"""The fork server: a resident process that has imported what a build needs and forks
one child per ``pybuild build`` a client hands it (see ``_child`` for what the child
takes from the client).

One per root: an exclusive flock on ``<root>/server/lock``; ``<root>/server`` is a
0700 directory of root's; clients connect to its ``sock``.  Single-threaded, one
``poll`` loop (the listening socket, each client's connection, the signal wake-up
pipe): a fork needs a process without threads.  Per request it checks that the
peer is of its own uid and namespaces, runs the same Python and that no loaded
module's file changed (one did: it refuses, stops listening and exits once its
children have ended, so an upgrade never runs stale code).  It relays the signals
a client forwards to its child's process group, interrupts (SIGINT) a child whose
client went away, and sends each client its child's wait status.  It exits after
``idle_timeout`` seconds without a request or child, when its root directory is
removed or replaced, and on SIGTERM/SIGINT once its children ended (a second one
interrupts them, and it leaves when they ended or 10 s later; a third: at once).  It never logs a request's environment or argv.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import _child, _identity, _wire

ROOT_CHECK_INTERVAL = 2.0  # seconds between checks that the root is still there
REQUEST_TIMEOUT = 2.0  # seconds a connected client has to send its request
INTERRUPT_WAIT = 10.0  # seconds interrupted builds have to end (and their clients to hear it) after a second signal
_PEERCRED = struct.Struct("3i")


def log(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pybuild server[{os.getpid()}]: {text}\n")
    sys.stderr.flush()


@dataclass
class _Served:
    """A client whose build runs in ``child``."""

    conn: socket.socket
    child: int
    interrupted: bool = False


@dataclass
class Server:
    root: str
    idle_timeout: float
    run_build: Callable[[list[str], Callable[[int], None]], int]
    directory: str = ""
    listener: socket.socket | None = None
    served: dict[int, _Served] = field(default_factory=dict)  # by the connection's fd
    orphans: dict[int, _Served] = field(default_factory=dict)  # by child pid: its client went away
    stopping: int = 0  # SIGTERM/SIGINT received (a second: leave at once)
    last_activity: float = field(default_factory=time.monotonic)
    code: dict[str, _identity.Signature] = field(default_factory=dict)
    python: bytes = b""
    namespaces: list[str] | None = None
    requests: int = 0
    interrupt_deadline: float | None = None  # after a second signal: leave by then at the latest
    lock: int = -1  # the held flock on server/lock (released when new code takes over)

    # -- start -------------------------------------------------------------------

    def listen(self, directory_fd: int) -> None:
        """Bind ``<root>/server/sock`` (through the directory's descriptor) and listen."""
        path = f"/proc/self/fd/{directory_fd}/{_wire.SOCKET_NAME}"
        try:
            os.unlink(path)  # a dead server's (we hold the lock)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
        listener.setblocking(False)
        self.listener = listener
        self.code = _identity.code_signatures()
        self.python = _identity.python_fingerprint()
        self.namespaces = _identity.namespaces("self")

    # -- the loop ------------------------------------------------------------------

    def serve(self, wakeup: int) -> int:
        """Run until a reason to leave; the exit code."""
        root_id = _identity_of(self.root)
        next_root_check = time.monotonic() + ROOT_CHECK_INTERVAL
        while True:
            busy = bool(self.served or self.orphans)
            if self.stopping:
                self.stop_listening()  # here, not in the handler: the loop may be using the socket
            if self.stopping and not busy:
                log("stopping (signal)")
                return 0
            if self.stopping > 1 and self.interrupt_deadline is None:
                self._interrupt_all()  # a second signal: the builds are cancelled, their clients told
                self.interrupt_deadline = time.monotonic() + INTERRUPT_WAIT
                log("interrupting the builds (second signal)")
            if self.stopping > 2 or (self.interrupt_deadline is not None and time.monotonic() > self.interrupt_deadline):
                log("stopping at once")
                return 0
            if self.listener is None and not busy:
                return 0
            now = time.monotonic()
            if not busy and now - self.last_activity > self.idle_timeout:
                log(f"idle for {self.idle_timeout:g} s: exiting")
                return 0
            if now >= next_root_check:
                next_root_check = now + ROOT_CHECK_INTERVAL
                if _identity_of(self.root) != root_id or _identity_of(self.directory) is None:
                    log("the root directory is gone or replaced: exiting")
                    self._interrupt_all()
                    return 0
            self._poll_once(wakeup, timeout=min(ROOT_CHECK_INTERVAL, max(0.05, self.idle_timeout - (now - self.last_activity))))

    def _poll_once(self, wakeup: int, timeout: float) -> None:
        poller = select.poll()
        poller.register(wakeup, select.POLLIN)
        if self.listener is not None:
            poller.register(self.listener.fileno(), select.POLLIN)
        for fd in self.served:
            poller.register(fd, select.POLLIN)
        try:
            events = poller.poll(timeout * 1000)
        except InterruptedError:
            events = []
        for fd, _ in events:
            if fd == wakeup:
                _drain(wakeup)
            elif self.listener is not None and fd == self.listener.fileno():
                self._accept()
            elif fd in self.served:
                self._from_client(self.served[fd])
        self._reap()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        self.requests += 1  # a refused request is no activity: a server nobody can use leaves when idle
        conn.settimeout(REQUEST_TIMEOUT)
        try:
            self._handle(conn)
        except Exception as error:  # noqa: BLE001 - one client's trouble never ends the server
            log(f"request {self.requests}: {type(error).__name__}: {error}")
            conn.close()

    def _handle(self, conn: socket.socket) -> None:
        changed = _identity.changed_code(self.code)  # first: a new pybuild may speak another protocol
        if changed is not None:
            self._leave_for_new_code(conn, os.path.basename(changed))
            return
        try:
            request, fds = _receive_request(conn)
        except (_wire.Malformed, OSError) as error:
            self._refuse(conn, f"malformed request: {error}")
            return
        try:
            checked = self._check(conn, request, fds)
            if isinstance(checked, str):
                self._refuse(conn, checked)
                return
            if not self._client_goes_on(conn):
                return
            child = self._fork(conn, checked, fds)
        finally:
            _wire.close_all(fds)  # at once: the caller reading the build's stdout must see its end
        self.served[conn.fileno()] = _Served(conn, child)
        self.last_activity = time.monotonic()
        self._send(conn, _wire.CHILD, child)
        conn.setblocking(False)
        log(f"request {self.requests}: child {child}")

    def _leave_for_new_code(self, conn: socket.socket, changed: str) -> None:
        """Refuse (the request read and dropped first, so the client is not cut off while
        sending it), stop listening, let go of the lock: a server of the new code may start
        at once; this one leaves once its children have ended."""
        try:
            _wire.close_all(_receive_request(conn)[1])
        except (_wire.Malformed, OSError):
            pass
        self.stop_listening()
        self.release_lock()  # a server of the new code may start while this one's builds end
        self._refuse(conn, f"exiting: pybuild's code changed ({changed})")

    def _client_goes_on(self, conn: socket.socket) -> bool:
        """Accepted; the client says go (it did not give up waiting and build in-process):
        a build is forked only once both sides know it will be served."""
        self._send(conn, _wire.ACCEPTED)
        try:
            kind, _, _ = _wire.parse_message(conn.recv(_wire.MAX_MESSAGE))
        except (OSError, _wire.Malformed):
            kind = 0
        if kind != _wire.GO:
            log(f"request {self.requests}: the client went on without the server")
            conn.close()
            return False
        return True

    def _check(self, conn: socket.socket, request: _wire.Request, fds: list[int]) -> _child.Request | str:
        """The request to run, or why it is refused."""
        pid, uid, _ = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
        if uid != os.geteuid():
            return f"uid {uid} is not the server's"
        if self.namespaces is None or _identity.namespaces(pid) != self.namespaces:
            return "the client runs in other namespaces"
        if request.fingerprint != self.python:
            return "the client runs another Python or pybuild"
        checked = _parse(request, pid)
        if isinstance(checked, str):
            return checked
        if not stat.S_ISDIR(os.fstat(fds[3]).st_mode):
            return "the working directory descriptor is not a directory"
        return checked

    def _fork(self, conn: socket.socket, request: _child.Request, fds: list[int]) -> int:
        sockets = [conn, *(served.conn for served in self.served.values())]
        if self.listener is not None:
            sockets.append(self.listener)
        child = os.fork()
        if child == 0:
            _child.become_build(request, fds, sockets, self.run_build)
        try:
            os.setpgid(child, child)  # also done by the child: whichever runs first
        except OSError:
            pass
        return child

    def _refuse(self, conn: socket.socket, reason: str) -> None:
        log(f"request {self.requests} refused: {reason}")
        self._send(conn, _wire.REFUSED, int(self.listener is None), reason)
        conn.close()

    def _send(self, conn: socket.socket, kind: int, value: int = 0, reason: str = "") -> None:
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            conn.send(_wire.message(kind, value, reason))
        except OSError:
            pass

    def _from_client(self, served: _Served) -> None:
        try:
            data = served.conn.recv(_wire.MAX_MESSAGE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away: cancel its build, as BuildKit does
            self._forget(served)
            if not served.interrupted:
                served.interrupted = True
                _killpg(served.child, signal.SIGINT)
            return
        try:
            kind, number, _ = _wire.parse_message(data)
        except _wire.Malformed:
            return
        if kind == _wire.SIGNAL and number in _FORWARDABLE:
            _killpg(served.child, number)

    def _forget(self, served: _Served) -> None:
        fd = served.conn.fileno()
        self.served.pop(fd, None)
        self.orphans[served.child] = served
        served.conn.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.last_activity = time.monotonic()
            if self.orphans.pop(pid, None) is not None:
                continue
            for fd, served in list(self.served.items()):
                if served.child == pid:
                    del self.served[fd]
                    self._send(served.conn, _wire.STATUS, status)
                    served.conn.close()

    def _interrupt_all(self) -> None:
        for served in [*self.served.values(), *self.orphans.values()]:
            _killpg(served.child, signal.SIGINT)

    def stop_listening(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            try:
                os.unlink(os.path.join(self.directory, _wire.SOCKET_NAME))
            except OSError:
                pass

    def release_lock(self) -> None:
        if self.lock >= 0:
            os.close(self.lock)
            self.lock = -1

    def stop_signal(self, _number: int, _frame: object) -> None:
        self.stopping += 1


_FORWARDABLE = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH})


def _receive_request(conn: socket.socket) -> tuple[_wire.Request, list[int]]:
    """The request and the descriptors that came with it; Malformed (every descriptor
    received closed) for anything else."""
    data, fds, flags, _ = socket.recv_fds(conn, _wire.MAX_REQUEST, _wire.PASSED_FDS + 1)
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise _wire.Malformed("request too long, or too many descriptors")
        if len(fds) != _wire.PASSED_FDS:
            raise _wire.Malformed(f"{len(fds)} descriptors instead of {_wire.PASSED_FDS}")
        return _wire.Request.decode(data), fds
    except _wire.Malformed:
        _wire.close_all(fds)
        raise


def _parse(request: _wire.Request, pid: int) -> _child.Request | str:
    argv = [os.fsdecode(word) for word in request.argv]
    if len(argv) < 2 or argv[1] != "build":
        return "argv is not a pybuild build command line"
    if not all(b"=" in entry[1:] for entry in request.env):
        return "malformed environment"
    if not 0 <= request.umask <= 0o777:
        return "malformed umask"
    env = dict(entry.split(b"=", 1) for entry in request.env)
    path = [os.fsdecode(entry) for entry in request.path]
    return _child.Request(argv, env, request.umask, path, request.unbuffered, pid)


def _killpg(pgid: int, number: int) -> None:
    try:
        os.killpg(pgid, number)
    except ProcessLookupError:
        try:
            os.kill(pgid, number)  # before its setpgid
        except ProcessLookupError:
            pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _identity_of(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def wakeup_pipe(server: Server) -> int:
    """The signal wake-up pipe's read end; SIGCHLD, SIGTERM, SIGINT wake the loop."""
    read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, server.stop_signal)
    signal.signal(signal.SIGINT, server.stop_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return read
