"""Fakes of the executor seams, for tests that need no root and no namespaces.

``FakeExecutor(handler)`` records every call and answers from ``handler``::

    executor = FakeExecutor(lambda spec: 1 if "false" in spec.args else 0)
    executor = FakeExecutor(lambda spec: FakeRun(0, stdout=b"hello\\n"))

The handler gets the ``ProcessSpec`` and returns an exit code, an
``ExecResult``, or a ``FakeRun`` (exit code, output, simulated duration); it
may also be ``async``, or raise ``SandboxError`` to act out a sandbox
failure.  Timeouts and cancellation behave as in the real executor: a
``FakeRun`` that outlasts ``ProcessSpec.timeout`` ends as killed (exit 137,
signal 9, ``timed_out``), and a trio cancellation propagates.

``FakeRootfsCaller`` runs the function on a plain directory: the rootfs's
upper dir.  Its limits: lower layers are not visible through it, mounts are
recorded but not mounted, and nothing is isolated; files the function writes
land in the upper dir as they are (deleting a lower file cannot be
expressed).  It is enough to test what the solver asks of a file operation,
not the file operation itself.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar, Union

import trio

from . import _linux as linux
from ._caller import _in_own_thread
from ._spec import ExecResult, Mount, ProcessSpec, Rootfs

T = TypeVar("T")


@dataclass(frozen=True)
class FakeRun:
    """A scripted outcome: exit code, output, and how long the "process" runs."""

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    duration: float = 0.0


HandlerResult = Union[int, ExecResult, FakeRun]
Handler = Callable[[ProcessSpec], Union[HandlerResult, Awaitable[HandlerResult]]]


@dataclass(frozen=True)
class FakeCall:
    """What one ``run`` was asked to do."""

    rootfs: Rootfs
    process: ProcessSpec
    mounts: tuple[Mount, ...]


_KILLED = 9


class FakeExecutor:
    """An ``Executor`` that runs nothing; see the module docstring."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler: Handler = handler or (lambda spec: 0)
        self.calls: list[FakeCall] = []
        self.cancelled = 0

    @property
    def specs(self) -> list[ProcessSpec]:
        """The ProcessSpecs received, in order."""
        return [call.process for call in self.calls]

    async def run(
        self,
        rootfs: Rootfs,
        process: ProcessSpec,
        mounts: Sequence[Mount] = (),
        *,
        on_output: Callable[[str, bytes], None] | None = None,
    ) -> ExecResult:
        self.calls.append(FakeCall(rootfs, process, tuple(mounts)))
        try:
            await trio.lowlevel.checkpoint()
            answer = self.handler(process)
            if inspect.isawaitable(answer):
                answer = await answer
            return await self._play(answer, process, on_output)
        except trio.Cancelled:
            self.cancelled += 1
            raise

    async def _play(
        self, answer: HandlerResult, process: ProcessSpec, on_output: Callable[[str, bytes], None] | None
    ) -> ExecResult:
        if isinstance(answer, ExecResult):
            return answer
        if isinstance(answer, bool) or not isinstance(answer, (int, FakeRun)):
            raise TypeError(f"FakeExecutor handler returned {answer!r}; expected int, ExecResult or FakeRun")
        run = FakeRun(exit_code=answer) if isinstance(answer, int) else answer
        if on_output is not None:
            if run.stdout:
                on_output("stdout", run.stdout)
            if run.stderr:
                on_output("stderr", run.stderr)
        timeout = math.inf if process.timeout is None else process.timeout
        if run.duration > timeout:
            await trio.sleep(timeout)
            return ExecResult(exit_code=128 + _KILLED, duration=timeout, signal=_KILLED, timed_out=True)
        if run.duration:
            await trio.sleep(run.duration)
        return ExecResult(exit_code=run.exit_code, duration=run.duration)


@dataclass
class FakeRootfsCaller:
    """A ``RootfsCaller`` that calls the function on ``rootfs.upper``; see the module docstring."""

    calls: list[tuple[Rootfs, tuple[Mount, ...]]] = field(default_factory=list)

    async def call(self, rootfs: Rootfs, mounts: Sequence[Mount], function: Callable[..., T], *args: object) -> T:
        self.calls.append((rootfs, tuple(mounts)))
        await trio.lowlevel.checkpoint()

        def in_own_fs_context() -> T:
            # the function may chroot (apply_file_plan does): only this thread may see it, never
            # the threads other steps' snapshot work runs in at the same time
            linux.unshare(linux.CLONE_FS)
            return function(rootfs.upper, *args)

        return await _in_own_thread(in_own_fs_context)
