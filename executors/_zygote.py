"""The zygote: a small single-threaded process that forks one monitor per step.

pybuild's own process runs trio and worker threads, so it must never fork
to run Python code.  It starts this script once per executor as
``python -I -S _zygote.py FD`` (no site, no user paths: about 30 ms once, a
fork per step after that; ``pybuild build`` starts it before its trio run
when the Dockerfile has a RUN step, ``SandboxExecutor.start_early``, so that
time passes beside the build's own work) with FD a SOCK_SEQPACKET socket.
Forking it from pybuild instead was measured and dropped: every monitor and
init forked from it would carry pybuild's memory (``_zygote_process``).  Each
step is one message carrying three descriptors: the step's control socket and
the write ends of its stdout and stderr pipes.  The zygote forks a monitor
(``_sandbox.monitor_main``) for it and, when the monitor has been reaped,
sends ``("reaped", wait_status)`` on the control socket: only then is every
mount of the step gone and its cgroups empty.

When pybuild closes the socket (or dies), the zygote kills its monitors,
which takes their sandboxes down with them (PR_SET_PDEATHSIG), and exits.

The modules it imports are stdlib-only siblings, imported as top-level
modules from this directory.
"""

from __future__ import annotations

import array
import os
import select
import signal
import socket
import sys

if __package__:
    from . import _linux as linux
    from . import _overlay as overlay
    from . import _sandbox as sandbox
    from . import _wire as wire
else:  # run as a script with -I (which leaves the script's directory off sys.path)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _linux as linux
    import _overlay as overlay
    import _sandbox as sandbox
    import _wire as wire

_FDS_PER_STEP = 3


def main(argv: list[str]) -> int:
    requests = socket.socket(fileno=int(argv[1]))
    requests.set_inheritable(False)
    wakeup_r, wakeup_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    signal.set_wakeup_fd(wakeup_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Orphans (a slirp4netns whose monitor was killed) are reparented here and reaped.
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    linux.remember_id_maps()  # constant here: each step's monitor and init would read them again
    # A step's upper dir is committed or thrown away, never remounted: volatile, and synced by
    # its monitor at the end unless the user traded that for speed (PYBUILD_VOLATILE_OVERLAYS=1)
    # or the build syncs once at its end (``defer_step_syncs``).
    overlay.volatile_steps(synced=not overlay.volatile_uppers_requested() and not overlay.step_syncs_deferred())
    overlay.ask_once()  # or each monitor would probe the kernel again
    sandbox.batch_scheduling()  # once here: each step's monitor, init and processes inherit it
    monitors: dict[int, int] = {}  # pid -> control socket fd
    poller = select.poll()
    poller.register(requests.fileno(), select.POLLIN)
    poller.register(wakeup_r, select.POLLIN)
    try:
        while True:
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == wakeup_r:
                    _drain(wakeup_r)
                    _reap(monitors)
                elif not _accept(requests, monitors, (wakeup_r, wakeup_w)):
                    return 0
    finally:
        for pid in monitors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _accept(requests: socket.socket, monitors: dict[int, int], private: tuple[int, int]) -> bool:
    """Take one step request; False when pybuild has gone away."""
    fds = array.array("i")
    try:
        data, ancdata, _flags, _addr = requests.recvmsg(16, socket.CMSG_SPACE(_FDS_PER_STEP * fds.itemsize), socket.MSG_CMSG_CLOEXEC)
    except InterruptedError:
        return True
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if not data:
        for fd in fds:
            os.close(fd)
        return False
    if len(fds) != _FDS_PER_STEP:
        for fd in fds:
            os.close(fd)
        return True
    ctl, out_fd, err_fd = fds
    try:
        pid = os.fork()
    except OSError as e:
        wire.write_message(ctl, ("error", f"cannot start the sandbox: {e.strerror}", None))
        for fd in fds:
            os.close(fd)
        return True
    if pid == 0:
        status = 1
        try:
            requests.close()
            for fd in private:
                os.close(fd)
            status = sandbox.monitor_main(ctl, out_fd, err_fd)
        finally:
            os._exit(status)
    os.close(out_fd)
    os.close(err_fd)
    monitors[pid] = ctl
    return True


def _reap(monitors: dict[int, int]) -> None:
    for pid, status in linux.exited_children():
        ctl = monitors.pop(pid, None)
        if ctl is not None:
            try:
                wire.write_message(ctl, ("reaped", status))
            except OSError:
                pass
            os.close(ctl)


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


if __name__ == "__main__":
    code = main(sys.argv)
    # pybuild waits for this exit at the end of every build with a RUN step: the interpreter's
    # teardown (~5-10 ms) would only free memory the kernel frees anyway.  Nothing is buffered
    # but what went to the log.
    sys.stderr.flush()
    os._exit(code)
