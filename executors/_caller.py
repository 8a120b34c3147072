"""NamespaceRootfsCaller: run a Python function on a mounted rootfs (COPY, ADD, WORKDIR).

File operations need the step's rootfs as one tree (an overlay writable into
the new layer) but no sandbox: no pid or network namespace, no user switch.
Each call gets a fresh OS thread that unshares *its own* mount namespace
(a thread may: CLONE_NEWNS only splits the thread's filesystem context),
mounts the overlay and the mounts on a tmpfs only that thread can see, and
runs the function there.  The thread ends with the call, and its mount
namespace with it, so nothing is ever mounted in the host's namespace and no
other thread ever runs in the private one.  Mount-point stubs are removed
from the upper dir afterwards, as for RUN.

The function runs synchronously in that thread: it sees ``root_path`` (and
so do processes it starts), other threads do not.  It must not hand
``root_path`` to other threads (``trio.to_thread`` included).  Calls are
pybuild's own CPU work (copies, hashes): they share ``_cpu.cpu_limiter``,
so steps without a ``--jobs`` limit still run a CPU count of them at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

from pybuild.errors import SandboxError

from . import _linux as linux
from . import _paths as paths
from . import _wire as wire
from ._cpu import cpu_limiter
from ._executor import _request_mounts
from ._overlay import normalise_upper, probe_overlay, use_volatile_uppers, volatile_uppers_requested
from ._sandbox import SetupError, mount_depth, mount_state_tmpfs, overlay_fd, open_detached_mount, remove_stubs
from ._spec import Mount, Rootfs
from ._userns import ROOTLESS_HINT

T = TypeVar("T")


class NamespaceRootfsCaller:
    """The real ``RootfsCaller`` (needs root: mount namespaces and overlayfs)."""

    def __init__(self, *, state_dir: str | None = None) -> None:
        self._state_parent = state_dir
        self._state: str | None = None
        self._lock = threading.Lock()

    def _state_dir(self) -> str:
        with self._lock:
            if self._state is None:
                state = tempfile.mkdtemp(prefix="pybuild-caller-", dir=self._state_parent)
                os.mkdir(os.path.join(state, "mnt"), 0o700)
                os.mkdir(os.path.join(state, "flat"), 0o700)
                probe_overlay(state)  # rootless: fuse-overlayfs when the kernel refuses (the executor tells why)
                self._state = state
            return self._state

    def close(self) -> None:
        """Remove the caller's private directory (flattened chains included)."""
        with self._lock:
            if self._state is not None:
                shutil.rmtree(self._state, ignore_errors=True)
                self._state = None

    async def call(self, rootfs: Rootfs, mounts: Sequence[Mount], function: Callable[..., T], *args: object) -> T:
        if os.geteuid() != 0:
            raise SandboxError(
                "file operations on a layer need root or a user namespace of its own (mount namespaces, overlayfs)",
                hint=ROOTLESS_HINT,
            )
        for mount in mounts:
            if not mount.target.startswith("/"):
                raise SandboxError(f"mount target {mount.target!r} is not absolute")
        if not rootfs.readonly and not (os.path.isdir(rootfs.upper) and os.path.isdir(rootfs.work)):
            raise SandboxError("the step's upper and work directories must exist", hint="this is a pybuild bug")
        state = self._state_dir()
        if volatile_uppers_requested():
            use_volatile_uppers()  # the step's upper dir is committed or thrown away, never remounted
        specs = _request_mounts(mounts)
        async with cpu_limiter():
            return await _in_own_thread(lambda: _call_mounted(rootfs, specs, state, function, args))


async def _in_own_thread(work: Callable[[], T]) -> T:
    """Run ``work`` in a new OS thread that ends with it; wait even if cancelled.

    The wait is shielded: the function cannot be interrupted, and returning
    before it ends would let the caller reuse a layer it is still writing.
    """
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = work()
        except BaseException as e:  # noqa: BLE001 - carried to the trio side
            box["error"] = e
        finally:
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

    threading.Thread(target=target, name="pybuild-rootfs-call", daemon=True).start()
    with trio.CancelScope(shield=True):
        await done.wait()
    await trio.lowlevel.checkpoint_if_cancelled()
    if "error" in box:
        error = box["error"]
        assert isinstance(error, BaseException)
        raise error
    return box["value"]  # type: ignore[return-value]  # the thread stored the function's T there


def _call_mounted(rootfs: Rootfs, specs: list[tuple[wire.Message, ...]], state: str, function: Callable[..., T], args: tuple[object, ...]) -> T:
    mount_point = os.path.join(state, "mnt")
    stubs: list[tuple[str, str]] = []
    parents: dict[str, paths.DirMeta] = {}
    mounted = False
    try:
        try:
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
            mount_state_tmpfs(mount_point)
            mounted = True
            root = os.path.join(mount_point, "rootfs")
            scratch = os.path.join(mount_point, "scratch")
            os.mkdir(root, 0o755)
            os.mkdir(scratch, 0o700)
            lowers = tuple(rootfs.lowers)
            if not lowers:
                lowers = (os.path.join(mount_point, "empty"),)
                os.mkdir(lowers[0], 0o755)
            writable = not rootfs.readonly
            fd = overlay_fd(lowers, rootfs.upper if writable else None, rootfs.work if writable else None, scratch, os.path.join(state, "flat"))
            try:
                linux.move_mount_to(fd, root)
            finally:
                os.close(fd)
            for index, spec in enumerate(sorted(specs, key=lambda s: mount_depth(s[1]))):
                target, fd, is_file = open_detached_mount(spec, index, mount_point, scratch, os.path.join(state, "flat"))
                try:
                    inside = paths.ensure_mount_point(root, target, directory=not is_file, stubs=stubs, parents=parents)
                    paths.attach_in_root(fd, root, inside)
                finally:
                    os.close(fd)
        except SetupError as e:
            raise SandboxError(e.message, hint=e.hint) from None
        except paths.PathError as e:
            raise SandboxError(str(e)) from None
        except OSError as e:
            raise SandboxError(f"cannot mount the root filesystem: {e.strerror}" + (f" ({e.filename})" if e.filename else "")) from None
        return function(root, *args)
    finally:
        if mounted:
            linux.umount2(mount_point, linux.MNT_DETACH)
        if not rootfs.readonly:
            normalise_upper(rootfs.upper)
        if stubs and not rootfs.readonly:
            remove_stubs(rootfs.upper, stubs, parents)

