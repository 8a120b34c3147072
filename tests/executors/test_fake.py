"""The fakes: scripted answers, recording, and the same conformance checks as the real ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from pybuild.errors import SandboxError
from pybuild.executors import (
    ExecResult,
    FakeExecutor,
    FakeRootfsCaller,
    FakeRun,
    ProcessSpec,
    Rootfs,
    TmpfsMount,
    check_executor,
    check_rootfs_caller,
)
from pybuild.executors.testing import ConformanceFailure, conformance_handler


def rootfs_in(tmp_path: Path):
    counter = iter(range(10**6))

    def make() -> Rootfs:
        step = tmp_path / f"s{next(counter)}"
        (step / "upper").mkdir(parents=True)
        (step / "work").mkdir()
        return Rootfs((), str(step / "upper"), str(step / "work"))

    return make


async def test_fake_passes_the_executor_conformance_checks(tmp_path: Path) -> None:
    await check_executor(lambda: FakeExecutor(conformance_handler), rootfs_in(tmp_path))


async def test_conformance_checks_catch_a_wrong_executor(tmp_path: Path) -> None:
    # An executor that ignores exit codes must fail the checks: the checks can fail.
    with pytest.raises(ConformanceFailure):
        await check_executor(lambda: FakeExecutor(lambda spec: 0), rootfs_in(tmp_path))


async def test_fake_records_specs_and_plays_scripted_output(tmp_path: Path) -> None:
    seen: list[tuple[str, bytes]] = []
    executor = FakeExecutor(lambda spec: FakeRun(2, stdout=b"out", stderr=b"err") if spec.args[0] == "build" else 0)
    rootfs = rootfs_in(tmp_path)()
    result = await executor.run(rootfs, ProcessSpec(("build",)), [TmpfsMount("/t")], on_output=lambda s, c: seen.append((s, c)))
    await executor.run(rootfs, ProcessSpec(("other",), env=("A=1",)))
    assert result.exit_code == 2 and seen == [("stdout", b"out"), ("stderr", b"err")]
    assert [s.args for s in executor.specs] == [("build",), ("other",)]
    assert executor.calls[0].mounts == (TmpfsMount("/t"),)


async def test_fake_accepts_async_handlers_and_exec_results(tmp_path: Path) -> None:
    async def handler(spec: ProcessSpec) -> ExecResult:
        await trio.sleep(0)
        return ExecResult(exit_code=5, duration=1.5)

    result = await FakeExecutor(handler).run(rootfs_in(tmp_path)(), ProcessSpec(("x",)))
    assert result == ExecResult(exit_code=5, duration=1.5)


async def test_fake_counts_cancellations(tmp_path: Path) -> None:
    executor = FakeExecutor(lambda spec: FakeRun(duration=100))
    with trio.move_on_after(1):
        await executor.run(rootfs_in(tmp_path)(), ProcessSpec(("sleep",)))
    assert executor.cancelled == 1


async def test_fake_handler_errors_propagate(tmp_path: Path) -> None:
    def handler(spec: ProcessSpec) -> int:
        raise SandboxError("cannot mount")

    with pytest.raises(SandboxError):
        await FakeExecutor(handler).run(rootfs_in(tmp_path)(), ProcessSpec(("x",)))


async def test_fake_rootfs_caller_conformance(tmp_path: Path) -> None:
    caller = FakeRootfsCaller()
    await check_rootfs_caller(caller, rootfs_in(tmp_path))
    assert len(caller.calls) == 2
