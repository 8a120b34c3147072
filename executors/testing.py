"""Conformance checks for the executor seams, run against the fakes and the real ones.

``await check_executor(make_executor, make_rootfs)`` runs behaviour checks
(exit codes, output streaming, environment, working directory, timeout,
cancellation, unknown users) through any ``Executor``.  The commands are
busybox applets, so a real executor needs a rootfs with busybox
(``make_rootfs()`` returns a fresh ``Rootfs`` for each run).  For the fake,
``conformance_handler`` acts out exactly those commands::

    await check_executor(lambda: FakeExecutor(conformance_handler), make_rootfs)

``make_executor()`` returns an executor, or an async context manager that
yields one (like ``SandboxExecutor``).

``await check_rootfs_caller(caller, make_rootfs)`` checks the ``RootfsCaller``
contract: the function sees the root, its writes reach the upper dir, its
result comes back and its exceptions keep their class.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio

from pybuild.errors import ContextError, SandboxError

from ._protocol import Executor, RootfsCaller
from ._spec import ExecResult, ProcessSpec, Rootfs
from .fake import FakeRun

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ConformanceFailure(AssertionError):
    pass


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ConformanceFailure(message)


# An executor, or an async context manager that opens one (and closes it at the end).
ExecutorFactory = Callable[[], "Executor | AbstractAsyncContextManager[Executor]"]


@asynccontextmanager
async def _opened(make_executor: ExecutorFactory) -> AsyncIterator[Executor]:
    made = make_executor()
    if isinstance(made, AbstractAsyncContextManager):
        async with made as executor:
            yield executor
    else:
        yield made


async def _run(executor: Executor, rootfs: Rootfs, args: tuple[str, ...], **fields: Any) -> tuple[ExecResult, dict[str, bytes]]:
    output = {"stdout": b"", "stderr": b""}

    def collect(stream: str, chunk: bytes) -> None:
        _expect(stream in output, f"on_output got stream name {stream!r}")
        _expect(isinstance(chunk, bytes), "on_output must get bytes")
        output[stream] += chunk

    fields.setdefault("env", (PATH,))
    fields.setdefault("network", "none")
    result = await executor.run(rootfs, ProcessSpec(args, **fields), on_output=collect)
    _expect(isinstance(result, ExecResult), f"run returned {result!r}")
    return result, output


async def check_executor(make_executor: ExecutorFactory, make_rootfs: Callable[[], Rootfs]) -> None:
    """Raise ``ConformanceFailure`` (an AssertionError) at the first behaviour that is wrong."""
    async with _opened(make_executor) as executor:
        # Exit codes are results, not errors.
        for args, code in ((("true",), 0), (("false",), 1), (("sh", "-c", "exit 7"), 7)):
            result, _ = await _run(executor, make_rootfs(), args)
            _expect(result.exit_code == code, f"{args} exited {result.exit_code}, expected {code}")
            _expect(result.signal is None and not result.timed_out, f"{args}: {result}")
            _expect(result.duration >= 0, "duration must not be negative")

        # Output is streamed per stream.
        result, output = await _run(executor, make_rootfs(), ("echo", "hello", "world"))
        _expect(output["stdout"] == b"hello world\n" and output["stderr"] == b"", f"echo gave {output}")
        result, output = await _run(executor, make_rootfs(), ("sh", "-c", "echo oops >&2; exit 3"))
        _expect(output == {"stdout": b"", "stderr": b"oops\n"} and result.exit_code == 3, f"stderr: {output} {result}")

        # Environment, secret environment and working directory.
        result, output = await _run(
            executor, make_rootfs(), ("env",), env=(PATH, "FOO=bar baz"), secret_env=("TOKEN=s3cr3t",)
        )
        lines = output["stdout"].decode().splitlines()
        _expect("FOO=bar baz" in lines and "TOKEN=s3cr3t" in lines, f"env printed {lines}")
        _expect("s3cr3t" not in repr(ProcessSpec(("env",), secret_env=("TOKEN=s3cr3t",))), "secret env shows in repr")
        for cwd in ("/tmp", "/made/for/this/step"):
            result, output = await _run(executor, make_rootfs(), ("pwd",), cwd=cwd)
            _expect(output["stdout"] == f"{cwd}\n".encode() and result.exit_code == 0, f"pwd in {cwd}: {output}")

        # A timeout kills the process and says so.
        result, _ = await _run(executor, make_rootfs(), ("sleep", "1000"), timeout=0.5)
        _expect(result.timed_out and result.signal == 9 and result.exit_code == 137, f"timeout: {result}")

        # Cancellation propagates promptly, and the executor keeps working afterwards.
        with trio.move_on_after(0.5) as scope:
            await _run(executor, make_rootfs(), ("sleep", "1000"))
        _expect(scope.cancelled_caught, "a cancelled run must not return normally")
        result, _ = await _run(executor, make_rootfs(), ("true",))
        _expect(result.exit_code == 0, "the executor must work after a cancelled run")

        # A USER that does not exist is a sandbox error, not an exit code.
        try:
            await _run(executor, make_rootfs(), ("true",), user="no-such-user")
        except SandboxError as e:
            _expect("no-such-user" in str(e), f"unknown user error says {e}")
        else:
            raise ConformanceFailure("an unknown USER must raise SandboxError")


def conformance_handler(spec: ProcessSpec) -> FakeRun:
    """Act out the busybox commands ``check_executor`` uses, for ``FakeExecutor``."""
    user = spec.user.partition(":")[0]
    if user and not user.isdigit() and user != "root":
        raise SandboxError(f"unable to find user {user}: no matching entries in passwd file")
    args = list(spec.args)
    if args[:2] == ["sh", "-c"]:
        args = shlex.split(args[2].replace(";", " ; "))
    stdout, stderr, code, duration = b"", b"", 0, 0.0
    command: list[str] = []
    for word in args + [";"]:
        if word != ";":
            command.append(word)
            continue
        name, rest = (command[0], command[1:]) if command else ("", [])
        if name == "true" or not name:
            code = 0
        elif name == "false":
            code = 1
        elif name == "exit":
            return FakeRun(int(rest[0]) if rest else code, stdout, stderr, duration)
        elif name == "echo":
            text = (" ".join(w for w in rest if w != ">&2") + "\n").encode()
            if ">&2" in rest:
                stderr += text
            else:
                stdout += text
        elif name == "env":
            stdout += "".join(f"{e}\n" for e in (*spec.env, *spec.secret_env)).encode()
        elif name == "pwd":
            stdout += f"{spec.cwd}\n".encode()
        elif name == "sleep":
            duration += float(rest[0])
        else:
            return FakeRun(127, stdout, stderr + f"{name}: not found\n".encode(), duration)
        command = []
    return FakeRun(code, stdout, stderr, duration)


async def check_rootfs_caller(caller: RootfsCaller, make_rootfs: Callable[[], Rootfs]) -> None:
    """Raise ``ConformanceFailure`` at the first broken promise of a ``RootfsCaller``."""
    rootfs = make_rootfs()
    result = await caller.call(rootfs, (), _write_marker, "conformance.txt", b"made by a file op\n")
    _expect(result == ("conformance.txt", 18), f"the function's result came back as {result!r}")
    with open(os.path.join(rootfs.upper, "conformance.txt"), "rb") as f:
        _expect(f.read() == b"made by a file op\n", "the function's write did not reach the upper dir")
    try:
        await caller.call(make_rootfs(), (), _fail_with_pybuild_error)
    except ContextError as e:
        _expect(e.hint == "a hint survives", f"the error lost its hint: {e.hint!r}")
    else:
        raise ConformanceFailure("an exception raised by the function must reach the caller")


def _write_marker(root: str, name: str, data: bytes) -> tuple[str, int]:
    with open(os.path.join(root, name), "wb") as f:
        return name, f.write(data)


def _fail_with_pybuild_error(root: str) -> None:
    raise ContextError("cannot copy: no such file", hint="a hint survives")
