"""A container's monitor: the RUN sandbox's monitor with a console and a stdin.

The container runs in exactly the sandbox a RUN step gets (``_sandbox``:
same namespaces, overlay rootfs, /proc, /dev, capabilities, user
resolution, cgroups, slirp4netns).  Two things differ, and this module adds
them around the shared code instead of copying it:

- stdin: a RUN step reads /dev/null; ``run -i`` gives the container the
  client's stdin and ``-t`` a pseudo-terminal.  ``prepare`` swaps the
  prepared /dev/null for that descriptor, which the init then makes its
  fd 0.
- the controlling terminal: with ``-t`` the init must make the pty its
  controlling terminal (``TIOCSCTTY`` right after ``setsid``), so Ctrl-C and
  job control reach the container's foreground process group.  The RUN
  init calls its monitor's ``init_console`` once fds 0-2 are in place; a
  RUN step's does nothing, this one takes the terminal.

Until ``_sandbox`` takes a stdin descriptor and a tty flag in its request
(requested in the issue-9 report), this subclass is the seam.

Stdlib only (run by the supervisor, see ``_containers_shim``).
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False  # not typing's: the zygote and the shim do not import typing
if TYPE_CHECKING:
    from typing import Any

if __package__:
    from . import _containers_tty as ttys
    from . import _linux as linux
    from . import _sandbox as sandbox
else:  # loaded by the supervisor as top-level modules
    import _containers_tty as ttys
    import _linux as linux
    import _sandbox as sandbox


class ContainerMonitor(sandbox._Monitor):
    """``_sandbox._Monitor`` whose init reads ``stdin_fd`` (None: /dev/null) and, with ``tty``, owns it as its terminal."""

    setting_up = "container"

    def __init__(self, ctl: int, out_fd: int, err_fd: int, request: dict[str, Any], stdin_fd: int | None, tty: bool) -> None:
        super().__init__(ctl, out_fd, err_fd, request)
        self.stdin_fd = stdin_fd
        self.tty = tty

    def prepare(self) -> sandbox._Prepared:
        prepared = super().prepare()
        if self.stdin_fd is not None:
            # The init dup2()s this onto fd 0; prepared.close() closes our copy after the fork.
            os.close(prepared.devnull)
            prepared.devnull = self.stdin_fd
            self.stdin_fd = None
        return prepared

    def init_console(self) -> None:
        if self.tty:
            ttys.make_controlling_terminal(0)  # TIOCSCTTY: the pty on fd 0 becomes the init's terminal


def monitor_main(ctl: int, out_fd: int, err_fd: int, request: dict[str, Any], stdin_fd: int | None, tty: bool) -> int:
    """Entry point of the monitor process, forked by the supervisor (returns its exit status)."""
    linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
    sandbox.reset_signals()
    return ContainerMonitor(ctl, out_fd, err_fd, request, stdin_fd, tty).run()


def find_init(monitor_pid: int) -> int | None:
    """The host pid of the container's pid 1: the monitor's child in a pid namespace of its own.

    The monitor's other child, slirp4netns, stays in the host's pid namespace.
    """
    try:
        with open(f"/proc/{monitor_pid}/task/{monitor_pid}/children") as f:
            children = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return None
    for pid in children:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("NSpid:") and len(line.split()) > 2:
                        return pid
        except OSError:
            continue
    return None


def has_exec_d(init_pid: int, monitor_pid: int) -> bool | None:
    """Has the init replaced itself with the container's command?  None if it is gone.

    Until the exec it runs the monitor's own interpreter; after it, an
    executable of the container's root, which lives on another file system
    (the overlay), so the identities differ.
    """
    try:
        own = os.stat(f"/proc/{init_pid}/exe")
    except OSError:
        return None
    try:
        monitor = os.stat(f"/proc/{monitor_pid}/exe")
    except OSError:
        return None
    return (own.st_dev, own.st_ino) != (monitor.st_dev, monitor.st_ino)
