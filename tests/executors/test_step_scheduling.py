"""A build step runs under SCHED_BATCH (``_sandbox.batch_scheduling``): the same nice value and
CPU share, no wake-up preemption; ``PYBUILD_STEP_SCHED=other`` keeps SCHED_OTHER, and a caller
that chose another policy keeps it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.executors import SandboxExecutor, _sandbox

from .conftest import answer_in_child
from .test_sandbox import sh

POLICY = "awk '{print $41}' /proc/self/stat"  # the scheduling policy field of proc(5)


@pytest.mark.root
async def test_a_steps_processes_run_under_sched_batch(executor: SandboxExecutor, make_rootfs) -> None:  # type: ignore[no-untyped-def]
    result, out, err = await sh(executor, make_rootfs(), f"{POLICY}; cat /proc/self/stat | awk '{{print $19}}'")
    assert result.exit_code == 0, err
    policy, nice = out.split()
    assert int(policy) == os.SCHED_BATCH
    assert int(nice) == os.getpriority(os.PRIO_PROCESS, 0)  # the nice value is the caller's


@pytest.mark.root
async def test_pybuild_step_sched_other_keeps_sched_other(
    require_root: None, tmp_path: Path, make_rootfs, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv(_sandbox.SCHED_ENV, "other")
    state = tmp_path / "state"
    state.mkdir()
    async with SandboxExecutor(state_dir=str(state)) as sandbox:
        result, out, err = await sh(sandbox, make_rootfs(), POLICY)
    assert result.exit_code == 0, err
    assert int(out) == os.SCHED_OTHER


def test_only_sched_other_is_changed() -> None:
    """A caller run under SCHED_IDLE (``chrt -i``) is not raised to SCHED_BATCH."""

    def policies() -> str:
        os.environ.pop(_sandbox.SCHED_ENV, None)
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        _sandbox.batch_scheduling()
        idle_kept = os.sched_getscheduler(0)
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        _sandbox.batch_scheduling()
        return f"{idle_kept} {os.sched_getscheduler(0)}"

    assert answer_in_child(policies) == f"{os.SCHED_IDLE} {os.SCHED_BATCH}"
