"""One leased step, run by the local machinery on this worker's root.

The step is a one-op build: its ``ExecOp`` and, for each input the op names
(the rootfs, bind-mount and cache-mount sources), a chain of snapshots made
from the layer diffIDs it arrived with.  ``dag.Worker`` runs it exactly as a
local build runs a RUN step (sandbox, mounts, cache mounts of this worker,
its own cache of results), and the new snapshot's layer is written as the
plain tar whose sha256 is its diffID, ready to upload.

Nothing here trusts the step: the worker options allow no host network, no
insecure security, no devices, secrets or SSH agents (a client never sends
those steps; a forged one fails like a local build without ``--allow``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import trio

from pybuild.errors import BuildError, StepFailed

from .._events import Event, StepLog
from .._graph import Definition
from .._ops import ExecOp, ImageSource, OpMeta, op_digest
from .._platform import Platform, host_platform
from .._solver import CacheKey, Result
from ._chains import FetchLayer, LayerChains

if TYPE_CHECKING:
    from pybuild.cache import Lease, Root
    from pybuild.executors import Executor, RootfsCaller
    from pybuild.oci import ImageStore, SnapshotLayers

    from ..remote import RemoteStep
    from .._worker import WorkerOptions

OUTPUT_LIMIT = 16 << 20  # bytes of stdout (and of stderr) kept for the ActionResult; the rest is cut


@dataclass(frozen=True)
class LayerFile:
    """The step's new layer: its plain tar in the worker's content store."""

    diff_id: str
    path: Path
    size: int
    empty: bool  # the step changed nothing


@dataclass(frozen=True)
class StepOutcome:
    exit_code: int
    stdout: bytes
    stderr: bytes
    layer: LayerFile | None  # None unless the step succeeded
    duration: float
    cached: bool = False  # this worker had run the very same step before
    message: str = ""  # why it failed, as a local build says it


class StepRunner:
    """Runs leased steps on one root; several at once (``run`` is reentrant)."""

    def __init__(self, root: Root, store: ImageStore, executor: Executor, files: RootfsCaller, options: WorkerOptions) -> None:
        self.root = root
        self.store = store
        self.executor = executor
        self.files = files
        self.options = options
        self.chains = LayerChains(root, store)

    async def run(
        self, step: RemoteStep, key: str, fetch: FetchLayer, description: str, timeout: float | None = None
    ) -> StepOutcome:
        """Run ``step`` (cached under ``key`` on this worker); ``fetch`` brings missing layer tars.

        ``key`` is the worker's own, made from what it received: the client's key in
        step.json names the step for the client, but this cache must not trust it."""
        started = time.monotonic()
        lease = await trio.to_thread.run_sync(self.root.index.new_lease)
        try:
            inputs = {
                digest: await self._input(digest, diff_ids, fetch, lease) for digest, diff_ids in step.chains.items()
            }
            op = _on_platform(step.op, step.platform)
            output = _Output()
            result = await self._run_op(op, key, inputs, output, description, timeout)
            if isinstance(result, StepFailed):
                return StepOutcome(
                    result.step_exit_code, output.stdout(), output.stderr(), None, time.monotonic() - started,
                    message=str(result),
                )
            assert result.layer is not None  # a RUN always commits a layer (an empty change too)
            layer = await trio.to_thread.run_sync(self._layer_file, result.layer)
            base = step.chains.get(step.op.rootfs or "", ())  # top first, as the snapshots
            base_chain = inputs[step.op.rootfs].chain if step.op.rootfs else ()
            bottom_first = (*reversed(base), layer.diff_id)
            await trio.to_thread.run_sync(self.chains.remember, bottom_first, (result.layer, *base_chain))
            return StepOutcome(0, output.stdout(), output.stderr(), layer, time.monotonic() - started, cached=result.cached)
        finally:
            await trio.to_thread.run_sync(lease.release)

    async def _input(self, name: str, top_first: tuple[str, ...], fetch: FetchLayer, lease: Lease) -> Result:
        chain = await trio.to_thread.run_sync(self.chains.snapshots, tuple(reversed(top_first)), fetch, lease)
        # an input's key is never read here (the step's own key is given): the chain names it
        return Result(key=f"chain:{'/'.join(top_first)}", chain=chain, layer=chain[0] if chain else None, cached=True)

    async def _run_op(
        self, op: ExecOp, key: str, inputs: Mapping[str, Result], output: _Output, description: str, timeout: float | None
    ) -> Result | StepFailed:
        from .._worker import Worker

        digest = op_digest(op)
        definition = Definition(MappingProxyType({digest: op}), MappingProxyType({digest: OpMeta(description)}))
        worker = Worker(
            definition, root=self.root, executor=self.executor, files=self.files, images=_NoImages(),
            options=replace(self.options, step_timeout=timeout or self.options.step_timeout), layers=_layers(self.store),
        )
        try:
            return await worker.run(digest, op, CacheKey(key), inputs, output.take)
        except StepFailed as failed:
            return failed
        finally:
            await trio.to_thread.run_sync(worker.close)

    def _layer_file(self, snapshot: str) -> LayerFile:
        import os

        layer = _layers(self.store).layer(snapshot, "none")
        path = self.root.blobs.path(layer.digest)
        if path is None or layer.digest != layer.diff_id:
            raise BuildError(f"the layer of snapshot {snapshot[:12]} has no plain tar in the content store")
        with os.scandir(self.root.snapshots.tree(snapshot)) as entries:
            empty = next(entries, None) is None
        return LayerFile(layer.diff_id, path, layer.size, empty)


class _Output:
    """The step's stdout and stderr as they come, each kept up to ``OUTPUT_LIMIT`` bytes."""

    def __init__(self) -> None:
        self._streams = {"stdout": bytearray(), "stderr": bytearray()}

    def take(self, event: Event) -> None:
        if isinstance(event, StepLog) and event.stream in self._streams:
            kept = self._streams[event.stream]
            kept += event.data[: max(0, OUTPUT_LIMIT - len(kept))]

    def stdout(self) -> bytes:
        return bytes(self._streams["stdout"])

    def stderr(self) -> bytes:
        return bytes(self._streams["stderr"])


class _NoImages:
    """A leased step names its inputs by layers, never by image."""

    async def chain(self, source: ImageSource) -> tuple[str, ...]:
        raise BuildError(f"a leased step cannot use the image {source.ref} by name")


def _on_platform(op: ExecOp, platform: str) -> ExecOp:
    """The op as this machine runs it: ``platform`` only when it is not this host's
    (the client leaves it empty for *its* host, which need not be this one)."""
    wanted = Platform.parse(platform).normalized()
    return replace(op, platform="" if wanted == host_platform().normalized() else str(wanted))


def _layers(store: ImageStore) -> SnapshotLayers:
    from pybuild.oci import SnapshotLayers

    return SnapshotLayers(store)
