"""``pybuild build``'s client of the fork server: hand the build to a resident process.

Runs after the fast path missed, before argparse, the errors or anything heavy is
imported (light stdlib only).  It finds the server of the build's root through
``<root>/server``, which must be a real directory of ours with mode 0700 (opened
O_PATH|O_NOFOLLOW and checked on the descriptor, then connected through
``/proc/self/fd/N/sock``, so a long root path works and nothing is followed), and
sends argv, the environment, the umask and its Python fingerprint with stdin,
stdout, stderr and its working directory as descriptors.  Any failure or refusal:
None, and the build runs in this process as it always did.  While the server's
child builds, the signals a user sends pybuild are forwarded to it.
"""

from __future__ import annotations

import _socket
import os
import signal
import stat
import sys
from array import array

from . import _identity, _wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

SWITCH_ENV = "PYBUILD_SERVER"  # 0 or off: never use or start a server
DEBUG_ENV = "PYBUILD_SERVER_DEBUG"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH)
CONNECT_TIMEOUT = 5.0  # seconds for the server to accept or refuse (it answers at once, when not overloaded)


class Outcome:
    """What asking the server gave: a served build's exit code, or why not (and whether a
    new server should be started after the in-process build)."""

    def __init__(self, code: int | None, start_server: bool, root: str) -> None:
        self.code = code
        self.start_server = start_server
        self.root = root


def wanted() -> bool:
    """Whether this build may use (and start) a server: not turned off, root, not rootless."""
    if os.environ.get(SWITCH_ENV, "").lower() in ("0", "off", "no", "false"):
        return False
    return os.geteuid() == 0 and not os.environ.get("PYBUILD_ROOTLESS")


def debug(text: str) -> None:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        sys.stderr.write(f"pybuild server: {text}\n")
        sys.stderr.flush()


def serve(argv: Sequence[str], root: str) -> Outcome:
    """Ask ``root``'s server to run ``pybuild ARGV`` (``build ...``): its exit code, or None (build here)."""
    try:
        sock = _connect(root)
    except OSError as error:
        debug(f"no server: {error.strerror or error}")
        return Outcome(None, True, root)
    except _Refused as error:
        debug(f"not used: {error}")
        return Outcome(None, False, root)
    try:
        try:
            kind, value, reason = _request(sock, argv)
        except (OSError, _wire.Malformed) as error:
            debug(f"request failed: {error}")
            return Outcome(None, False, root)
        except KeyboardInterrupt:  # before the server took the build: nothing runs anywhere
            sys.stderr.write("error: interrupted\n")
            return Outcome(130, False, root)
        if kind != _wire.ACCEPTED:
            debug(f"refused: {reason or '?'}")
            return Outcome(None, kind == _wire.REFUSED and value == 1, root)
        return Outcome(_run(sock), False, root)
    finally:
        sock.close()


class _Refused(Exception):
    """The server directory is not one this client may trust."""


def _connect(root: str) -> _socket.socket:
    directory = os.open(os.path.join(root, _wire.DIRECTORY_NAME), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(directory)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) != 0o700:
            raise _Refused(f"{root}/{_wire.DIRECTORY_NAME} is not a directory of uid {os.geteuid()} with mode 0700")
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(f"/proc/self/fd/{directory}/{_wire.SOCKET_NAME}")
        except BaseException:
            sock.close()
            raise
        return sock
    finally:
        os.close(directory)


def _request(sock: _socket.socket, argv: Sequence[str]) -> tuple[int, int, str]:
    umask = os.umask(0o022)
    os.umask(umask)
    words = [sys.argv[0] if sys.argv else "pybuild", *argv]
    request = _wire.Request(
        umask,
        bool(getattr(sys.stdout, "write_through", False)),
        [os.fsencode(word) for word in words],
        [name + b"=" + value for name, value in os.environb.items()],
        [os.fsencode(entry) for entry in sys.path],
        _identity.python_fingerprint(),
    )
    data = request.encode()
    cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _make_room(sock, len(data))
        sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, array("i", [0, 1, 2, cwd]))])
    finally:
        os.close(cwd)
    return _receive(sock)


def _make_room(sock: _socket.socket, size: int) -> None:
    """A send buffer that holds the whole request (one datagram): root may go past
    net.core.wmem_max (SO_SNDBUFFORCE); a request that still does not fit is sent in vain
    (EMSGSIZE) and the build runs here."""
    wanted = min(size * 2 + 4096, 2 * _wire.MAX_REQUEST)
    for option in (getattr(_socket, "SO_SNDBUFFORCE", 32), _socket.SO_SNDBUF):
        try:
            sock.setsockopt(_socket.SOL_SOCKET, option, wanted)
            return
        except OSError:
            continue


def _receive(sock: _socket.socket) -> tuple[int, int, str]:
    """The next message; (0, 0, "closed") when the server closed its end."""
    data = sock.recv(_wire.MAX_MESSAGE)
    if not data:
        return 0, 0, "closed"
    return _wire.parse_message(data)


def _run(sock: _socket.socket) -> int:
    """Say go, forward signals until the server sends the child's wait status; the exit code.
    A signal before the child exists is sent once it does (the server expects go first)."""
    sock.settimeout(None)  # past go the build is the server's: no timeout may run it here too
    pending: list[int] = []
    started = False

    def forward(number: int, _frame: object) -> None:
        if not started:
            pending.append(number)
            return
        try:
            sock.send(_wire.message(_wire.SIGNAL, number))
        except OSError:
            pass

    for number in FORWARDED:
        signal.signal(number, forward)
    try:
        sock.send(_wire.message(_wire.GO))
        kind, child, _ = _receive(sock)
        if kind != _wire.CHILD:
            return _lost()
        debug(f"served by child {child}")
        started = True
        for waiting in pending:
            forward(waiting, None)
        while True:
            kind, status, _ = _receive(sock)
            if kind == _wire.STATUS:
                return _exit_code(status)
            if kind == 0:
                return _lost()
    except (OSError, _wire.Malformed) as error:
        debug(f"lost the server: {error}")
        return _lost()
    finally:
        for number in FORWARDED:
            signal.signal(number, signal.SIG_DFL if number != signal.SIGINT else signal.default_int_handler)


def _lost() -> int:
    sys.stderr.write("error: the pybuild server went away during the build\n")
    return 1


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        sys.stderr.write(f"error: the build was killed by {name} (signal {number})\n")
        return 128 + number
    return os.waitstatus_to_exitcode(status)


def start_server(root: str) -> None:
    """Start ``root``'s server in the background, not waited for, holding none of the caller's
    descriptors; its own errors go to ``<root>/server/log``.  The environment it gets is
    only what decides the interpreter's set-up (never a build's variables: secrets)."""
    import subprocess

    keep = ("PATH", "LANG", "LC_ALL", "LC_CTYPE")
    env = {k: v for k, v in os.environ.items() if k in keep or (k.startswith("PYTHON") and k != "PYTHONIOENCODING")}
    try:
        subprocess.Popen(
            [sys.executable, "-m", "pybuild", "server", "--root", root, "--background"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True, cwd="/", env=env,
        )
        debug("started a server")
    except OSError as error:
        debug(f"could not start a server: {error}")
