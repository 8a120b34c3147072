"""One build, start to finish: convert (pulling missing bases), solve, export.

``build`` is the only entry the CLI needs; everything it touches comes in
as an argument, so tests can drive it with fakes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import trio

from pybuild.errors import BuildError, PybuildError
from pybuild.grammar import Dockerfile

from ._convert import BuildOptions, BuildPlan, MissingImages, convert
from ._events import EventSink, Notice, ignore_events
from ._export import image_config, layers_of
from ._ops import ImageSource
from ._remote_cache import INLINE_KEY, CacheSpec, RemoteCacheBroken, export_cache, inline_records
from ._solver import OpRunner, Result, SolveStatistics, Solver

MAX_PULL_ROUNDS = 5
MAX_CACHE_RETRIES = 4  # broken imported caches dropped before the build gives up


class Puller(Protocol):
    async def pull(self, ref: str, platform: str) -> None:
        """Bring the image ``ref`` into the local store."""


@dataclass(frozen=True)
class ExportOptions:
    tags: tuple[str, ...] = ()
    compression: str | None = None  # None: new layers by reference, blobs made when exported
    compression_level: int | None = None
    rewrite_timestamp: bool = False


@dataclass(frozen=True)
class BuildOutcome:
    plan: BuildPlan
    results: dict[str, Result] = field(repr=False)
    statistics: SolveStatistics
    image: Any | None = None  # oci.StoredImage when exported to the store
    config: dict[str, Any] | None = field(default=None, repr=False)
    outputs: tuple[Any, ...] = ()  # oci OutputResult of each --output beyond the image store


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
    cache_to: Sequence[CacheSpec] = (),
    cache_client: Any = None,  # oci.RegistryClient, for type=registry cache exports
    push_registries: frozenset[str] = frozenset(),  # where the image goes next: cached layers there stay there
    emit: EventSink = ignore_events,
) -> BuildOutcome:
    plan = await plan_build(dockerfile, options, store, puller, pull=pull, emit=emit)
    runner = make_runner(plan)
    try:
        for _ in range(MAX_CACHE_RETRIES + 1):
            solver = Solver(plan.definition, runner, jobs=jobs, emit=emit, dockerfile=dockerfile.file)
            try:
                await solver.solve([plan.target.op] if plan.target.op else [])
                results = solver.results  # every op's result: history needs the intermediate ones
                if export is not None:
                    emit(Notice("exporting to image", trio.current_time()))
                    remote_only = await _prepare_layers(runner, plan, results, export, push_registries)
                break
            except RemoteCacheBroken as broken:
                if not broken.cache.ignore_error or not hasattr(runner, "drop_remote_cache"):
                    raise
                emit(Notice(f"WARNING: {broken}; building again without it", trio.current_time()))
                runner.drop_remote_cache(broken.cache)
        else:
            raise BuildError("imported caches keep failing", hint="build without --cache-from")
        outcome = BuildOutcome(plan, results, solver.statistics())
        if export is None:
            return outcome
        if cache_to and export.compression is None:
            # a cache export makes the layer blobs anyway; the image names the same blobs,
            # so a runner that imports the cache assembles the same manifest
            export = replace(export, compression="gzip")
        inline = _inline_cache(plan, results, runner) if any(s.kind == "inline" for s in cache_to) else None
        image, config = await trio.to_thread.run_sync(
            lambda: export_image(plan, results, store, export, options.source_date_epoch, inline=inline, remote_only=remote_only)
        )
        for spec in cache_to:
            if spec.kind != "inline":
                await _export_cache(spec, plan, results, runner, store, cache_client, emit)
        return BuildOutcome(plan, results, outcome.statistics, image, config)
    finally:
        close = getattr(runner, "close", None)
        if close is not None:
            close()


async def _prepare_layers(
    runner: OpRunner, plan: BuildPlan, results: dict[str, Result], export: ExportOptions, push_registries: frozenset[str]
) -> dict[str, Any]:
    """Layers known only from a remote cache: their blobs must be here to export them
    (and their files too, when the export rewrites timestamps) -- unless the image
    goes to the registry that has them.  Returns those, by snapshot."""
    target = results.get(plan.target.op) if plan.target.op else None
    if target is None or not hasattr(runner, "prepare_export"):
        return {}
    if export.rewrite_timestamp:
        await runner.ensure_local(target.chain)  # type: ignore[attr-defined]
        return {}
    return await runner.prepare_export(target.chain, leave_in=push_registries)  # type: ignore[attr-defined]


def _inline_cache(plan: BuildPlan, results: dict[str, Result], runner: OpRunner) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
    if not hasattr(runner, "keys"):
        return None
    return lambda layers: inline_records(plan, results, runner, layers)


async def _export_cache(
    spec: CacheSpec, plan: BuildPlan, results: dict[str, Result], runner: OpRunner, store: Any, client: Any, emit: EventSink
) -> None:
    """One --cache-to; a failure only warns unless the user said ignore-error=false."""
    if not hasattr(runner, "keys"):
        return
    where = spec.ref or spec.path
    emit(Notice(f"exporting cache to {where}", trio.current_time()))
    try:
        await export_cache(spec, plan, results, runner, store, client)
    except (PybuildError, OSError) as error:
        message = str(error) if isinstance(error, PybuildError) else (error.strerror or str(error))
        if not spec.ignore_error:
            raise BuildError(f"exporting cache to {where} failed: {message}") from None
        emit(Notice(f"WARNING: exporting cache to {where} failed: {message}", trio.current_time()))


def export_image(
    plan: BuildPlan, results: dict[str, Result], store: Any, export: ExportOptions, source_date_epoch: int | None,
    *, inline: Callable[[dict[str, Any]], dict[str, Any]] | None = None, remote_only: Mapping[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Write the target's layers and config into the image store and tag it.

    ``inline`` makes the cache records to embed in the config from the
    image's layers by snapshot (``--cache-to type=inline``).  ``remote_only``
    names layers (by snapshot) whose blobs stay in a registry.
    """
    from pybuild.oci import Layer

    snapshots = layers_of(plan.target, results)
    mtime = source_date_epoch if export.rewrite_timestamp else None
    remote_only = remote_only or {}
    compression = export.compression
    if compression is None and (inline is not None or mtime is not None or export.compression_level is not None):
        compression = "gzip"  # inline cache names the blobs a push sends; rewritten times need their own tar

    def layer(snapshot: str) -> Any:
        if snapshot in remote_only:
            return Layer(*remote_only[snapshot])
        if compression is None:
            return store.layer_by_reference(snapshot)
        return store.layer_for_snapshot(snapshot, compression, export.compression_level, mtime=mtime)

    layers = [layer(s) for s in snapshots]
    config = image_config(plan.target, results, created=time.time(), source_date_epoch=source_date_epoch)
    if inline is not None:
        config[INLINE_KEY] = inline(dict(zip(snapshots, layers)))
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
