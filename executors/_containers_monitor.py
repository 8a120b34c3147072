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
  job control reach the container's foreground process group.  The RUN init
  has no such step, so for a tty the monitor forks ``_console_init``
  instead (the RUN init plus that one call).  It is swapped in only for the
  duration of ``supervise``, in a process that runs nothing else.

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

    def supervise(self, prepared: sandbox._Prepared) -> tuple[int, tuple[str, str | None] | None]:
        if not self.tty:
            return super().supervise(prepared)
        run_init = sandbox._init_main
        sandbox._init_main = _console_init
        try:
            return super().supervise(prepared)
        finally:
            sandbox._init_main = run_init


def _console_init(monitor: sandbox._Monitor, prepared: sandbox._Prepared, report_w: int) -> None:
    """The RUN init (``_sandbox._init_main``) with the pty on fd 0 as controlling terminal."""
    status = 125
    try:
        linux.prctl(linux.PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setsid()
        os.dup2(prepared.devnull, 0)
        os.dup2(monitor.out_fd, 1)
        os.dup2(monitor.err_fd, 2)
        ttys.make_controlling_terminal(0)
        linux.unshare(linux.CLONE_NEWNS)
        os.chdir(prepared.rootfs_dir)
        linux.pivot_root(".", ".")
        linux.umount2(".", linux.MNT_DETACH)
        os.chdir("/")
        sandbox._Inside(monitor.process, prepared, report_w).run()
    except sandbox.SetupError as e:
        sandbox._report(report_w, ("error", e.message, e.hint))
    except OSError as e:
        sandbox._report(report_w, ("error", f"cannot set up the container: {e.strerror or e}" + sandbox._where(e), None))
    except BaseException as e:  # noqa: BLE001 - the init must never unwind into the monitor's code
        sandbox._report(report_w, ("error", f"cannot set up the container: {type(e).__name__}: {e}", None))
    os._exit(status)


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
