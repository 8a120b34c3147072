"""A build for several platforms: one solve, shared steps once, an image per
platform and an index naming them; a platform the machine cannot run stops
the build before any step runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from pybuild.cache import Root
from pybuild.dag import BuildOptions, ExportOptions, Platform, Worker, build
from pybuild.errors import BuildError
from pybuild.executors import FakeExecutor
from pybuild.grammar import parse
from pybuild.oci import ImageStore

from .fake_builds import HOST, OTHER, fake_runners, import_base


@dataclass(frozen=True)
class Status:
    platform: str
    runnable: bool
    reason: str = ""
    hint: str = ""


def _build(tmp_path: Path, text: str, platforms: tuple[Platform, ...], *, emulation: Any = None,
           events: list[Any] | None = None) -> tuple[Any, FakeExecutor, ImageStore]:
    root = Root.open(tmp_path / "root")
    store = ImageStore(root)
    import_base(store, HOST)
    executor = FakeExecutor()
    make_runner = fake_runners(root, store, executor)
    options = BuildOptions(platform=platforms[0], platforms=platforms)
    emit = events.append if events is not None else (lambda event: None)
    outcome = trio.run(lambda: build(
        parse(text.encode(), "Dockerfile"), options, store=store, make_runner=make_runner,
        export=ExportOptions(tags=("multi:1",)), emulation=emulation or (lambda p: Status(p, True)), emit=emit,
    ))
    return outcome, executor, store


CROSS = """\
FROM --platform=$BUILDPLATFORM base AS build
RUN echo shared
ARG TARGETARCH
RUN echo for-$TARGETARCH
"""


def test_two_platforms_solve_once_and_make_an_index(tmp_path: Path) -> None:
    """BuildKit's multi-platform build (frontend/dockerfile/builder/build.go:
    one result per platform, exported as an index by the image exporter,
    exporter/containerimage/writer.go): shared steps ran once, the steps
    using TARGETARCH once per target, each image's config has its platform,
    and the tag names the index."""
    events: list[Any] = []
    outcome, executor, store = _build(tmp_path, CROSS, (HOST, OTHER), events=events)
    commands = [spec.args[-1] for spec in executor.specs]
    assert commands.count("echo shared") == 1
    per_target = [dict(e.split("=", 1) for e in spec.env) for spec in executor.specs if spec.args[-1] == "echo for-$TARGETARCH"]
    assert sorted(env["TARGETARCH"] for env in per_target) == sorted(p.architecture for p in (HOST, OTHER))
    assert outcome.index is not None
    assert [entry.platform for entry in outcome.index.manifests] == [str(HOST), str(OTHER)]
    assert [image.config["architecture"] for image in outcome.images] == [HOST.architecture, OTHER.architecture]
    assert store.index("multi:1") is not None and store.index("multi:1").digest == outcome.index.digest  # type: ignore[union-attr]
    started = [e.name for e in events if type(e).__name__ == "StepStarted"]
    assert f"[{HOST}->{OTHER.architecture} 3/3] RUN echo for-{OTHER.architecture}" in started


def test_one_foreign_platform_is_a_plain_image(tmp_path: Path) -> None:
    """--platform with one platform gives a plain manifest, as today (BuildKit's
    exporter writes an index only for several platforms)."""
    outcome, _, store = _build(tmp_path, CROSS, (OTHER,))
    assert outcome.index is None and outcome.image is not None
    assert outcome.image.config["architecture"] == OTHER.architecture
    assert store.index("multi:1") is None and store.get("multi:1").id == outcome.image.id


def test_an_unrunnable_platform_stops_the_build_before_any_step(tmp_path: Path) -> None:
    """A RUN for a platform that needs emulation the machine lacks fails before
    anything runs, naming the platform and the fix (BuildKit fails the step
    with "exec format error" only once it runs; here the check is first)."""
    asked: list[str] = []

    def emulation(platform: str) -> Status:
        asked.append(platform)
        return Status(platform, False, "no binfmt_misc handler", "install qemu-user-static, then run pybuild binfmt --install")

    text = "FROM base\nRUN echo one\nRUN echo two\n"
    with pytest.raises(BuildError) as caught:
        _build(tmp_path, text, (HOST, OTHER), emulation=emulation)
    assert str(OTHER) in str(caught.value) and "no binfmt_misc handler" in str(caught.value)
    assert caught.value.hint is not None and "pybuild binfmt --install" in caught.value.hint
    assert str(caught.value).startswith("Dockerfile:2:")
    assert asked == [str(OTHER)]


def test_a_build_that_runs_nothing_foreign_asks_nothing(tmp_path: Path) -> None:
    """The cross-compilation pattern runs natively: no platform is checked, so
    knowing what the machine can run costs nothing (issue 16)."""
    asked: list[str] = []

    def emulation(platform: str) -> Status:
        asked.append(platform)
        return Status(platform, False)

    text = "FROM --platform=$BUILDPLATFORM base\nARG TARGETARCH\nRUN echo $TARGETARCH\n"
    outcome, executor, _ = _build(tmp_path, text, (HOST, OTHER), emulation=emulation)
    assert asked == [] and outcome.index is not None and len(executor.specs) == 2


def test_a_cache_export_holds_every_platforms_records(tmp_path: Path) -> None:
    """--cache-to mode=min of a several-platform build keeps each target's final
    steps, as BuildKit's exporter collects the cache of every platform's
    result (solver/llbsolver/solver.go exports each result's cache)."""
    from pybuild.cache.remote import parse_cache_spec
    from pybuild.dag import import_remote_cache

    root = Root.open(tmp_path / "root")
    store = ImageStore(root)
    import_base(store, HOST)
    workers: list[Worker] = []
    make = fake_runners(root, store, FakeExecutor())

    def make_runner(plan: Any) -> Worker:
        workers.append(make(plan))
        return workers[-1]

    text = "FROM --platform=$BUILDPLATFORM base\nARG TARGETARCH\nWORKDIR /out/$TARGETARCH\n"
    dest = tmp_path / "cache"
    outcome = trio.run(lambda: build(
        parse(text.encode(), "Dockerfile"), BuildOptions(platform=HOST, platforms=(HOST, OTHER)), store=store,
        make_runner=make_runner, export=ExportOptions(), cache_to=(parse_cache_spec(f"type=local,dest={dest}", export=True),),
        emulation=lambda p: Status(p, True),
    ))
    imported = trio.run(lambda: import_remote_cache(
        parse_cache_spec(f"type=local,src={dest}", export=False), client=None, platform=str(HOST)
    ))
    finals = [workers[0].keys[t.target.op] for t in outcome.plan.targets]
    assert len(set(finals)) == 2 and all(key in imported.records for key in finals)


def test_missing_bases_are_pulled_for_each_platform_that_needs_them() -> None:
    """Each stage's base is resolved for its own platform (BuildKit's
    resolveBaseImage asks the resolver with the stage's platform): a two-platform
    build pulls the target stage's base once per target and the build-platform
    stage's base once, for the build platform."""
    from pybuild.dag import ResolvedImage
    from pybuild.dag._build import plan_build

    config = {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]}}

    class Store:
        def __init__(self) -> None:
            self.have: set[tuple[str, str]] = set()

        def lookup(self, ref: str, platform: object) -> ResolvedImage | None:
            if (ref, str(platform)) not in self.have:
                return None
            return ResolvedImage(ref, "sha256:" + str(platform).split("/")[1][0] * 64, {**config, "architecture": str(platform).split("/")[1]})

    store = Store()

    class Puller:
        def __init__(self) -> None:
            self.pulls: list[tuple[str, str]] = []

        async def pull(self, ref: str, platform: str) -> None:
            self.pulls.append((ref, platform))
            store.have.add((ref, platform))

    puller = Puller()
    text = "FROM --platform=$BUILDPLATFORM tools AS t\nRUN true\nFROM runtime\nCOPY --from=t / /\n"
    options = BuildOptions(platform=HOST, platforms=(HOST, OTHER))
    plan = trio.run(lambda: plan_build(parse(text.encode(), "Dockerfile"), options, store, puller))  # type: ignore[arg-type]
    assert sorted(puller.pulls) == sorted([
        ("docker.io/library/tools:latest", str(HOST)),
        ("docker.io/library/runtime:latest", str(HOST)),
        ("docker.io/library/runtime:latest", str(OTHER)),
    ])
    assert len(plan.targets) == 2
