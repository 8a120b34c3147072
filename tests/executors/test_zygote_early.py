"""The zygote started before the build's first RUN step (``SandboxExecutor.start_early``)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from pybuild.errors import SandboxError
from pybuild.executors import ProcessSpec, SandboxExecutor

from .conftest import PATH, RootfsFactory

pytestmark = pytest.mark.root


async def _echo(executor: SandboxExecutor, make_rootfs: RootfsFactory) -> str:
    out: list[bytes] = []
    with trio.fail_after(60):
        result = await executor.run(make_rootfs(), ProcessSpec(("/bin/sh", "-c", "echo hi"), env=(PATH,), network="none"),
                                    on_output=lambda stream, data: out.append(data))
    assert result.exit_code == 0
    return b"".join(out).decode()


async def test_the_first_step_runs_in_the_zygote_started_early(executor: SandboxExecutor, make_rootfs: RootfsFactory) -> None:
    executor.start_early()
    assert executor._early is not None
    early = executor._early[0]
    assert await _echo(executor, make_rootfs) == "hi\n"
    assert executor._zygote is not None and executor._zygote.process is early  # not a second one
    assert await _echo(executor, make_rootfs) == "hi\n"
    assert executor._zygote.process is early


async def test_start_early_twice_starts_one(executor: SandboxExecutor) -> None:
    executor.start_early()
    first = executor._early
    executor.start_early()
    assert first is not None and executor._early is first


async def test_an_early_zygote_no_step_used_is_killed_and_reaped(executor: SandboxExecutor) -> None:
    executor.start_early()
    assert executor._early is not None
    process = executor._early[0]
    await executor.aclose()
    # killed (it had nothing of its own yet), not waited for until its start was over
    assert process.returncode == -signal.SIGKILL


async def test_an_early_zygote_that_died_is_replaced(executor: SandboxExecutor, make_rootfs: RootfsFactory) -> None:
    executor.start_early()
    assert executor._early is not None
    early = executor._early[0]
    early.kill()
    await early.wait()
    assert await _echo(executor, make_rootfs) == "hi\n"
    assert executor._zygote is not None and executor._zygote.process is not early


async def test_a_zygote_that_cannot_start_early_is_reported_by_the_first_step(tmp_path: Path, make_rootfs: RootfsFactory) -> None:
    executor = SandboxExecutor(state_dir=str(tmp_path), python=str(tmp_path / "no-python"))
    try:
        executor.start_early()  # never raises
        assert executor._early is None
        with pytest.raises(SandboxError, match="cannot start the sandbox helper"):
            await _echo(executor, make_rootfs)
    finally:
        await executor.aclose()
