"""One build, start to finish: convert (pulling missing bases), solve, export.

``build`` is the only entry the CLI needs; everything it touches comes in
as an argument, so tests can drive it with fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from pybuild.errors import BuildError
from pybuild.grammar import Dockerfile

from ._convert import BuildOptions, BuildPlan, MissingImages, convert
from ._events import EventSink, Notice, ignore_events
from ._export import image_config, layers_of
from ._ops import ImageSource
from ._solver import OpRunner, Result, SolveStatistics, Solver

MAX_PULL_ROUNDS = 5


class Puller(Protocol):
    async def pull(self, ref: str, platform: str) -> None:
        """Bring the image ``ref`` into the local store."""


@dataclass(frozen=True)
class ExportOptions:
    tags: tuple[str, ...] = ()
    compression: str = "gzip"
    compression_level: int | None = None
    rewrite_timestamp: bool = False


@dataclass(frozen=True)
class BuildOutcome:
    plan: BuildPlan
    results: dict[str, Result] = field(repr=False)
    statistics: SolveStatistics
    image: Any | None = None  # oci.StoredImage when exported to the store
    config: dict[str, Any] | None = field(default=None, repr=False)


class StoreImageChains:
    """Base images' layers as snapshots, from the local image store."""

    def __init__(self, store: Any) -> None:
        self.store = store

    async def chain(self, source: ImageSource) -> tuple[str, ...]:
        def chain() -> tuple[str, ...]:
            image = self.store.image_by_manifest(source.manifest_digest)
            return self.store.snapshots_for(image)

        return await trio.to_thread.run_sync(chain)


async def plan_build(
    dockerfile: Dockerfile, options: BuildOptions, store: Any, puller: Puller | None, *, pull: bool = False,
    emit: EventSink = ignore_events,
) -> BuildPlan:
    """Convert, pulling base images the store does not have (or all of them with ``pull``)."""
    pulled: set[str] = set()
    lookup = store if not pull else _PullFirst(store, pulled)
    for _ in range(MAX_PULL_ROUNDS):
        try:
            return convert(dockerfile, options, lookup)
        except MissingImages as missing:
            if puller is None:
                names = ", ".join(missing.refs)
                raise BuildError(
                    f"base image not found locally: {names}",
                    hint="bring it in with `pybuild pull` or `pybuild import ROOTFS.tar NAME`",
                ) from None
            for ref in missing.refs:
                emit(Notice(f"pulling {ref}", trio.current_time()))
                await puller.pull(ref, str(options.platform))
                pulled.add(ref)
    raise BuildError("base images keep changing while they are pulled")


class _PullFirst:
    """With --pull, every base image is pulled once before it is used."""

    def __init__(self, store: Any, pulled: set[str]) -> None:
        self.store = store
        self.pulled = pulled

    def lookup(self, ref: str, platform: Any) -> Any:
        if ref not in self.pulled:
            return None
        return self.store.lookup(ref, platform)


async def build(
    dockerfile: Dockerfile,
    options: BuildOptions,
    *,
    store: Any,  # oci.ImageStore
    make_runner: Callable[[BuildPlan], OpRunner],
    puller: Puller | None = None,
    pull: bool = False,
    jobs: int = 2,
    export: ExportOptions | None = ExportOptions(),
    emit: EventSink = ignore_events,
) -> BuildOutcome:
    plan = await plan_build(dockerfile, options, store, puller, pull=pull, emit=emit)
    runner = make_runner(plan)
    try:
        solver = Solver(plan.definition, runner, jobs=jobs, emit=emit)
        await solver.solve([plan.target.op] if plan.target.op else [])
        results = solver.results  # every op's result: history needs the intermediate ones
        outcome = BuildOutcome(plan, results, solver.statistics())
        if export is None:
            return outcome
        emit(Notice("exporting to image", trio.current_time()))
        image, config = await trio.to_thread.run_sync(
            lambda: export_image(plan, results, store, export, options.source_date_epoch)
        )
        return BuildOutcome(plan, results, outcome.statistics, image, config)
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()


def export_image(plan: BuildPlan, results: dict[str, Result], store: Any, export: ExportOptions, source_date_epoch: int | None) -> tuple[Any, dict[str, Any]]:
    """Write the target's layers and config into the image store and tag it."""
    snapshots = layers_of(plan.target, results)
    mtime = source_date_epoch if export.rewrite_timestamp else None
    layers = [store.layer_for_snapshot(s, export.compression, export.compression_level, mtime=mtime) for s in snapshots]
    config = image_config(plan.target, results, created=time.time(), source_date_epoch=source_date_epoch)
    config["rootfs"]["diff_ids"] = [layer.diff_id for layer in layers]
    expected = sum(1 for entry in config["history"] if not entry.get("empty_layer"))
    if expected != len(layers):
        raise BuildError(
            f"internal error: {len(layers)} layers but {expected} history entries with layers",
            hint="this is a pybuild bug; please report it",
        )
    if mtime is None:
        store.remember_chain([layer.diff_id for layer in layers], snapshots)
    image = store.add_image(config, layers, export.tags)
    return image, config


def step_ids(plan: BuildPlan, file: str) -> dict[str, str]:
    """Stable names of steps across builds, to explain cache misses."""
    out = {}
    for digest, meta in plan.definition.meta.items():
        if meta.stage is not None and meta.step is not None and not meta.internal:
            out[digest] = f"{file}:{meta.stage}:{meta.step[0]}"
    return out


__all__: Sequence[str] = ["BuildOutcome", "ExportOptions", "Puller", "StoreImageChains", "build", "plan_build", "step_ids"]
