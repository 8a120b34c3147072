"""The real worker with fake executors: cache hits, misses and their explanations.

No root needed: the executor is pybuild's FakeExecutor, file operations are
recorded but not performed, and base images have no layers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore, Root
from pybuild.dag import BuildOptions, ResolvedImage, convert
from pybuild.dag._events import StepCached, StepMiss, StepStarted
from pybuild.dag._solver import Solver
from pybuild.dag._worker import Context, Worker
from pybuild.dag._build import step_ids
from pybuild.executors import FakeExecutor
from pybuild.grammar import parse

BASE = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]}}


class Images:
    def __init__(self) -> None:
        self.digest = "sha256:" + "a" * 64

    def lookup(self, ref, platform):  # type: ignore[no-untyped-def]
        return ResolvedImage(ref, self.digest, BASE)

    async def chain(self, source):  # type: ignore[no-untyped-def]
        return ()


class RecordingCaller:
    """Records file operations instead of performing them (they need root)."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, rootfs, mounts, function, *args):  # type: ignore[no-untyped-def]
        self.calls += 1
        Path(rootfs.upper, f"change-{self.calls}").write_text("x")


class Build:
    def __init__(self, root: Root, context: Path, images: Images) -> None:
        self.root, self.context, self.images = root, context, images
        self.executor = FakeExecutor()

    async def __call__(self, text: str, **options: object) -> list[object]:
        plan = convert(parse(text, "Dockerfile"), BuildOptions(**options), self.images)  # type: ignore[arg-type]
        events: list[object] = []
        worker = Worker(
            plan.definition, root=self.root, executor=self.executor, files=RecordingCaller(),
            images=self.images, context=Context(self.context, ContextHasher(self.context, DockerIgnore(), self.root.index)),
            step_ids=step_ids(plan, "Dockerfile"),
        )
        await Solver(plan.definition, worker, emit=events.append).solve([plan.target.op])
        return events


@pytest.fixture
def setup(tmp_path: Path):  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    (context / "src").mkdir(parents=True)
    (context / "src" / "main.py").write_text("print(1)\n")
    (context / "other.txt").write_text("other\n")
    root = Root.open(tmp_path / "root")
    yield Build(root, context, Images()), context
    root.close()


DOCKERFILE = "FROM base\nRUN echo first\nCOPY src/ /app\nARG V=1\nRUN echo $V\n"


def kinds(events, kind):  # type: ignore[no-untyped-def]
    return [e for e in events if isinstance(e, kind)]


async def test_second_build_is_all_cached(setup) -> None:  # type: ignore[no-untyped-def]
    build, _ = setup
    await build(DOCKERFILE)
    runs = len(build.executor.calls)
    events = await build(DOCKERFILE)
    assert len(build.executor.calls) == runs  # nothing ran again
    assert len(kinds(events, StepCached)) == 3 and not kinds(events, StepStarted)


async def test_touching_files_keeps_the_cache(setup) -> None:  # type: ignore[no-untyped-def]
    build, context = setup
    await build(DOCKERFILE)
    for path in context.rglob("*"):
        os.utime(path, (1, 1))
    events = await build(DOCKERFILE)
    assert not kinds(events, StepStarted)


async def test_a_changed_file_misses_from_its_copy_on_and_says_why(setup) -> None:  # type: ignore[no-untyped-def]
    build, context = setup
    await build(DOCKERFILE)
    (context / "src" / "main.py").write_text("print(2)\n")
    events = await build(DOCKERFILE)
    started = [e.name for e in kinds(events, StepStarted)]
    assert [name.split("] ")[1] for name in started] == ["COPY src/ /app", "RUN echo 1"]
    reasons = {e.name.split("] ")[1]: e.reason for e in kinds(events, StepMiss)}
    assert reasons["COPY src/ /app"] == "src/main.py changed"
    assert reasons["RUN echo 1"] == "the previous step changed"


async def test_an_unselected_file_does_not_matter(setup) -> None:  # type: ignore[no-untyped-def]
    build, context = setup
    await build(DOCKERFILE)
    (context / "other.txt").write_text("changed\n")
    assert not kinds(await build(DOCKERFILE), StepStarted)


async def test_mode_and_symlink_changes_miss(setup) -> None:  # type: ignore[no-untyped-def]
    build, context = setup
    os.symlink("main.py", context / "src" / "link")
    await build(DOCKERFILE)
    os.chmod(context / "src" / "main.py", 0o755)
    events = await build(DOCKERFILE)
    assert [e.reason for e in kinds(events, StepMiss)][0] == "src/main.py changed"
    (context / "src" / "link").unlink()
    os.symlink("other", context / "src" / "link")
    events = await build(DOCKERFILE)
    assert [e.reason for e in kinds(events, StepMiss)][0] == "src/link changed"


async def test_a_build_arg_misses_only_where_it_is_seen(setup) -> None:  # type: ignore[no-untyped-def]
    build, _ = setup
    await build(DOCKERFILE)
    events = await build(DOCKERFILE, build_args={"V": "2"})
    assert [e.name.split("] ")[1] for e in kinds(events, StepStarted)] == ["RUN echo 2"]
    assert [e.reason for e in kinds(events, StepMiss)] == ["build-arg V changed"]


async def test_proxy_build_args_do_not_miss_but_reach_the_step(setup) -> None:  # type: ignore[no-untyped-def]
    build, _ = setup
    await build(DOCKERFILE)
    events = await build(DOCKERFILE, build_args={"HTTPS_PROXY": "http://proxy:3128"})
    assert not kinds(events, StepStarted)
    await build(DOCKERFILE, build_args={"HTTPS_PROXY": "http://proxy:3128"}, no_cache=True)
    assert "HTTPS_PROXY=http://proxy:3128" in build.executor.specs[-1].env


async def test_base_image_change_is_explained(setup) -> None:  # type: ignore[no-untyped-def]
    build, _ = setup
    await build(DOCKERFILE)
    build.images.digest = "sha256:" + "c" * 64
    events = await build(DOCKERFILE)
    assert kinds(events, StepMiss)[0].reason == "base image digest changed"


async def test_no_cache_filter_reruns_only_that_stage(setup) -> None:  # type: ignore[no-untyped-def]
    build, _ = setup
    text = "FROM base AS one\nRUN echo one\nFROM base\nRUN echo two\nCOPY --from=one /x /x\n"
    await build(text)
    events = await build(text, no_cache_stages=frozenset({"one"}))
    assert [e.name.split("] ")[1] for e in kinds(events, StepStarted)] == ["RUN echo one", "COPY --from=one /x /x"]


async def test_no_cache_says_so_instead_of_blaming_the_cache(setup) -> None:  # type: ignore[no-untyped-def]
    build, _ = setup
    await build(DOCKERFILE)
    events = await build(DOCKERFILE, no_cache=True)
    assert {e.reason for e in kinds(events, StepMiss)} == {"the cache is off for this step (--no-cache)"}
