"""One build, start to finish: convert (pulling missing bases), solve, export.

``build`` is the only entry the CLI needs; everything it touches comes in
as an argument, so tests can drive it with fakes.  Its export stage writes
the image into the store, then the cache exports (``--cache-to``), then
every other ``--output`` (archives, directories, pushes).

Several target platforms are one plan (``BuildPlan.targets``) and one solve:
every platform a RUN step needs is checked runnable before anything runs,
each target's image is exported as a one-platform build's would be, and an
image index names them all under the tags.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import field, replace
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import trio

from pybuild._frozen import frozen
from pybuild.errors import BuildError, Location, PybuildError
from pybuild.grammar import Dockerfile

from ._convert import BuildOptions, BuildPlan, MissingImages, convert
from ._devices import step_devices
from ._events import EventSink, Notice, ignore_events
from ._export import image_config, layers_of
from ._ops import ExecOp, FileOp, ImageSource
from ._platform import host_platform
from ._runner import BuildRunner, ExportPreparer, RemoteCacheRunner
from ._solver import Result, SolveStatistics, Solver

if TYPE_CHECKING:
    from pybuild.cache.remote import CacheSpec
    from pybuild.oci import (
        ImageStore, Layer, LayerSettings, Output, OutputResult, RegistryClient, ResolvedImage, StoredImage, StoredIndex,
    )

    from ._graph import Definition
    from ._layers import SnapshotLayerStore

MAX_PULL_ROUNDS = 5
MAX_CACHE_RETRIES = 4  # broken imported caches dropped before the build gives up


class Puller(Protocol):
    async def pull(self, ref: str, platform: str) -> None:
        """Bring the image ``ref`` into the local store."""


class EmulationCheck(Protocol):
    """What ``executors.emulation_status`` answers about a platform."""

    @property
    def runnable(self) -> bool: ...
    @property
    def reason(self) -> str: ...
    @property
    def hint(self) -> str: ...


Emulation = Callable[[str], EmulationCheck]

# Why a RUN step runs on this machine when a build sends RUN steps elsewhere (None: it
# goes to another machine, which runs its platform itself), asked before anything runs.
StaysLocal = Callable[["Definition", str, ExecOp], "str | None"]


@frozen
class RunnerFactory:
    """A ``make_runner`` whose runner sends RUN steps to other machines (``--remote-executor``):
    ``stays_local`` is its rule, so ``check_platforms`` asks for an emulator only for the
    foreign-platform steps that run here.  Made by ``dag.remote``: a local build passes a
    plain callable and never loads the rule."""

    make: Callable[[BuildPlan], BuildRunner]
    stays_local: StaysLocal

    def __call__(self, plan: BuildPlan) -> BuildRunner:
        return self.make(plan)


class Registries(Protocol):
    """The build's registry clients, made when first asked for (``oci.RegistryClient``)."""

    def client(self) -> RegistryClient:
        """The client pushes and layer downloads use."""

    def quick(self) -> RegistryClient:
        """The same client giving up sooner, for the build cache's documents."""


@frozen
class ExportOptions:
    tags: tuple[str, ...] = ()
    compression: str | None = None  # None: new layers by reference, blobs made when exported
    compression_level: int | None = None
    rewrite_timestamp: bool = False
    outputs: tuple[Output, ...] = ()  # every --output; none, or type=image alone: the image store only


@frozen
class BuildOutcome:
    plan: BuildPlan
    results: dict[str, Result] = field(repr=False)
    statistics: SolveStatistics
    image: StoredImage | None = None  # when exported to the store (several platforms: the first's)
    config: dict[str, Any] | None = field(default=None, repr=False)
    outputs: tuple[OutputResult, ...] = ()  # what each --output beyond the image store did
    index: StoredIndex | None = None  # several platforms: the index naming ``images``, under the tags
    images: tuple[StoredImage, ...] = ()  # several platforms: each target's image, in --platform order


class StoreImageChains:
    """Base images' layers as snapshots, from the local image store."""

    def __init__(self, store: ImageStore) -> None:
        self.store = store

    async def chain(self, source: ImageSource) -> tuple[str, ...]:
        def chain() -> tuple[str, ...]:
            image = self.store.image_by_manifest(source.manifest_digest)
            return self.store.snapshots_for(image)

        return await trio.to_thread.run_sync(chain)


async def plan_build(
    dockerfile: Dockerfile, options: BuildOptions, store: ImageStore, puller: Puller | None, *, pull: bool = False,
    emit: EventSink = ignore_events,
) -> BuildPlan:
    """Convert, pulling base images the store does not have (or all of them with ``pull``)."""
    pulled: set[tuple[str, str]] = set()
    lookup = store if not pull else _PullFirst(store, pulled)
    for _ in range(MAX_PULL_ROUNDS):
        try:
            plan = convert(dockerfile, options, lookup)
        except MissingImages as missing:
            wanted = [(ref, str(platform)) for ref, platform in missing.wanted]
            # a base for another platform than the host's is named with it
            shown = [ref if platform == str(host_platform()) else f"{ref} ({platform})" for ref, platform in wanted]
            if puller is None:
                raise BuildError(
                    f"base image not found locally: {', '.join(shown)}",
                    hint="bring it in with `pybuild pull` or `pybuild import ROOTFS.tar NAME`",
                ) from None
            for (ref, platform), name in zip(wanted, shown):
                emit(Notice(f"pulling {name}", trio.current_time()))
                await _pull_naming_line(puller, ref, platform, missing.where.get(ref))
                pulled.add((ref, platform))
            continue
        for warning in plan.warnings:
            emit(Notice(f"WARNING: {warning}", trio.current_time()))
        return plan
    raise BuildError("base images keep changing while they are pulled")


async def _pull_naming_line(puller: Puller, ref: str, platform: str, where: Location | None) -> None:
    """Pull ``ref``; a failure names the Dockerfile line that wants the image
    (BuildKit reports a base that cannot be resolved against its FROM or COPY
    --from), so "Dockerfile:2: GET manifest ... failed: cannot resolve ..."."""
    try:
        await puller.pull(ref, platform)
    except PybuildError as error:
        if error.location is None:
            error.location = where
        raise


class _PullFirst:
    """With --pull, every base image is pulled once before it is used."""

    def __init__(self, store: ImageStore, pulled: set[tuple[str, str]]) -> None:
        self.store = store
        self.pulled = pulled

    def lookup(self, ref: str, platform: object) -> ResolvedImage | None:
        if (ref, str(platform)) not in self.pulled:
            return None
        return self.store.lookup(ref, platform)


def target_plans(plan: BuildPlan) -> tuple[BuildPlan, ...]:
    """The plan of each target platform (one build: the plan itself)."""
    return plan.targets or (plan,)


def check_platforms(
    plan: BuildPlan, file: str | None = None, emulation: Emulation | None = None, stays_local: StaysLocal | None = None
) -> None:
    """Every platform a needed RUN step runs as must be runnable here, checked
    before anything runs: a build that cannot finish does not start (the host's
    platform needs no check; others are asked of ``executors``, which tests an
    emulator only for a platform asked about, and remembers the answer).  With
    ``stays_local`` (remote execution) only the steps that run here are checked:
    another machine runs its own platform's steps; the error says why one stays."""
    targets = [t.target.op for t in target_plans(plan) if t.target.op]
    needed = plan.definition.needed_by(targets)
    first: dict[str, tuple[str, str | None]] = {}  # platform -> (its first step here, why it is here)
    for digest, op in needed.ops.items():
        if not isinstance(op, ExecOp) or not op.platform or op.platform in first:
            continue
        why = stays_local(plan.definition, digest, op) if stays_local is not None else None
        if stays_local is None or why is not None:
            first[op.platform] = (digest, why)
    if not first:
        return
    if emulation is None:
        from pybuild.executors import emulation_status

        emulation = emulation_status
    for platform, (digest, why) in first.items():
        status = emulation(platform)
        if not status.runnable:
            span = plan.definition.meta[digest].span
            location = Location(file, span[0], span[1]) if span and file else None
            reason = f": {status.reason}" if status.reason else ""
            here = f" (this step runs here, not remotely: {why})" if why else ""
            raise BuildError(f"this machine cannot run {platform} steps{reason}{here}", hint=status.hint or None, location=location)


def check_devices(plan: BuildPlan, file: str | None, entitlements: frozenset[str], emit: EventSink = ignore_events) -> None:
    """Every RUN --device a needed step asks for is registered (or optional) and allowed to
    this build, checked before anything runs, as BuildKit checks entitlements when it loads
    the LLB (solver/llbsolver/vertex.go); the CDI specs are read only when a step asks.
    An optional device no spec registers is skipped with a warning, as BuildKit's
    cdidevices manager logs "Optional device ... is not registered"."""
    targets = [t.target.op for t in target_plans(plan) if t.target.op]
    needed = plan.definition.needed_by(targets)
    steps = [(digest, op) for digest, op in needed.ops.items() if isinstance(op, ExecOp) and op.devices]
    if not steps:
        return
    from pybuild.executors import load_cdi_registry

    registry = load_cdi_registry()
    for digest, op in steps:
        try:
            step_devices(registry, op.devices, entitlements)
        except BuildError as e:
            span = plan.definition.meta[digest].span
            location = Location(file, span[0], span[1]) if span and file else None
            raise BuildError(e.message, hint=e.hint, location=e.location or location) from None
        for device in op.devices:
            if not device.required and not registry.resolve(device.name, False):
                emit(Notice(f"WARNING: optional device {device.name!r} is not registered, skipped", trio.current_time()))


async def build(
    dockerfile: Dockerfile,
    options: BuildOptions,
    *,
    store: ImageStore,
    make_runner: Callable[[BuildPlan], BuildRunner],
    puller: Puller | None = None,
    pull: bool = False,
    jobs: int | None = 2,  # None: no limit on steps running at once
    export: ExportOptions | None = ExportOptions(),
    cache_to: Sequence[CacheSpec] = (),
    registries: Registries | None = None,  # for cache exports to a registry and pushes
    stdout: BinaryIO | None = None,  # where an --output to "-" goes
    emit: EventSink = ignore_events,
    emulation: Emulation | None = None,  # how a foreign platform is known runnable (default: executors')
) -> BuildOutcome:
    plan = await plan_build(dockerfile, options, store, puller, pull=pull, emit=emit)
    check_platforms(plan, dockerfile.file, emulation, make_runner.stays_local if isinstance(make_runner, RunnerFactory) else None)
    check_devices(plan, dockerfile.file, options.entitlements, emit)
    runner = make_runner(plan)
    try:
        early = _early_layers(plan, runner.layers, export, cache_to)
        solver, results = await _solve(plan, runner, dockerfile, export, jobs, emit, early)
        if export is None:
            return BuildOutcome(plan, results, solver.statistics())
        if plan.targets:
            return await _export_platforms(plan, results, solver, runner, store, export, options, cache_to, registries, stdout, emit)
        inline = any(s.kind == "inline" for s in cache_to)
        image, config = await trio.to_thread.run_sync(
            lambda: export_image(
                plan, results, store, export, options.source_date_epoch, layers=runner.layers,
                inline=(lambda layers: _inline_records(plan, results, runner.keys, layers)) if inline else None,
                cache_export=bool(cache_to),
            )
        )
        await _export_caches(cache_to, plan, results, runner, store, registries, emit)
        outputs = await _export_outputs(store, image, export, registries, stdout, emit)
        return BuildOutcome(plan, results, solver.statistics(), image, config, outputs)
    finally:
        runner.close()


async def _export_platforms(
    plan: BuildPlan, results: dict[str, Result], solver: Solver, runner: BuildRunner, store: ImageStore, export: ExportOptions,
    options: BuildOptions, cache_to: Sequence[CacheSpec], registries: Registries | None, stdout: BinaryIO | None,
    emit: EventSink,
) -> BuildOutcome:
    """Several platforms: each target's image as a one-platform build writes it
    (its own layers and config, inline cache records in each), then the index
    naming them, which the tags point at; cache exports hold every target's
    records; the outputs take the index."""
    inline = any(s.kind == "inline" for s in cache_to)
    untagged = replace(export, tags=())

    def export_one(target: BuildPlan) -> tuple[StoredImage, dict[str, Any]]:
        def records(layers: dict[str, Layer]) -> dict[str, Any]:
            return _inline_records(target, results, runner.keys, layers)

        return export_image(
            target, results, store, untagged, options.source_date_epoch, layers=runner.layers,
            inline=records if inline else None, cache_export=bool(cache_to),
        )

    made = [await trio.to_thread.run_sync(export_one, target) for target in plan.targets]
    images = tuple(image for image, _ in made)
    index = await trio.to_thread.run_sync(lambda: store.add_index(images, export.tags))
    await _export_caches(cache_to, plan, results, runner, store, registries, emit)
    outputs = await _export_outputs(store, index, export, registries, stdout, emit)
    return BuildOutcome(plan, results, solver.statistics(), images[0], made[0][1], outputs, index, images)


async def _export_caches(
    cache_to: Sequence[CacheSpec], plan: BuildPlan, results: dict[str, Result], runner: RemoteCacheRunner, store: ImageStore,
    registries: Registries | None, emit: EventSink,
) -> None:
    for spec in cache_to:
        if spec.kind != "inline":
            client = registries.quick() if registries is not None and spec.kind == "registry" else None
            await _export_cache(spec, plan, results, runner, store, client, emit)


async def _solve(
    plan: BuildPlan, runner: BuildRunner, dockerfile: Dockerfile, export: ExportOptions | None, jobs: int | None, emit: EventSink,
    after: Callable[[str, Result], Awaitable[None]] | None = None,
) -> tuple[Solver, dict[str, Result]]:
    """Solve the plan (and bring here what the export needs); a broken imported
    cache that may be ignored is dropped and the plan solved again without it."""
    for _ in range(MAX_CACHE_RETRIES + 1):
        solver = Solver(plan.definition, runner, jobs=jobs, emit=emit, dockerfile=dockerfile.file, after=after)
        try:
            # every target platform in one solve: an op they share runs once
            await solver.solve([t.target.op for t in target_plans(plan) if t.target.op])
            results = solver.results  # every op's result: history needs the intermediate ones
            if export is not None:
                emit(Notice("exporting to image", trio.current_time()))
                for target in target_plans(plan):
                    await _prepare_layers(runner, target, results, export)
            return solver, results
        except PybuildError as broken:
            from pybuild.cache.remote import RemoteCacheBroken  # raised only by an imported cache: loaded by then

            if not isinstance(broken, RemoteCacheBroken) or not broken.cache.ignore_error:
                raise
            emit(Notice(f"WARNING: {broken}; building again without it", trio.current_time()))
            runner.drop_remote_cache(broken.cache)
    raise BuildError("imported caches keep failing", hint="build without --cache-from")


def _early_layers(
    plan: BuildPlan, layers: SnapshotLayerStore, export: ExportOptions | None, cache_to: Sequence[CacheSpec]
) -> Callable[[str, Result], Awaitable[None]] | None:
    """The solver's ``after``: each layer the image will have gets its diffID (the hash of
    its tar) as soon as its step is done, beside the steps still to run, instead of all of
    them one after the other at the export.  Only for what the export then asks for
    exactly so (``layers.layer(snapshot, None)``: the plain store, one platform, no cache
    export, no rewritten times); the export finds them made."""
    if export is None or plan.targets or plan.target.op is None or cache_to or export.rewrite_timestamp:
        return None
    if _layer_settings(export, cache_export=False, inline_cache=False).compression is not None:
        return None
    chain = _filesystem_chain(plan.definition, plan.target.op)

    async def after(digest: str, result: Result) -> None:
        from pybuild.executors import run_cpu_bound

        snapshot = result.layer
        if digest in chain and snapshot is not None and not result.cached:
            try:
                await run_cpu_bound(layers.layer, snapshot, None)
            except PybuildError:
                pass  # the export asks again, and reports what is wrong in its own words

    return after


def _filesystem_chain(definition: Definition, top: str) -> frozenset[str]:
    """``top`` and the ops below it whose layers its filesystem is made of (an ExecOp's
    rootfs, a FileOp's base), down to a source or a merge."""
    chain: set[str] = set()
    digest: str | None = top
    while digest is not None and digest not in chain:
        chain.add(digest)
        op = definition.ops[digest]
        digest = op.rootfs if isinstance(op, ExecOp) else op.base if isinstance(op, FileOp) else None
    return frozenset(chain)


async def _prepare_layers(runner: ExportPreparer, plan: BuildPlan, results: dict[str, Result], export: ExportOptions) -> None:
    """Layers known only from a remote cache: their blobs must be here to export them
    (and their files too, when the export rewrites timestamps) -- unless the image
    goes to the registry that has them (the runner's layers then know them as remote only)."""
    target = results.get(plan.target.op) if plan.target.op else None
    if target is None:
        return
    if export.rewrite_timestamp:
        await runner.ensure_local(target.chain)
        return
    await runner.prepare_export(target.chain, leave_in=push_registries(export))


def push_registries(export: ExportOptions) -> frozenset[str]:
    """Registries every output pushes to, when nothing else needs the layers' bytes:
    layers cached there need not be downloaded only to be uploaded again."""
    from pybuild.oci import parse_reference

    outputs = export.outputs
    if any(o.type not in ("image", "registry") for o in outputs) or not any(o.push for o in outputs):
        return frozenset()
    names = [n for o in outputs if o.push for n in (o.names or export.tags)]
    return frozenset(parse_reference(n).registry for n in names)


async def _export_outputs(
    store: ImageStore, built: StoredImage | StoredIndex, export: ExportOptions, registries: Registries | None,
    stdout: BinaryIO | None, emit: EventSink,
) -> tuple[OutputResult, ...]:
    """Every --output beyond the image store (which ``export_image`` wrote): of the
    image, or of the index a several-platform build made."""
    from pybuild.oci import Output

    if export.outputs in ((), (Output("image"),)):
        return ()
    from pybuild.oci import export_outputs

    emit(Notice("exporting outputs", trio.current_time()))
    pushing = any(o.push for o in export.outputs)
    client = registries.client() if registries is not None and pushing else None
    done = await export_outputs(store, built, export.outputs, tags=export.tags, stdout=stdout, client=client)
    return tuple(done)


async def _export_cache(
    spec: CacheSpec, plan: BuildPlan, results: dict[str, Result], runner: RemoteCacheRunner, store: ImageStore,
    client: RegistryClient | None, emit: EventSink,
) -> None:
    """One --cache-to; a failure only warns unless the user said ignore-error=false."""
    where = spec.ref or spec.path
    from ._cache_wiring import export_cache  # the remote cache's modules load only for a build that exports one

    emit(Notice(f"exporting cache to {where}", trio.current_time()))
    try:
        await export_cache(spec, plan, results, runner, store.root.blobs, client)
    except (PybuildError, OSError) as error:
        message = str(error) if isinstance(error, PybuildError) else (error.strerror or str(error))
        if not spec.ignore_error:
            raise BuildError(f"exporting cache to {where} failed: {message}") from None
        emit(Notice(f"WARNING: exporting cache to {where} failed: {message}", trio.current_time()))


def _inline_records(plan: BuildPlan, results: Mapping[str, Result], keys: Mapping[str, str], layers: Mapping[str, Layer]) -> dict[str, Any]:
    """``--cache-to type=inline``'s records; the remote cache's modules load only for a build that asks for them."""
    from ._cache_wiring import inline_records

    return inline_records(plan, results, keys, layers)


def export_image(
    plan: BuildPlan, results: dict[str, Result], store: ImageStore, export: ExportOptions, source_date_epoch: int | None,
    *, layers: SnapshotLayerStore, inline: Callable[[dict[str, Layer]], dict[str, Any]] | None = None, cache_export: bool = False,
) -> tuple[StoredImage, dict[str, Any]]:
    """Write the target's layers and config into the image store and tag it.

    ``layers`` gives each snapshot's layer (those a registry keeps, as they
    are there).  ``inline`` makes the cache records to embed in the config
    from the image's layers by snapshot (``--cache-to type=inline``);
    ``cache_export``: a cache export makes the layers' blobs too.
    """
    snapshots = layers_of(plan.target, results)
    mtime = source_date_epoch if export.rewrite_timestamp else None
    settings = _layer_settings(export, cache_export=cache_export, inline_cache=inline is not None)
    made = [layers.layer(s, settings.compression, settings.level, mtime=mtime) for s in snapshots]
    config = image_config(plan.target, results, created=time.time(), source_date_epoch=source_date_epoch)
    if inline is not None:
        from pybuild.cache.remote import INLINE_KEY

        config[INLINE_KEY] = inline(dict(zip(snapshots, made)))
    config["rootfs"]["diff_ids"] = [layer.diff_id for layer in made]
    expected = sum(1 for entry in config["history"] if not entry.get("empty_layer"))
    if expected != len(made):
        raise BuildError(
            f"internal error: {len(made)} layers but {expected} history entries with layers",
            hint="this is a pybuild bug; please report it",
        )
    if mtime is None:
        store.remember_chain([layer.diff_id for layer in made], snapshots)
    image = store.add_image(config, made, export.tags)
    return image, config


def _layer_settings(export: ExportOptions, *, cache_export: bool, inline_cache: bool) -> LayerSettings:
    """How the image's new layers are made: oci's one compression rule decides."""
    from pybuild.oci import LayerSettings, layer_compression

    return layer_compression(
        LayerSettings(export.compression, export.compression_level),
        outputs=[o.layers for o in export.outputs],
        cache_export=cache_export,
        inline_cache=inline_cache,
        rewrite_timestamp=export.rewrite_timestamp,
    )


def step_ids(plan: BuildPlan, file: str) -> dict[str, str]:
    """Stable names of steps across builds, to explain cache misses.

    With several platforms, a step one target alone needs is named with its
    platform too, so its miss is explained against the same platform's last
    run, never the other one's."""
    own = _platform_of_unshared_ops(plan)
    out = {}
    for digest, meta in plan.definition.meta.items():
        if meta.stage is not None and meta.step is not None and not meta.internal:
            platform = f"@{own[digest]}" if digest in own else ""
            out[digest] = f"{file}:{meta.stage}:{meta.step[0]}{platform}"
    return out


def _platform_of_unshared_ops(plan: BuildPlan) -> dict[str, str]:
    """Each op one target platform alone needs, with that platform."""
    seen: dict[str, list[str]] = {}
    for target in plan.targets:
        if target.target.op:
            for digest in plan.definition.needed_by([target.target.op]).ops:
                seen.setdefault(digest, []).append(str(target.platform))
    return {digest: platforms[0] for digest, platforms in seen.items() if len(platforms) == 1}


__all__: Sequence[str] = [
    "BuildOutcome", "Emulation", "EmulationCheck", "ExportOptions", "Puller", "Registries", "RunnerFactory", "StaysLocal",
    "StoreImageChains", "build",
    "check_devices", "check_platforms", "plan_build", "push_registries", "step_ids", "target_plans",
]
