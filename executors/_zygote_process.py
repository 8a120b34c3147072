"""Starting the zygote (``python -I -S _zygote.py FD``) without trio, and its handle.

The zygote costs an interpreter start and its imports, about 40 ms, and the
first RUN step of a build waits for them.  Started with ``subprocess`` rather
than trio's ``open_process``, it can be started before the build's trio run,
as soon as the Dockerfile is known to have a RUN step, so that time passes
beside the build's own work (``SandboxExecutor.start_early``).

(Forking the zygote from pybuild's own process, which has imported
everything already, would cost no start at all, but each step's monitor and
init, forked from it, would then carry pybuild's whole memory as theirs:
the resident-set sum of a build's process tree, which the benchmarks hold
to a target, grew by about 90 MB with four steps running.)
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import trio


def spawn_zygote(argv: list[str], log_path: str, environ: dict[str, str]) -> tuple[ZygoteProcess, socket.socket]:
    """Start the zygote: ``argv`` and the number of its end of a new request socket; return its
    handle and pybuild's end.  Its stderr goes to ``log_path``, its directory is ``/``."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [*argv, str(theirs.fileno())], pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, env=environ, cwd="/",
            )
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return ZygoteProcess(popen), ours


class ZygoteProcess:
    """The zygote as ``_Zygote`` uses it: pid, returncode, an awaitable wait, kill."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    async def wait(self) -> int:
        while (code := self.popen.poll()) is None:
            # not reaped yet, so the pid is still the zygote's: its pidfd turns readable when it exits
            pidfd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
