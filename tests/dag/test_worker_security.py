"""The worker and RUN --security: the entitlement is checked again where the step runs (no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore, Root
from pybuild.dag import BuildOptions, convert
from pybuild.dag._build import step_ids
from pybuild.dag._solver import Solver
from pybuild.dag._worker import Context, Worker, WorkerOptions, memory_text
from pybuild.errors import BuildError
from pybuild.executors import FakeExecutor
from pybuild.grammar import parse

from .test_worker import Images, RecordingCaller

INSECURE = "FROM base\nRUN --security=insecure mount -t tmpfs none /mnt\nRUN echo after\n"


async def run_build(tmp_path: Path, executor: FakeExecutor, options: WorkerOptions) -> None:
    root = Root.open(tmp_path / "root")
    try:
        images = Images()
        plan = convert(parse(INSECURE, "Dockerfile"), BuildOptions(entitlements=frozenset({"security.insecure"})), images)
        worker = Worker(
            plan.definition, root=root, executor=executor, files=RecordingCaller(), images=images,
            context=Context(tmp_path, ContextHasher(tmp_path, DockerIgnore(), root.index)),
            step_ids=step_ids(plan, "Dockerfile"), options=options,
        )
        await Solver(plan.definition, worker).solve([plan.target.op])
    finally:
        root.close()


async def test_the_insecure_mode_reaches_the_executor_with_the_entitlement(tmp_path: Path) -> None:
    executor = FakeExecutor()
    await run_build(tmp_path, executor, WorkerOptions(allow_insecure=True))
    assert [spec.security for spec in executor.specs] == ["insecure", "sandbox"]


async def test_a_worker_without_the_entitlement_refuses_an_insecure_step(tmp_path: Path) -> None:
    executor = FakeExecutor()
    with pytest.raises(BuildError, match="security.insecure is not allowed"):
        await run_build(tmp_path, executor, WorkerOptions())
    assert executor.specs == []


def test_memory_limits_are_shown_in_binary_units() -> None:
    assert [memory_text(n) for n in (64 << 20, 3 << 29, 1 << 30, 6 << 20, 512 << 10, 1000)] == [
        "64 MiB", "1.5 GiB", "1 GiB", "6 MiB", "512 KiB", "1000 bytes",
    ]
