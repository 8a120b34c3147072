"""The two seams the solver uses: run a process, and call a function on a rootfs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ._spec import ExecResult, Mount, ProcessSpec, Rootfs

T = TypeVar("T")

OutputCallback = Callable[[str, bytes], None]


class Executor(Protocol):
    async def run(
        self,
        rootfs: Rootfs,
        process: ProcessSpec,
        mounts: Sequence[Mount] = (),
        *,
        on_output: OutputCallback | None = None,
    ) -> ExecResult:
        """Run one process to completion in a fresh sandbox.

        ``on_output(stream, chunk)`` gets stdout/stderr data as it arrives
        (``"stdout"``/``"stderr"``).  A trio Cancelled kills the whole sandbox
        and cleans up before propagating.  A non-zero exit is a result, not an
        error; ``SandboxError`` is raised only when the sandbox itself cannot be
        made (and for a USER that does not exist).
        """
        ...


class RootfsCaller(Protocol):
    async def call(self, rootfs: Rootfs, mounts: Sequence[Mount], function: Callable[..., T], *args: object) -> T:
        """Run ``function(root_path, *args)`` with ``rootfs`` and ``mounts`` mounted.

        The rootfs is an overlay writable into ``rootfs.upper``; the mounts are
        attached under ``root_path`` in a private mount namespace, so nothing is
        ever mounted in the host's namespace.  Returns the function's result;
        exceptions from the function are re-raised in the caller with their class.
        """
        ...
