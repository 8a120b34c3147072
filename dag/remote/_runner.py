"""The remote runner: RUN steps as REAPI Actions, and the action cache as a shared build cache.

It wraps the local ``Worker`` and satisfies the same Protocols (``BuildRunner``).
Keys, local cache lookups, file operations and whatever must stay local (a
secret or ssh mount, ``--network=host``, the build context mounted) are the
local runner's.  After a local miss:

- a step is first looked up in the action caches (``--cache-from type=reapi``,
  and the executor's own) under its *cache action*, an Action named by the
  step's pybuild cache key alone (``_action.cache_action``): a hit's layer is
  downloaded, checked and made the step's snapshot, as a registry cache's is;
- an eligible RUN step is sent with ``Execute`` (its input layers uploaded
  first, those the CAS misses); its ``layer.tar`` is checked (the CAS digest,
  result.json's diffID, the tar applied through ``oci.apply_layer``) and becomes
  the step's snapshot; a layer that fails a check is refused and the step runs
  here instead, with a warning;
- a result made remotely is recorded under its cache action in the executor's
  action cache; a result made here (or remotely) in the caches ``--cache-to
  type=reapi`` names, except a step's with a secret or ssh mount: what such a
  step made never leaves.  Without ``--cache-to``, a layer made here goes to
  the executor's CAS only as the input of a remote step.

Every REAPI call is synchronous (``pybuild.reapi``) and runs in a thread.
"""

from __future__ import annotations

import collections
import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import trio

from pybuild.errors import BuildError, Location, PybuildError, StepFailed

from .._build import Emulation, RunnerFactory
from .._events import EventSink, Notice, StepLog
from .._ops import ExecOp, FileOp, GitSource, HttpSource, LocalSource, Op
from .._solver import CacheKey, Result
from .._worker import OUTPUT_TAIL_LINES, output_key
from ._action import (
    LAYER_OUTPUT,
    RESULT_OUTPUT,
    BadStep,
    RemoteResult,
    cache_action,
    decode_result,
    encode_step,
    remote_step,
    result_json,
)

if TYPE_CHECKING:
    from pybuild.cache import Lease, Root
    from pybuild.cache.remote import RemoteCache, RemoteRecord
    from pybuild.reapi import ActionResult, Digest, ExecuteResponse, RemoteApi

    from .._convert import BuildPlan
    from .._graph import Definition
    from .._layers import SnapshotLayerStore
    from .._runner import BuildRunner
    from .._worker import WorkerOptions

log = logging.getLogger(__name__)

_T = TypeVar("_T")
# Execute blocks a thread for the whole step: many steps in flight need more than trio's 40
_EXECUTE_THREADS = 512
DEADLINE_EXCEEDED = 4
_REPORT_LIMIT = 64 * 1024  # result.json is a few dozen bytes
_OUTPUT_LIMIT = 8 * 1024 * 1024  # a step's stdout or stderr read from the CAS to show
MEMORY_LIMIT = "memory limit"


class LocalRunner(Protocol):
    """What the remote runner uses of the local one (``Worker`` has all of it)."""

    @property
    def root(self) -> Root: ...

    @property
    def definition(self) -> Definition: ...

    @property
    def options(self) -> WorkerOptions: ...

    @property
    def dockerfile_name(self) -> str: ...

    @property
    def layers(self) -> SnapshotLayerStore: ...

    @property
    def keys(self) -> Mapping[str, str]: ...

    @property
    def pending_remote(self) -> Mapping[str, tuple[RemoteRecord, RemoteCache, str | None]]: ...

    @property
    def used_cache_mounts(self) -> Mapping[str, Path]: ...

    async def cache_key(self, digest: str, op: Op, inputs: Mapping[str, Result]) -> CacheKey: ...

    async def load(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result]) -> Result | None: ...

    async def explain_miss(self, digest: str, op: Op, key: CacheKey) -> str | None: ...

    async def run(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result], emit: EventSink) -> Result: ...

    async def ensure_local(self, chain: Sequence[str]) -> None: ...

    async def prepare_export(self, chain: Sequence[str], *, leave_in: frozenset[str] = frozenset()) -> None: ...

    async def adopt_remote_layer(self, layer: str) -> None: ...

    def drop_remote_cache(self, cache: RemoteCache) -> None: ...

    def close(self) -> None: ...

    @property
    def lease(self) -> Lease: ...


@dataclass(frozen=True)
class RemoteSettings:
    """Where steps go: ``executor`` runs eligible RUN steps (None: all run here);
    ``cache_from``/``cache_to`` are action caches read and written (the executor is both)."""

    executor: RemoteApi | None = None
    cache_from: tuple[RemoteApi, ...] = ()
    cache_to: tuple[RemoteApi, ...] = ()
    fallback_local: bool = False
    host_platform: str = "linux/amd64"
    # whether this machine runs a platform's steps (``executors.emulation_status`` when None):
    # asked when a step sent away comes back to run here
    emulation: Emulation | None = None


def local_reason(op: Op, inputs: Mapping[str, Result], definition: Definition) -> str | None:
    """Why a step cannot run remotely, in a few words; None if it can."""
    if isinstance(op, FileOp):
        return "file operation"
    if not isinstance(op, ExecOp):
        return "not a RUN step"
    if reason := _exec_reason(op):
        return reason
    for dependency in op.inputs():
        if isinstance(definition.ops.get(dependency), LocalSource):
            return "build context mounted"
        if inputs[dependency].path is not None:
            return "local input mounted"
    return None


def planned_local_reason(definition: Definition, digest: str, op: ExecOp, *, memory_limit: bool = False) -> str | None:
    """Why the remote runner will run a RUN step here, told from the plan before anything
    runs (``local_reason``'s rule: a source that is a host directory is known by its op);
    ``memory_limit``: --memory is given, which a worker would not apply."""
    if reason := _exec_reason(op):
        return reason
    for dependency in op.inputs():
        source = definition.ops.get(dependency)
        if isinstance(source, LocalSource):
            return "build context mounted"
        if isinstance(source, (HttpSource, GitSource)):
            return "local input mounted"
    return MEMORY_LIMIT if memory_limit else None


def _exec_reason(op: ExecOp) -> str | None:
    """What in the RUN step itself keeps it here: a secret, the host, a device."""
    for mount in op.mounts:
        if mount.kind in ("secret", "ssh"):
            return f"{mount.kind} mount"
    if op.network == "host":
        return "network host"
    if op.security == "insecure":
        return "security insecure"
    if op.devices:
        return "device"
    return None


def remote_runner_factory(make: Callable[[BuildPlan], BuildRunner], *, memory_limit: bool = False) -> RunnerFactory:
    """``make`` (a factory of remote runners sending steps to an executor) with the rule
    saying which RUN steps stay here, so the build checks emulators only for those."""
    return RunnerFactory(make, functools.partial(planned_local_reason, memory_limit=memory_limit))


def _private(op: Op) -> bool:
    """A step whose result never leaves this machine (it saw a secret or an ssh agent)."""
    return isinstance(op, ExecOp) and any(m.kind in ("secret", "ssh") for m in op.mounts)


class RemoteRunner:
    """A ``BuildRunner`` that sends eligible steps to a REAPI cluster and shares results through action caches."""

    def __init__(self, local: LocalRunner, settings: RemoteSettings, *, emit: EventSink | None = None) -> None:
        self.local = local
        self.emit = emit  # for what load() has to say (the solver gives run() its own sink)
        self.settings = settings
        self.root = local.root
        self._executor_limit = trio.CapacityLimiter(_EXECUTE_THREADS)
        self._plain: dict[str, tuple[str, int]] = {}  # snapshot -> (diffID, tar size)
        self._plain_locks: dict[str, trio.Lock] = collections.defaultdict(trio.Lock)
        self._uploaded: set[tuple[int, Digest]] = set()  # (id of the remote, digest)
        self._upload_locks: dict[Digest, trio.Lock] = collections.defaultdict(trio.Lock)
        self._warned_update = False
        executor = (settings.executor,) if settings.executor is not None else ()
        self._readers = tuple(dict.fromkeys((*settings.cache_from, *executor)))
        # what ran here is recorded only where --cache-to asks: the executor gets a layer
        # made here only as the input of a remote step (a big COPY is not uploaded for nothing)
        self._writers = tuple(dict.fromkeys(settings.cache_to))

    # ------------------------------------------------------------ delegated

    @property
    def keys(self) -> Mapping[str, str]:
        return self.local.keys

    @property
    def layers(self) -> SnapshotLayerStore:
        return self.local.layers

    @property
    def pending_remote(self) -> Mapping[str, tuple[RemoteRecord, RemoteCache, str | None]]:
        return self.local.pending_remote

    @property
    def used_cache_mounts(self) -> Mapping[str, Path]:
        return self.local.used_cache_mounts

    async def cache_key(self, digest: str, op: Op, inputs: Mapping[str, Result]) -> CacheKey:
        return await self.local.cache_key(digest, op, inputs)

    async def explain_miss(self, digest: str, op: Op, key: CacheKey) -> str | None:
        return await self.local.explain_miss(digest, op, key)

    async def ensure_local(self, chain: Sequence[str]) -> None:
        await self.local.ensure_local(chain)

    async def prepare_export(self, chain: Sequence[str], *, leave_in: frozenset[str] = frozenset()) -> None:
        await self.local.prepare_export(chain, leave_in=leave_in)

    async def adopt_remote_layer(self, layer: str) -> None:
        await self.local.adopt_remote_layer(layer)

    def drop_remote_cache(self, cache: RemoteCache) -> None:
        self.local.drop_remote_cache(cache)

    def close(self) -> None:
        """End the local runner's lease and close every connection (each once)."""
        self.local.close()
        remotes = (*self._readers, *self._writers, *((self.settings.executor,) if self.settings.executor else ()))
        for remote in {id(r): r for r in remotes}.values():
            remote.close()

    # ------------------------------------------------------------ load

    async def load(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result]) -> Result | None:
        found = await self.local.load(digest, op, key, inputs)
        if found is not None or not isinstance(op, (ExecOp, FileOp)) or op.ignore_cache or _private(op):
            return found
        action = cache_action(key.key, self._platform(op))
        for remote in self._readers:
            try:
                result = await self._call(remote.get_action_result, action.action_digest)
            except PybuildError as error:
                if remote is self.settings.executor:
                    raise
                # a cache is only a speed-up: one that fails is left alone for the rest of the build
                self._readers = tuple(r for r in self._readers if r is not remote)
                self._say(f"warning: --cache-from {remote.url} is not used any more: {error.message}")
                continue
            if result is None:
                continue
            try:
                return await self._adopt(digest, op, key, inputs, remote, result, cached=True)
            except (PybuildError, OSError) as error:
                text = error.message if isinstance(error, PybuildError) else str(error)
                self._say(f"warning: the cached result {remote.url} has for step {self._name(digest)} is refused: {text}; it runs instead")
        return None

    # ------------------------------------------------------------ run

    async def run(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result], emit: EventSink) -> Result:
        executor = self.settings.executor
        if executor is not None:
            reason = local_reason(op, inputs, self.local.definition)
            if reason is None and isinstance(op, ExecOp) and self.local.options.memory_limit is not None:
                reason = MEMORY_LIMIT  # --memory is not part of the Action: a worker would not apply it
            if reason is None and isinstance(op, ExecOp):
                made = await self._run_remote(executor, digest, op, key, inputs, emit)
                if made is not None:
                    return made
            elif reason is not None:
                emit(StepLog(digest, "stderr", f"[local: {reason}]\n".encode(), trio.current_time()))
        result = await self.local.run(digest, op, key, inputs, emit)
        if not result.cached and result.layer is not None and not _private(op) and isinstance(op, (ExecOp, FileOp)):
            await self._record(op, key, result.layer, emit)
        return result

    async def _run_remote(
        self, executor: RemoteApi, digest: str, op: ExecOp, key: CacheKey, inputs: Mapping[str, Result], emit: EventSink
    ) -> Result | None:
        """The step run by the cluster, or None when its result was refused (it then runs here)."""
        for result in inputs.values():
            await self.local.ensure_local(result.chain)
        chains = {d: inputs[d].chain for d in op.inputs()}
        sizes: dict[str, int] = {}
        diff_chains: dict[str, tuple[str, ...]] = {}
        for dependency, chain in chains.items():
            plain = [await self._plain_tar(snapshot) for snapshot in chain]
            diff_chains[dependency] = tuple(diff_id for diff_id, _ in plain)
            sizes.update(plain)
        step = remote_step(op, key.key, self._platform(op), diff_chains)
        encoded = encode_step(step, sizes, timeout=self.local.options.step_timeout)
        # the cache action's few blobs go up with the step's: one FindMissingBlobs, one batch
        cached_as = cache_action(key.key, step.platform)
        blobs = {**encoded.blobs, **cached_as.blobs}
        await self._upload(executor, blobs, {d: self._blob_path(diff_id) for d, diff_id in encoded.layers.items()})
        emit(StepLog(digest, "stderr", f"[remote] {executor.url}\n".encode(), trio.current_time()))
        try:
            response = await self._call(
                functools.partial(executor.execute, encoded.action_digest, skip_cache_lookup=op.ignore_cache),
                limiter=self._executor_limit,
            )
        except PybuildError as error:
            if not self.settings.fallback_local:
                raise
            self._check_runs_here(digest, op, f"{error.message} (--remote-fallback=local)")
            emit(Notice(f"warning: {error.message}; running the step here (--remote-fallback=local)", trio.current_time()))
            return None
        tail = await self._show_output(executor, digest, response.result, emit)
        self._check_status(digest, op, response, tail)
        try:
            made = await self._adopt(digest, op, key, inputs, executor, response.result, cached=response.cached)
        except (PybuildError, OSError) as error:
            text = error.message if isinstance(error, PybuildError) else str(error)
            self._check_runs_here(digest, op, f"the layer {executor.url} made for step {self._name(digest)} is refused: {text}")
            emit(Notice(f"warning: the layer {executor.url} made for step {self._name(digest)} is refused: {text}; running it here", trio.current_time()))
            return None
        # the executor has the worker's result's blobs; another cache written to gets them from here
        await self._record_result(op, key, response.result, (executor,), emit)
        await self._record(op, key, made.layer, emit, [w for w in self._writers if w is not executor])
        return made

    def _check_runs_here(self, digest: str, op: ExecOp, why: str) -> None:
        """A step sent away that comes back (``why``) runs here only if this machine runs its
        platform: the build asked for an emulator only for the steps planned to stay here, and
        a foreign step must never run natively by mistake."""
        if not op.platform:  # an ExecOp names its platform only when it is not this host's
            return
        if self.settings.emulation is not None:
            status = self.settings.emulation(op.platform)
        else:
            from pybuild.executors import emulation_status

            status = emulation_status(op.platform)
        if status.runnable:
            return
        meta = self.local.definition.meta[digest]
        reason = f": {status.reason}" if status.reason else ""
        raise BuildError(
            f"{why}; it cannot run here instead: this machine cannot run {op.platform} steps{reason}",
            hint=status.hint or None,
            location=Location(self.local.dockerfile_name, *meta.span) if meta.span else None,
        )

    def _check_status(self, digest: str, op: ExecOp, response: ExecuteResponse, tail: str) -> None:
        """A step that did not complete fails as a local one does (its line, exit code, last output)."""
        if response.status_code not in (0, DEADLINE_EXCEEDED):
            raise BuildError(f"remote execution of {self._name(digest)} failed: {response.message or 'status ' + str(response.status_code)}")
        if response.status_code == 0 and response.result.exit_code == 0:
            return
        why = "timed out" if response.status_code == DEADLINE_EXCEEDED else f"exit code: {response.result.exit_code}"
        meta = self.local.definition.meta[digest]
        raise StepFailed(
            f'{meta.description}: process "{" ".join(op.args)}" did not complete successfully: {why}',
            exit_code=response.result.exit_code,
            output_tail=tail,
            location=Location(self.local.dockerfile_name, *meta.span) if meta.span else None,
        )

    async def _show_output(self, remote: RemoteApi, digest: str, result: ActionResult, emit: EventSink) -> str:
        """The step's stdout and stderr as progress output; returns their last lines."""
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        for stream, raw, blob in (("stdout", result.stdout_raw, result.stdout_digest), ("stderr", result.stderr_raw, result.stderr_digest)):
            data = raw
            if not data and blob is not None and blob.size_bytes > _OUTPUT_LIMIT:
                data = f"[remote] {stream} of {blob.size_bytes} bytes not shown\n".encode()
            elif not data and blob is not None and blob.size_bytes:
                data = await self._call(remote.read, blob)
            if data:
                emit(StepLog(digest, stream, data, trio.current_time()))
                tail.extend(line.decode("utf-8", "replace") for line in data.rstrip(b"\n").split(b"\n"))
        return "\n".join(tail)

    # ------------------------------------------------------------ results into snapshots

    async def _adopt(
        self, digest: str, op: ExecOp | FileOp, key: CacheKey, inputs: Mapping[str, Result], remote: RemoteApi,
        result: ActionResult, *, cached: bool,
    ) -> Result:
        """The step's snapshot made from a remote result, every claim in it checked first."""
        from pybuild.oci import Layer, apply_layer, layer_media_type, unpack_limit
        from pybuild.oci import Compression

        layer_file, report = result.output(LAYER_OUTPUT), result.output(RESULT_OUTPUT)
        if result.exit_code != 0 or layer_file is None or report is None:
            raise BadStep(f"the result has no {LAYER_OUTPUT} and {RESULT_OUTPUT}")
        if report.digest.size_bytes > _REPORT_LIMIT:  # never read what another machine says unbounded
            raise BadStep(f"{RESULT_OUTPUT} is {report.digest.size_bytes} bytes")
        diff_id = "sha256:" + layer_file.digest.hash
        # a forced rerun (--no-cache) must not fold into the snapshot it replaces (as the Worker's)
        snapshot_id = key.key.split(":", 1)[1] if not op.ignore_cache else os.urandom(16).hex()
        scratch = self.root.tmp_dir("remote-layer-")
        try:
            tar = scratch / LAYER_OUTPUT
            # both at once (one round trip), each checked by its sha256 and size; nothing is applied before
            said = decode_result(await self._read_and_download(remote, report.digest, layer_file.digest, tar))
            if said.diff_id != diff_id:
                raise BadStep(f"{RESULT_OUTPUT} names layer {said.diff_id}, but {LAYER_OUTPUT} is {diff_id}")
            base = op.rootfs if isinstance(op, ExecOp) else op.base
            base_chain = inputs[base].chain if base else ()
            await self.local.ensure_local(base_chain)

            def unpack() -> str:
                active = self.root.snapshots.new_active()
                try:
                    with open(tar, "rb") as stream:
                        stats = apply_layer(stream, Path(active.upper), size_budget=unpack_limit(layer_file.digest.size_bytes))
                    if stats.diff_id != diff_id:
                        raise BadStep(f"{LAYER_OUTPUT} unpacks to {stats.diff_id}, not {diff_id}")
                except BaseException:
                    self.root.snapshots.discard(active)
                    raise
                self.local.lease.add([snapshot_id, diff_id])
                made = self.root.snapshots.commit(active, base_chain[0] if base_chain else None, snapshot_id=snapshot_id)
                _store_blob(self.root, tar, diff_id)
                return made

            layer = await trio.to_thread.run_sync(unpack)
        finally:
            await trio.to_thread.run_sync(shutil.rmtree, scratch, True)
        size = layer_file.digest.size_bytes
        plain = Layer(diff_id, diff_id, size, layer_media_type(Compression.NONE))
        await trio.to_thread.run_sync(self.local.layers.adopt, layer, plain)
        self._plain[layer] = (diff_id, size)
        self._uploaded.add((id(remote), layer_file.digest))  # read from there just now: a next step's input is not asked for
        from pybuild.cache import CacheRecord

        now = time.time()
        await trio.to_thread.run_sync(self.root.index.record, key.key, CacheRecord(snapshot_id=layer, created=now, last_used=now))
        return Result(output_key(key.key, layer), chain=(layer, *base_chain), layer=layer, cached=cached, created=now)

    async def _read_and_download(self, remote: RemoteApi, blob: Digest, layer: Digest, path: Path) -> bytes:
        """``blob``'s bytes, with ``layer`` downloaded to ``path`` meanwhile; the first error raised as itself."""
        read: list[bytes | Exception] = []

        async def read_blob() -> None:
            try:
                read.append(await self._call(remote.read, blob))
            except Exception as error:  # raised below, not as a group
                read.append(error)

        failed: Exception | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_blob)
            try:
                await self._call(remote.download, layer, path)
            except Exception as error:
                failed = error
        if isinstance(read[0], Exception):
            raise read[0]
        if failed is not None:
            raise failed
        return read[0]

    # ------------------------------------------------------------ results into the action caches

    async def _record(
        self, op: ExecOp | FileOp, key: CacheKey, layer: str | None, emit: EventSink, writers: Sequence[RemoteApi] | None = None
    ) -> None:
        """A result made here, put in every action cache written to (its layer uploaded if missing)."""
        writers = self._writers if writers is None else writers
        if not writers or layer is None:
            return
        diff_id, size = await self._plain_tar(layer)
        from pybuild import reapi

        report = result_json(RemoteResult(diff_id))
        layer_digest = reapi.Digest(diff_id.split(":", 1)[1], size)
        report_digest = reapi.Digest.of(report)
        result = reapi.ActionResult(
            exit_code=0,
            output_files=(reapi.OutputFile(LAYER_OUTPUT, layer_digest), reapi.OutputFile(RESULT_OUTPUT, report_digest)),
        )
        stored = []
        for remote in writers:
            try:
                await self._upload(remote, {report_digest: report}, {layer_digest: self._blob_path(diff_id)})
                stored.append(remote)
            except PybuildError as error:
                self._warn_update(remote, error, emit)
        await self._record_result(op, key, result, stored, emit)

    async def _record_result(
        self, op: ExecOp | FileOp, key: CacheKey, result: ActionResult, writers: Sequence[RemoteApi], emit: EventSink | None = None
    ) -> None:
        """``result`` (its blobs in the CAS already) under the step's cache action, in ``writers``."""
        action = cache_action(key.key, self._platform(op))
        for remote in writers:
            try:
                await self._upload(remote, action.blobs, {})
                await self._call(remote.update_action_result, action.action_digest, result)
            except PybuildError as error:
                self._warn_update(remote, error, emit)

    def _warn_update(self, remote: RemoteApi, error: PybuildError, emit: EventSink | None) -> None:
        if self._warned_update:
            return
        self._warned_update = True  # a read-only cache says so once, not for every step
        message = f"warning: results are not recorded in {remote.url}: {error.message}"
        if emit is not None:
            emit(Notice(message, trio.current_time()))
        else:
            self._say(message)

    def _say(self, message: str) -> None:
        if self.emit is not None:
            self.emit(Notice(message, trio.current_time()))
        else:
            log.warning("%s", message)

    # ------------------------------------------------------------ layers as plain tars

    async def _plain_tar(self, snapshot: str) -> tuple[str, int]:
        """The snapshot's layer as a plain tar blob here (digest = diffID): (diffID, size)."""
        async with self._plain_locks[snapshot]:
            if snapshot not in self._plain:
                self._plain[snapshot] = await trio.to_thread.run_sync(self._make_plain, snapshot)
        return self._plain[snapshot]

    def _make_plain(self, snapshot: str) -> tuple[str, int]:
        from pybuild.oci import open_decompressed

        layer = self.local.layers.layer(snapshot, "none")
        blobs = self.root.blobs
        if layer.digest != layer.diff_id and not blobs.has(layer.diff_id):
            # a base image's layer keeps its compression: its plain tar is made once, here
            with blobs.open(layer.digest, verify=True) as source, blobs.writer(layer.diff_id) as writer:
                shutil.copyfileobj(open_decompressed(source), writer, 1 << 20)
                writer.commit()
        self.local.lease.add([layer.diff_id])
        size = blobs.size(layer.diff_id)
        if size is None:
            raise BuildError(f"the plain tar of layer {layer.diff_id} is missing from the store")
        return layer.diff_id, size

    def _blob_path(self, diff_id: str) -> Path:
        path = self.root.blobs.path(diff_id)
        if path is None:
            raise BuildError(f"the plain tar of layer {diff_id} is missing from the store")
        return path

    # ------------------------------------------------------------ the CAS

    async def _upload(self, remote: RemoteApi, blobs: Mapping[Digest, bytes], files: Mapping[Digest, Path]) -> None:
        """Put what the CAS misses of ``blobs`` and ``files`` there, each blob once per build."""
        small = {d: data for d, data in blobs.items() if (id(remote), d) not in self._uploaded}
        wanted = [d for d in files if (id(remote), d) not in self._uploaded]
        # the few small messages go up in one batch, present or not: asking first costs a round trip
        if small:
            await self._call(remote.upload, small)
            self._uploaded.update((id(remote), d) for d in small)
        if not wanted:
            return
        missing = await self._call(remote.find_missing, wanted)
        for digest, path in files.items():
            if digest not in missing:
                continue
            async with self._upload_locks[digest]:  # two steps on one base upload it once
                if (id(remote), digest) not in self._uploaded:
                    await self._call(remote.upload_file, digest, path)
                    self._uploaded.add((id(remote), digest))
        self._uploaded.update((id(remote), d) for d in wanted)

    async def _call(self, function: Callable[..., _T], *args: object, limiter: trio.CapacityLimiter | None = None) -> _T:
        """A blocking REAPI call in a thread; a cancelled build stops waiting for it."""
        return await trio.to_thread.run_sync(functools.partial(function, *args), abandon_on_cancel=True, limiter=limiter)

    # ------------------------------------------------------------ names

    def _platform(self, op: Op) -> str:
        return (op.platform if isinstance(op, ExecOp) else "") or self.settings.host_platform

    def _name(self, digest: str) -> str:
        return self.local.definition.meta[digest].description


def _store_blob(root: Root, path: Path, digest: str) -> None:
    """Keep a checked layer tar as a blob of the store (its plain form: exports and pushes use it)."""
    if root.blobs.has(digest):
        return
    with open(path, "rb") as source, root.blobs.writer(digest) as writer:
        shutil.copyfileobj(source, writer, 1 << 20)
        writer.commit()


if TYPE_CHECKING:

    def _is_a_build_runner(runner: RemoteRunner) -> BuildRunner:
        return runner  # the checker proves RemoteRunner satisfies every Protocol a build asks of its runner
