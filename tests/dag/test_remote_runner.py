"""The remote runner (dag/remote/_runner.py) against the in-memory REAPI fake.

The local side is the real Worker with pybuild's FakeExecutor; the "cluster"
is ``reapi.MemoryRemote`` whose executor is a small bot in this file: it reads
step.json back with ``decode_step`` and answers a layer tar it makes itself.
What is checked is the client's part: what goes into the CAS, what stays
here, how results are checked, adopted, cached, refused and reported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore, Root
from pybuild.dag import BuildOptions, ResolvedImage, convert
from pybuild.dag._build import step_ids
from pybuild.dag._events import Notice, StepCached, StepLog, StepStarted
from pybuild.dag._solver import Solver
from pybuild.dag._worker import Context, Worker, WorkerOptions
from pybuild.dag.remote import LAYER_OUTPUT, RESULT_OUTPUT, RemoteResult, decode_step, result_json
from pybuild.dag.remote._runner import RemoteRunner, RemoteSettings
from pybuild.errors import StepFailed
from pybuild.executors import FakeExecutor
from pybuild.grammar import parse
from pybuild.oci import ImageStore, SnapshotLayers
from pybuild.reapi import Action, ActionResult, Digest, MemoryRemote, OutputFile, parse_command, parse_directory

from ..layer_tars import layer_tar

BASE = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
SECRET = b"hunter2-very-secret-bytes"


class Images:
    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        return ResolvedImage(ref, "sha256:" + "a" * 64, BASE)

    async def chain(self, source):  # type: ignore[no-untyped-def]
        return ()


class RecordingCaller:
    """File operations write one file instead of copying (they need root)."""

    async def call(self, rootfs, mounts, function, *args):  # type: ignore[no-untyped-def]
        Path(rootfs.upper, "copied.txt").write_text("copied\n")


class Bot:
    """The cluster's worker: runs a step by writing its command into /out."""

    def __init__(self) -> None:
        self.remote: MemoryRemote | None = None
        self.steps: list[object] = []
        self.answer: Callable[[bytes], tuple[bytes, bytes, int]] = lambda tar: (tar, result_json(RemoteResult(_diff_id(tar))), 0)

    def __call__(self, action: Action) -> ActionResult:
        assert self.remote is not None
        blobs = self.remote.blobs
        command = parse_command(blobs[action.command_digest])
        assert list(command.arguments) == ["pybuild-step", "step.json"]
        root = parse_directory(blobs[action.input_root_digest])
        step = decode_step(blobs[next(f.digest for f in root.files if f.name == "step.json")])
        for directory in root.directories:  # every layer named is in the CAS, as its plain tar
            for node in parse_directory(blobs[directory.digest]).files:
                assert node.digest in blobs and node.name == node.digest.hash + ".tar"
        self.steps.append(step)
        tar, report, exit_code = self.answer(layer_tar({"out": " ".join(step.op.args).encode()}))
        if exit_code:
            return ActionResult(exit_code=exit_code, stderr_raw=b"compiling\nboom: it broke\n")
        self.remote.upload({Digest.of(tar): tar, Digest.of(report): report})
        outputs = (OutputFile(LAYER_OUTPUT, Digest.of(tar)), OutputFile(RESULT_OUTPUT, Digest.of(report)))
        return ActionResult(exit_code=0, output_files=outputs, stdout_raw=b"remote says hi\n", worker="bot-1")


def _diff_id(tar: bytes) -> str:
    return "sha256:" + hashlib.sha256(tar).hexdigest()


class Build:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.context = tmp_path / "ctx"
        self.context.mkdir()
        (self.context / "a.txt").write_text("a\n")
        self.roots: list[Root] = []

    def root(self, name: str) -> Root:
        root = Root.open(self.tmp_path / name)
        self.roots.append(root)
        return root

    async def __call__(self, root: Root, text: str, settings: RemoteSettings, executor: FakeExecutor | None = None) -> tuple[list[object], dict[str, object], RemoteRunner]:
        plan = convert(parse(text, "Dockerfile"), BuildOptions(), Images())  # type: ignore[arg-type]
        events: list[object] = []
        worker = Worker(
            plan.definition, root=root, executor=executor or FakeExecutor(), files=RecordingCaller(), images=Images(),
            context=Context(self.context, ContextHasher(self.context, DockerIgnore(), root.index)),
            step_ids=step_ids(plan, "Dockerfile"), options=WorkerOptions(secrets={"tok": SECRET}),
            layers=SnapshotLayers(ImageStore(root)),
        )
        runner = RemoteRunner(worker, settings, emit=events.append)
        results = await Solver(plan.definition, runner, emit=events.append, dockerfile="Dockerfile").solve([plan.target.op])
        worker.close()
        return events, dict(results), runner


@pytest.fixture
def build(tmp_path: Path):  # type: ignore[no-untyped-def]
    made = Build(tmp_path)
    yield made
    for root in made.roots:
        root.close()


@pytest.fixture
def cluster() -> tuple[MemoryRemote, Bot]:
    bot = Bot()
    remote = MemoryRemote(bot)
    bot.remote = remote
    return remote, bot


def kinds(events, kind):  # type: ignore[no-untyped-def]
    return [e for e in events if isinstance(e, kind)]


def logs(events) -> str:  # type: ignore[no-untyped-def]
    return b"".join(e.data for e in kinds(events, StepLog)).decode()


DOCKERFILE = "FROM base\nCOPY a.txt /a.txt\nRUN make all\nRUN make install\n"


def top_file(root: Root, results: dict[str, object]) -> bytes:
    (result,) = results.values()
    return (root.snapshots.tree(result.layer) / "out").read_bytes()  # type: ignore[attr-defined]


async def test_run_steps_execute_remotely_on_the_layers_they_need(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    local = FakeExecutor()
    root = build.root("one")
    events, results, _ = await build(root, DOCKERFILE, RemoteSettings(executor=remote), local)
    assert local.calls == []  # nothing ran here
    assert [" ".join(s.op.args) for s in bot.steps] == ["/bin/sh -c make all", "/bin/sh -c make install"]
    assert top_file(root, results) == b"/bin/sh -c make install"
    # the COPY layer went into the CAS as its plain tar, named by its diffID
    first = bot.steps[0]
    (copy_layer,) = first.chains["rootfs"]
    assert any("sha256:" + d.hash == copy_layer for d in remote.blobs)
    assert len(bot.steps[1].chains["rootfs"]) == 2  # the first RUN's layer on the COPY's
    # both RUNs under their Execute and their cache action; the COPY's layer only as an input
    assert len(remote.action_results) == 4
    text = logs(events)
    assert "[remote] grpc://memory:0" in text and "remote says hi" in text and "[local: file operation]" in text


async def test_another_root_runs_no_run_step_and_gets_the_same_layers(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    first_root, second_root = build.root("one"), build.root("two")
    _, first, _ = await build(first_root, DOCKERFILE, RemoteSettings(executor=remote))
    ran = len(bot.steps)
    local = FakeExecutor()
    events, second, _ = await build(second_root, DOCKERFILE, RemoteSettings(executor=remote), local)
    assert len(bot.steps) == ran and local.calls == []
    # the COPY (recorded nowhere without --cache-to) runs here again; no RUN does
    assert [e.name for e in kinds(events, StepStarted)] == ["[2/4] COPY a.txt /a.txt"] and len(kinds(events, StepCached)) == 2
    assert top_file(second_root, second) == top_file(first_root, first)
    assert [r.key for r in second.values()] == [r.key for r in first.values()]  # type: ignore[attr-defined]
    layers = SnapshotLayers(ImageStore(second_root))
    (result,) = second.values()
    assert layers.diff_id(result.layer) == SnapshotLayers(ImageStore(first_root)).diff_id(list(first.values())[0].layer)  # type: ignore[attr-defined]


async def test_a_secret_step_stays_here_and_its_secret_nowhere_remote(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    local = FakeExecutor()
    text = "FROM base\nRUN --mount=type=secret,id=tok make deploy\nRUN make after\n"
    events, _, _ = await build(build.root("one"), text, RemoteSettings(executor=remote), local)
    assert [" ".join(s.args) for s in local.specs] == ["/bin/sh -c make deploy"]
    assert [" ".join(s.op.args) for s in bot.steps] == ["/bin/sh -c make after"]
    assert "[local: secret mount]" in logs(events)
    assert not any(SECRET in blob for blob in remote.blobs.values())
    # what the secret step made is uploaded only as the next remote step's input layer, never cached under its key
    assert len(remote.action_results) == 2  # the remote step: its Execute and its cache action


async def test_a_layer_that_does_not_match_its_report_is_refused_and_the_step_runs_here(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    bot.answer = lambda tar: (tar, result_json(RemoteResult("sha256:" + "0" * 64)), 0)
    local = FakeExecutor()
    events, results, _ = await build(build.root("one"), "FROM base\nRUN make all\n", RemoteSettings(executor=remote), local)
    assert len(bot.steps) == 1 and [" ".join(s.args) for s in local.specs] == ["/bin/sh -c make all"]
    (warning,) = [e.message for e in kinds(events, Notice) if "refused" in e.message]
    assert "result.json names layer sha256:000" in warning and "running it here" in warning


async def test_a_corrupted_cas_blob_is_refused(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster

    def tampered(tar: bytes) -> tuple[bytes, bytes, int]:
        report = result_json(RemoteResult(_diff_id(tar)))
        real = Digest.of(tar)
        remote.blobs[real] = tar.replace(b"make", b"evil")  # the CAS serves other bytes under the digest
        return tar, report, 0

    bot.answer = tampered
    original_upload = remote.upload

    def keep_tampered(blobs):  # type: ignore[no-untyped-def]
        original_upload({d: b for d, b in blobs.items() if d not in remote.blobs})

    remote.upload = keep_tampered  # type: ignore[method-assign]
    local = FakeExecutor()
    root = build.root("one")
    events, results, _ = await build(root, "FROM base\nRUN make all\n", RemoteSettings(executor=remote), local)
    assert len(local.calls) == 1
    (result,) = results.values()
    assert not (root.snapshots.tree(result.layer) / "out").exists()  # type: ignore[attr-defined]  # the local run's layer, not evil


async def test_a_remote_failure_reads_as_a_local_one(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    bot.answer = lambda tar: (tar, b"", 2)
    with pytest.raises(StepFailed) as caught:
        await build(build.root("one"), "FROM base\nRUN make all\n", RemoteSettings(executor=remote))
    error = caught.value
    assert error.step_exit_code == 2 and "boom: it broke" in error.output_tail
    assert 'process "/bin/sh -c make all" did not complete successfully: exit code: 2' in str(error)
    assert error.location is not None and error.location.start_line == 2


async def test_cache_to_then_cache_from_on_an_empty_root_reuses_every_step(build) -> None:  # type: ignore[no-untyped-def]
    cache = MemoryRemote()  # an action cache and CAS, no executor
    first_root, second_root = build.root("one"), build.root("two")
    local = FakeExecutor()
    _, first, _ = await build(first_root, DOCKERFILE, RemoteSettings(cache_to=(cache,)), local)
    assert len(local.calls) == 2 and len(cache.action_results) == 3  # COPY and both RUNs
    again = FakeExecutor()
    events, second, _ = await build(second_root, DOCKERFILE, RemoteSettings(cache_from=(cache,)), again)
    assert again.calls == [] and len(kinds(events, StepCached)) == 3 and not kinds(events, StepStarted)
    (top_first,), (top_second,) = first.values(), second.values()
    store_first, store_second = SnapshotLayers(ImageStore(first_root)), SnapshotLayers(ImageStore(second_root))
    assert store_first.layer(top_first.layer, None).diff_id == store_second.diff_id(top_second.layer)  # type: ignore[attr-defined]


async def test_cache_from_alone_records_nothing(build) -> None:  # type: ignore[no-untyped-def]
    cache = MemoryRemote()
    await build(build.root("one"), DOCKERFILE, RemoteSettings(cache_from=(cache,)))
    assert cache.action_results == {} and cache.blobs == {}


async def test_what_ran_remotely_is_recorded_in_another_cache_with_its_blobs(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    other = MemoryRemote()
    await build(build.root("one"), DOCKERFILE, RemoteSettings(executor=remote, cache_to=(other,)))
    assert len(bot.steps) == 2 and len(other.action_results) == 3
    for result in other.action_results.values():  # every blob a recorded result names is in that CAS
        assert all(output.digest in other.blobs for output in result.output_files)
    local = FakeExecutor()
    events, _, _ = await build(build.root("two"), DOCKERFILE, RemoteSettings(cache_from=(other,)), local)
    assert local.calls == [] and len(kinds(events, StepCached)) == 3


async def test_no_cache_executes_again_into_a_new_snapshot(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    root = build.root("one")
    _, first, _ = await build(root, "FROM base\nRUN make all\n", RemoteSettings(executor=remote))
    plan_text = "FROM base\nRUN make all\n"
    from pybuild.dag import BuildOptions as Options

    plan = convert(parse(plan_text, "Dockerfile"), Options(no_cache=True), Images())  # type: ignore[arg-type]
    worker = Worker(plan.definition, root=root, executor=FakeExecutor(), files=RecordingCaller(), images=Images(),
                    layers=SnapshotLayers(ImageStore(root)))
    runner = RemoteRunner(worker, RemoteSettings(executor=remote))
    again = await Solver(plan.definition, runner).solve([plan.target.op])
    worker.close()
    assert len(bot.steps) == 2  # executed again, not taken from the action cache
    (before,), (after,) = first.values(), again.values()
    assert after.layer != before.layer and (root.snapshots.tree(after.layer) / "out").exists()  # type: ignore[attr-defined]


async def test_a_memory_limit_keeps_run_steps_here(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    root = build.root("one")
    plan = convert(parse("FROM base\nRUN make all\n", "Dockerfile"), BuildOptions(), Images())  # type: ignore[arg-type]
    local = FakeExecutor()
    worker = Worker(plan.definition, root=root, executor=local, files=RecordingCaller(), images=Images(),
                    options=WorkerOptions(memory_limit=64 << 20), layers=SnapshotLayers(ImageStore(root)))
    events: list[object] = []
    await Solver(plan.definition, RemoteRunner(worker, RemoteSettings(executor=remote)), emit=events.append).solve([plan.target.op])
    worker.close()
    assert bot.steps == [] and len(local.calls) == 1 and "[local: memory limit]" in logs(events)


async def test_an_oversized_result_json_is_refused(build, cluster) -> None:  # type: ignore[no-untyped-def]
    remote, bot = cluster
    bot.answer = lambda tar: (tar, result_json(RemoteResult(_diff_id(tar))) + b" " * (1 << 17), 0)
    local = FakeExecutor()
    events, _, _ = await build(build.root("one"), "FROM base\nRUN make all\n", RemoteSettings(executor=remote), local)
    assert len(local.calls) == 1 and any("result.json is 131" in e.message for e in kinds(events, Notice))


async def test_a_cache_that_fails_midway_is_dropped_with_one_warning(build) -> None:  # type: ignore[no-untyped-def]
    cache = MemoryRemote()
    cache.unavailable = True  # answered before the build (the CLI asks), gone since
    local = FakeExecutor()
    events, _, _ = await build(build.root("one"), DOCKERFILE, RemoteSettings(cache_from=(cache,)), local)
    assert len(local.calls) == 2
    warnings = [e.message for e in kinds(events, Notice) if "is not used any more" in e.message]
    assert len(warnings) == 1 and "cannot reach" in warnings[0]


async def test_an_executor_that_fails_midway_fails_the_build(build, cluster) -> None:  # type: ignore[no-untyped-def]
    from pybuild.reapi import RemoteUnavailable

    remote, _ = cluster
    remote.unavailable = True
    with pytest.raises(RemoteUnavailable):
        await build(build.root("one"), "FROM base\nRUN make all\n", RemoteSettings(executor=remote))
