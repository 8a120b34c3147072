"""A step sent to the cluster that comes back to run here (its result refused, or the executor
failing under --remote-fallback=local) runs here only if this machine runs its platform.

The build checks emulators before anything runs only for the steps planned to stay here
(``check_platforms`` with the remote runner's ``stays_local``), so the runner asks again when
a foreign step comes back: never run natively by mistake, never the sandbox's exec error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore, Root
from pybuild.dag import BuildOptions, convert
from pybuild.dag._build import step_ids
from pybuild.dag._events import Notice
from pybuild.dag._platform import Platform
from pybuild.dag._solver import Solver
from pybuild.dag._worker import Context, Worker, WorkerOptions
from pybuild.dag.remote import RemoteResult, result_json
from pybuild.dag.remote._runner import RemoteRunner, RemoteSettings
from pybuild.errors import BuildError
from pybuild.executors import EmulationStatus, FakeExecutor
from pybuild.grammar import parse
from pybuild.oci import ImageStore, SnapshotLayers
from pybuild.reapi import Digest, ExecuteResponse, MemoryRemote, RemoteUnavailable

from .test_remote_runner import Bot, Images, RecordingCaller

FOREIGN = "linux/s390x"
DOCKERFILE = "FROM base\nRUN make all\n"


class Emulation:
    """This machine's answer about platforms: ``runnable`` or not, and who asked."""

    def __init__(self, runnable: bool) -> None:
        self.runnable = runnable
        self.asked: list[str] = []

    def __call__(self, platform: str) -> EmulationStatus:
        self.asked.append(platform)
        if self.runnable:
            return EmulationStatus(platform, True, "emulated")
        return EmulationStatus(platform, False, "unavailable", reason="no binfmt_misc handler", hint="pybuild binfmt --install")


async def build(tmp_path: Path, settings: RemoteSettings, executor: FakeExecutor, platform: str) -> list[object]:
    options = BuildOptions(platforms=(Platform.parse(platform),)) if platform else BuildOptions()
    plan = convert(parse(DOCKERFILE, "Dockerfile"), options, Images())  # type: ignore[arg-type]
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    root = Root.open(tmp_path / "root")
    events: list[object] = []
    worker = Worker(
        plan.definition, root=root, executor=executor, files=RecordingCaller(), images=Images(),
        context=Context(context, ContextHasher(context, DockerIgnore(), root.index)),
        step_ids=step_ids(plan, "Dockerfile"), options=WorkerOptions(), layers=SnapshotLayers(ImageStore(root)),
    )
    try:
        runner = RemoteRunner(worker, settings, emit=events.append)
        await Solver(plan.definition, runner, emit=events.append, dockerfile="Dockerfile").solve([plan.target.op])
    finally:
        worker.close()
        root.close()
    return events


def lying_cluster() -> tuple[MemoryRemote, Bot]:
    """A cluster whose result.json names another layer than the one it sends: refused."""
    bot = Bot()
    remote = MemoryRemote(bot)
    bot.remote = remote
    bot.answer = lambda tar: (tar, result_json(RemoteResult("sha256:" + "0" * 64)), 0)
    return remote, bot


class GoneAtExecute(MemoryRemote):
    """A cluster that answers lookups and uploads, then is unreachable when the step is sent."""

    def execute(self, action: Digest, *, skip_cache_lookup: bool = False, on_update: object = None) -> ExecuteResponse:
        raise RemoteUnavailable(f"cannot reach the remote executor at {self.url}: connection refused")


async def test_a_refused_foreign_step_does_not_run_here_without_an_emulator(tmp_path: Path) -> None:
    remote, bot = lying_cluster()
    emulation = Emulation(runnable=False)
    local = FakeExecutor()
    settings = RemoteSettings(executor=remote, emulation=emulation)
    with pytest.raises(BuildError) as raised:
        await build(tmp_path, settings, local, FOREIGN)
    assert len(bot.steps) == 1 and bot.steps[0].platform == FOREIGN  # it went to the cluster first
    assert local.calls == []  # and never ran here
    assert emulation.asked == [FOREIGN]
    error = raised.value
    assert str(error.location) == "Dockerfile:2"
    assert "is refused: result.json names layer sha256:000" in error.message
    assert f"this machine cannot run {FOREIGN} steps: no binfmt_misc handler" in error.message
    assert error.hint == "pybuild binfmt --install"


async def test_a_refused_foreign_step_runs_here_where_an_emulator_runs_it(tmp_path: Path) -> None:
    remote, _ = lying_cluster()
    emulation = Emulation(runnable=True)
    local = FakeExecutor()
    events = await build(tmp_path, RemoteSettings(executor=remote, emulation=emulation), local, FOREIGN)
    assert emulation.asked == [FOREIGN]
    assert [" ".join(spec.args) for spec in local.specs] == ["/bin/sh -c make all"]
    assert any("running it here" in e.message for e in events if isinstance(e, Notice))


async def test_a_refused_step_of_this_host_runs_here_without_asking(tmp_path: Path) -> None:
    remote, _ = lying_cluster()
    emulation = Emulation(runnable=False)
    local = FakeExecutor()
    await build(tmp_path, RemoteSettings(executor=remote, emulation=emulation), local, "")
    assert emulation.asked == []  # the host's own platform needs no emulator
    assert [" ".join(spec.args) for spec in local.specs] == ["/bin/sh -c make all"]


async def test_a_foreign_step_the_fallback_brings_back_does_not_run_here_without_an_emulator(tmp_path: Path) -> None:
    bot = Bot()
    remote = GoneAtExecute(bot)  # the executor fails: --remote-fallback=local would run the step here
    bot.remote = remote
    emulation = Emulation(runnable=False)
    local = FakeExecutor()
    settings = RemoteSettings(executor=remote, emulation=emulation, fallback_local=True)
    with pytest.raises(BuildError, match=f"(?s)cannot reach the remote executor.*--remote-fallback=local.*cannot run {FOREIGN} steps"):
        await build(tmp_path, settings, local, FOREIGN)
    assert local.calls == [] and bot.steps == []
