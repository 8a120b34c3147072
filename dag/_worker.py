"""The real op runner: cache keys, cache lookups and execution of each op.

The solver (``_solver.py``) decides *when* an op runs; the worker decides
*what running it means*, reaching the lower layers only through what it is
given: the pybuild root (snapshots, cache index), an ``Executor`` for RUN, a
``RootfsCaller`` for file operations, an ``ImageChains`` for base images and
a ``Fetcher`` for ADD of URLs and git repositories.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from pybuild._frozen import frozen
from pybuild.errors import BuildError, Location, PybuildError, StepFailed

from ._devices import step_devices
from ._events import EventSink, StepLog
from ._graph import Definition
from ._keys import make_key
from ._ops import (
    CopyAction,
    ExecOp,
    FileOp,
    GitSource,
    HttpSource,
    ImageSource,
    LocalSource,
    MergeOp,
    Op,
    RunMount,
)
from ._solver import CacheKey, Result

if TYPE_CHECKING:
    from pybuild.cache import ActiveSnapshot, ContextHasher, Root, Selection
    from pybuild.cache.remote import RemoteCache, RemoteRecord
    from pybuild.executors import CdiEdits, Executor, Mount, RootfsCaller

    from ._layers import SnapshotLayerStore

log = logging.getLogger(__name__)
T = TypeVar("T")

SOURCE_MOUNTS = "/.pybuild-sources"
# executors' switch for volatile overlays (no sync at a step's unmount): a copy finished
# after the unmount skips its own sync then too (``_copy_reuse.finish_copy``)
VOLATILE_ENV = "PYBUILD_VOLATILE_OVERLAYS"
OUTPUT_TAIL_LINES = 20


class ImageChains(Protocol):
    async def chain(self, source: ImageSource) -> tuple[str, ...]:
        """The snapshot ids (top first) of the image's layers, unpacked if needed."""


class Fetcher(Protocol):
    async def http(self, source: HttpSource, dest: Path) -> str:
        """Download into ``dest/source.filename`` (mode 0600); return its sha256 digest."""

    async def git(self, source: GitSource, dest: Path) -> str:
        """Clone into ``dest``; return the commit it checked out."""


@frozen
class Context:
    """The build context as the worker sees it."""

    path: Path
    hasher: ContextHasher


@frozen
class WorkerOptions:
    allow_host_network: bool = False
    allow_insecure: bool = False  # RUN --security=insecure (--allow security.insecure)
    entitlements: frozenset[str] = frozenset()  # --allow as given: "device", "device=NAME" (RUN --device)
    secrets: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    ssh: Mapping[str, str] = field(default_factory=dict)
    step_timeout: float | None = None
    memory_limit: int | None = None
    hostname: str = "buildkitsandbox"


def memory_text(size: int) -> str:
    """A memory limit as Docker's units show it: 64 MiB, 1.5 GiB, 100000 bytes."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def _hex(key: str) -> str:
    return key.split(":", 1)[1]


def output_key(key: str, layer: str | None) -> str:
    """The key downstream steps see: the step's key *and* the snapshot it resolved to.

    Normally a key always resolves to the same snapshot (named after the key),
    so this is stable; after a --no-cache rerun the step has a new snapshot,
    and every step that uses it gets a new key too instead of a stale hit.
    """
    if layer is None:
        return key
    return "sha256:" + hashlib.sha256(f"{key}|{layer}".encode()).hexdigest()


class Worker:
    def __init__(
        self,
        definition: Definition,
        *,
        root: Root,
        executor: Executor,
        files: RootfsCaller,
        images: ImageChains,
        context: Context | None = None,
        fetcher: Fetcher | None = None,
        options: WorkerOptions = WorkerOptions(),
        step_ids: Mapping[str, str] | None = None,
        dockerfile_name: str = "Dockerfile",
        remote_caches: Sequence[RemoteCache] = (),  # consulted after a local miss
        layers: SnapshotLayerStore | None = None,  # default: the image store's (oci.SnapshotLayers)
    ) -> None:
        self.dockerfile_name = dockerfile_name
        self.remote_caches = list(remote_caches)
        self.layers = layers if layers is not None else _store_layers(root)
        self.keys: dict[str, str] = {}  # op digest -> its cache key (the cache export needs them)
        # layers known from a remote cache, not downloaded yet: snapshot id -> (record, cache, parent)
        self.pending_remote: dict[str, tuple[RemoteRecord, RemoteCache, str | None]] = {}
        self._materializing: dict[str, trio.Lock] = {}
        self._adopted: set[str] = set()
        self.used_cache_mounts: dict[str, Path] = {}
        self.definition = definition
        self.root = root
        self.executor = executor
        self.files = files
        self.images = images
        self.context = context
        self.fetcher = fetcher
        self.options = options
        self.step_ids = dict(step_ids or {})
        self._selections: dict[tuple[str, int], Selection] = {}
        self._fetched: dict[str, Path] = {}
        # what this build uses stays leased, so a concurrent prune keeps it
        self.lease = root.index.new_lease()

    def close(self) -> None:
        self.lease.release()

    # ------------------------------------------------------------ keys

    async def cache_key(self, digest: str, op: Op, inputs: Mapping[str, Result]) -> CacheKey:
        input_keys = {d: r.key for d, r in inputs.items()}
        explain: dict[str, str] = {}
        contents: dict[str, str] = {}
        if isinstance(op, ImageSource):
            explain["base image"] = op.manifest_digest
        elif isinstance(op, (HttpSource, GitSource)):
            content = await self._fetch(digest, op)
            contents["content"] = content
            explain["content"] = content
        elif isinstance(op, FileOp):
            for index, action in enumerate(op.actions):
                if isinstance(action, CopyAction) and action.source and isinstance(self.definition.ops[action.source], LocalSource):
                    selection = await self._select(action)
                    self._selections[(digest, index)] = selection
                    contents[f"copy{index}"] = explain[f"files:{index}"] = selection.digest()
        elif isinstance(op, ExecOp):
            arg_names = self.definition.meta[digest].args
            for item in op.env:
                name, _, value = item.partition("=")
                explain[f"{'arg' if name in arg_names else 'env'}:{name}"] = value
            explain["command"] = " ".join(op.args)
            explain["user"] = op.user
            explain["workdir"] = op.cwd
            explain["network"] = op.network
            for mount in op.mounts:
                if mount.kind == "bind" and mount.source and isinstance(self.definition.ops[mount.source], LocalSource):
                    whole = await run_cpu_bound(self.context.hasher.whole) if self.context else None
                    if whole is not None:
                        contents[f"bind:{mount.target}"] = whole.digest()
        for name, dependency in _named_inputs(op):
            explain[name] = input_keys[dependency]
        key = make_key(op, input_keys, contents)
        self.keys[digest] = key
        return CacheKey(key, explain, self.step_ids.get(digest))

    async def _select(self, action: CopyAction) -> Selection:
        if self.context is None:
            raise BuildError("this step reads the build context, but there is none", hint="pass a context directory")
        sources = [action.src] if not action.include_patterns else [
            f"{action.src.rstrip('/')}/{pattern}" for pattern in action.include_patterns
        ]
        hasher = self.context.hasher
        return await run_cpu_bound(
            lambda: hasher.select(
                sources, excludes=list(action.exclude_patterns), allow_empty_wildcard=action.allow_empty_wildcard
            )
        )

    async def _fetch(self, digest: str, op: HttpSource | GitSource) -> str:
        if self.fetcher is None:
            raise BuildError(f"cannot fetch {getattr(op, 'url', getattr(op, 'remote', ''))}: no fetcher configured")
        dest = self.root.tmp_dir("fetch-")
        if isinstance(op, HttpSource):
            content = await self.fetcher.http(op, dest)
        else:
            content = await self.fetcher.git(op, dest)
        self._fetched[digest] = dest
        return content

    def _full_inputs(self, digest: str, key: CacheKey) -> dict[str, str]:
        """The named inputs plus one per context file read: what a miss is explained from."""
        inputs = dict(key.inputs)
        for (op_digest, _), selection in self._selections.items():
            if op_digest == digest:
                inputs.update((f"file:{path}", entry) for path, entry in selection.entries.items())
        return inputs

    async def explain_miss(self, digest: str, op: Op, key: CacheKey) -> str | None:
        if key.step_id is None or isinstance(op, (ImageSource, LocalSource, MergeOp)):
            return None
        if getattr(op, "ignore_cache", False):
            return "the cache is off for this step (--no-cache)"
        previous = await trio.to_thread.run_sync(self.root.index.previous_inputs, key.step_id)
        if previous is None:
            return None
        old_key, old_inputs = previous
        if old_key == key.key:
            return "the cached result is gone or was pruned"
        current = await trio.to_thread.run_sync(self._full_inputs, digest, key)
        return describe_changes(old_inputs, current, self.definition, op)

    # ------------------------------------------------------------ load

    async def load(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result]) -> Result | None:
        if isinstance(op, ImageSource):
            chain = await self.images.chain(op)
            await trio.to_thread.run_sync(self.lease.add, list(chain))
            return Result(key.key, chain=chain, layer=chain[0] if chain else None, cached=True)
        if isinstance(op, LocalSource):
            path = str(self.context.path) if self.context else None
            return Result(key.key, path=path, cached=True)
        if isinstance(op, (HttpSource, GitSource)):
            return Result(key.key, path=str(self._fetched[digest]), cached=True)
        if isinstance(op, MergeOp):
            merged: tuple[str, ...] = ()
            for part in op.layers:
                merged = _stack(merged, inputs[part].chain)
            top = inputs[op.layers[-1]]
            return Result(key.key, chain=merged, layer=top.layer, cached=all(inputs[l].cached for l in op.layers))
        if getattr(op, "ignore_cache", False):
            return None
        record = await trio.to_thread.run_sync(self.root.index.lookup, key.key)
        if record is None:
            return self._remote_hit(digest, op, key, inputs)
        layer = record.snapshot_id
        if layer is not None:
            # lease first, then look: a prune either kept it or already took it
            await trio.to_thread.run_sync(self.lease.add, [layer])
            if not await trio.to_thread.run_sync(self.root.snapshots.exists, layer):
                return self._remote_hit(digest, op, key, inputs)
        await self._remember(digest, key, only_if_changed=True)
        await trio.to_thread.run_sync(self.root.index.touch, key.key)
        chain = ((layer,) if layer else ()) + self._base_chain(op, inputs)
        return Result(output_key(key.key, layer), chain=chain, layer=layer, cached=True, created=record.created)

    def _remote_hit(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result]) -> Result | None:
        """A result another machine made, known by its record: its layer comes later, if ever."""
        for cache in self.remote_caches:
            remote = cache.lookup(key.key)
            if remote is None:
                continue
            layer = remote.snapshot
            base_chain = self._base_chain(op, inputs)
            self.pending_remote[layer] = (remote, cache, base_chain[0] if base_chain else None)
            return Result(
                output_key(key.key, layer), chain=(layer,) + base_chain, layer=layer, cached=True, created=remote.created
            )
        return None

    async def ensure_local(self, chain: Sequence[str]) -> None:
        """Download and unpack the remote-cache layers of ``chain`` that are not here yet."""
        for layer in reversed(chain):  # parents first
            if layer in self.pending_remote:
                lock = self._materializing.setdefault(layer, trio.Lock())
                async with lock:
                    if layer in self.pending_remote:
                        async with self._blaming(layer):
                            await self._materialize(layer)

    @contextlib.asynccontextmanager
    async def _blaming(self, layer: str) -> AsyncIterator[None]:
        """A fault while bringing a remote layer here is that cache's fault: the build
        goes on without it (``drop_remote_cache``) rather than failing."""
        from pybuild.cache.remote import RemoteCacheBroken

        cache = self.pending_remote[layer][1]
        try:
            yield
        except (PybuildError, OSError) as error:
            if isinstance(error, RemoteCacheBroken):
                raise
            message = str(error) if isinstance(error, PybuildError) else (error.strerror or str(error))
            raise RemoteCacheBroken(f"cache {cache.source.name} is broken: {message}", cache=cache) from None

    def drop_remote_cache(self, cache: RemoteCache) -> None:
        """Forget a cache that turned out broken; what came from it is built instead."""
        self.remote_caches = [c for c in self.remote_caches if c is not cache]
        for layer, (_, owner, _) in list(self.pending_remote.items()):
            if owner is cache:
                del self.pending_remote[layer]

    async def _materialize(self, layer: str) -> None:
        from pybuild.oci import apply_layer, unpack_limit

        record, cache, parent = self.pending_remote[layer]
        await trio.to_thread.run_sync(self.lease.add, [layer])
        if await trio.to_thread.run_sync(self.root.snapshots.exists, layer):
            # here already -- from an earlier import -- but only if it is that very layer
            if await run_cpu_bound(self.layers.diff_id, layer) != record.layer.diff_id:
                raise BuildError(f"its record names snapshot {layer[:12]}, which holds another layer here")
            await trio.to_thread.run_sync(self._record_remote, record, layer)
            del self.pending_remote[layer]
            return
        await self.adopt_remote_layer(layer)

        def unpack() -> None:
            active = self.root.snapshots.new_active()
            try:
                with self.root.blobs.open(record.layer.digest, verify=True) as stream:
                    apply_layer(stream, Path(active.upper), size_budget=unpack_limit(record.layer.size))
            except BaseException:
                self.root.snapshots.discard(active)
                raise
            self.root.snapshots.commit(active, parent, snapshot_id=layer)
            self._record_remote(record, layer)

        await run_cpu_bound(unpack)
        del self.pending_remote[layer]

    def _record_remote(self, record: RemoteRecord, layer: str) -> None:
        from pybuild.cache import CacheRecord

        self.root.index.record(record.key, CacheRecord(snapshot_id=layer, created=record.created, last_used=time.time()))

    async def adopt_remote_layer(self, layer: str) -> None:
        """Fetch a remote layer's blob (checked against its diffID) and let the image
        store use it as that snapshot's layer."""
        if layer in self._adopted:
            return
        async with self._blaming(layer):
            record, cache, _ = self.pending_remote[layer]
            if await run_cpu_bound(self.layers.diff_id, layer) == record.layer.diff_id and await trio.to_thread.run_sync(
                self.root.blobs.has, record.layer.digest
            ):
                self._adopted.add(layer)  # adopted by an earlier build, blob checked then
                return
            await cache.source.fetch(record.layer, self.root.blobs)
            await trio.to_thread.run_sync(self.lease.add, [record.layer.digest])
            from ._cache_wiring import as_layer, check_diff_id

            await run_cpu_bound(check_diff_id, self.root.blobs, record.layer)
            await trio.to_thread.run_sync(self.layers.adopt, layer, as_layer(record.layer))
        self._adopted.add(layer)

    @staticmethod
    def _base_chain(op: Op, inputs: Mapping[str, Result]) -> tuple[str, ...]:
        base = op.rootfs if isinstance(op, ExecOp) else op.base if isinstance(op, FileOp) else None
        return inputs[base].chain if base else ()

    async def _remember(self, digest: str, key: CacheKey, *, only_if_changed: bool = False) -> None:
        """Keep what this step's key was made of, to explain its next miss."""
        if key.step_id is None:
            return
        step_id = key.step_id

        def remember() -> None:
            if only_if_changed and self.root.index.step_key(step_id) == key.key:
                return  # a cache hit on the same inputs as last time: nothing to write
            self.root.index.remember_inputs(step_id, key.key, self._full_inputs(digest, key))

        await trio.to_thread.run_sync(remember)

    # ------------------------------------------------------------ run

    async def run(self, digest: str, op: Op, key: CacheKey, inputs: Mapping[str, Result], emit: EventSink) -> Result:
        if not isinstance(op, (ExecOp, FileOp)):
            raise BuildError(f"{type(op).__name__} cannot be executed")  # sources always load
        for result in inputs.values():  # the layers this step runs on must be here
            await self.ensure_local(result.chain)
        # Another pybuild process may be running this very step: let one run it
        # and the other take its result from the cache.
        async with self._step_lock(key.key):
            if not getattr(op, "ignore_cache", False):
                done = await self.load(digest, op, key, inputs)
                if done is not None:
                    return done
            if isinstance(op, ExecOp):
                return await self._run_exec(digest, op, key, inputs, emit)
            return await self._run_file(digest, op, key, inputs)

    @contextlib.asynccontextmanager
    async def _step_lock(self, key: str) -> AsyncIterator[None]:
        directory = self.root.path / "locks"
        directory.mkdir(exist_ok=True)
        # a bounded set of lock files: unrelated steps rarely share one, and then just wait
        fd = os.open(directory / _hex(key)[:3], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            await _flock_polled(fd)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _lowers(self, chain: Sequence[str]) -> tuple[str, ...]:
        return tuple(str(self.root.snapshots.tree(s)) for s in chain)

    async def _commit(self, digest: str, op: Op, key: CacheKey, active: ActiveSnapshot, inputs: Mapping[str, Result]) -> Result:
        # An empty change still makes a layer: the BuildKit this project compares
        # with (docker.io 20.10) keeps one for `RUN true` (tests/dag/golden/run_empty_diff).
        base_chain = self._base_chain(op, inputs)
        parent = base_chain[0] if base_chain else None
        # a forced rerun (--no-cache) must not fold into the snapshot it replaces
        snapshot_id = _hex(key.key) if not getattr(op, "ignore_cache", False) else os.urandom(16).hex()
        await trio.to_thread.run_sync(self.lease.add, [snapshot_id])
        layer = await trio.to_thread.run_sync(
            lambda: self.root.snapshots.commit(active, parent, snapshot_id=snapshot_id)
        )
        from pybuild.cache import CacheRecord

        created = time.time()
        record = CacheRecord(snapshot_id=layer, created=created, last_used=created)
        await trio.to_thread.run_sync(self.root.index.record, key.key, record)
        await self._remember(digest, key)
        chain = ((layer,) if layer else ()) + base_chain
        return Result(output_key(key.key, layer), chain=chain, layer=layer, created=created)

    async def _run_exec(self, digest: str, op: ExecOp, key: CacheKey, inputs: Mapping[str, Result], emit: EventSink) -> Result:
        from pybuild.executors import ProcessSpec, Rootfs

        if op.network == "host" and not self.options.allow_host_network:
            raise BuildError(
                "network host is not allowed for this build",
                hint="pass --allow network.host to pybuild build",
            )
        if op.security == "insecure" and not self.options.allow_insecure:
            raise BuildError("security.insecure is not allowed", hint="pass --allow security.insecure to pybuild build")
        base_chain = self._base_chain(op, inputs)
        active = await trio.to_thread.run_sync(self.root.snapshots.new_active)
        scratch: list[Path] = []
        locks: list[int] = []
        tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        pending = {"stdout": b"", "stderr": b""}

        def on_output(stream: str, data: bytes) -> None:
            emit(StepLog(digest, stream, data, trio.current_time()))
            text = pending[stream] + data
            *lines, pending[stream] = text.split(b"\n")
            tail.extend(line.decode("utf-8", "replace") for line in lines)

        try:
            mounts, secret_env = await self._exec_mounts(op, inputs, scratch, locks)
            devices = await self._devices(digest, op) if op.devices else None
            env = op.env + op.proxy_env
            if devices is not None:
                # a device's variables win over the image's, as CDI's env edits replace a name's value
                names = {entry.partition("=")[0] for entry in devices.env}
                env = tuple(e for e in env if e.partition("=")[0] not in names) + devices.env
                mounts = [*mounts, *devices.mounts]
            spec = ProcessSpec(
                args=op.args,
                env=env,
                cwd=op.cwd,
                user=op.user,
                network=op.network,
                hostname=self.options.hostname,
                timeout=self.options.step_timeout,
                memory_limit=self.options.memory_limit,
                secret_env=tuple(secret_env),
                security=op.security,
                devices=devices.nodes if devices is not None else (),
            )
            rootfs = Rootfs(self._lowers(base_chain), str(active.upper), str(active.work))
            result = await self.executor.run(rootfs, spec, mounts, on_output=on_output)
        except BaseException:
            await trio.to_thread.run_sync(self.root.snapshots.discard, active)
            raise
        finally:
            for fd in locks:
                os.close(fd)
            for path in scratch:
                await trio.to_thread.run_sync(shutil.rmtree, path, True)
        for stream, rest in pending.items():
            if rest:
                tail.append(rest.decode("utf-8", "replace"))
        if result.exit_code != 0:
            await trio.to_thread.run_sync(self.root.snapshots.discard, active)
            shown = " ".join(op.args)
            why = "timed out" if result.timed_out else f"exit code: {result.exit_code}"
            if result.oom_killed and not result.timed_out:
                limit = self.options.memory_limit
                why += ": out of memory" + (f" (limit {memory_text(limit)})" if limit else "")
            meta = self.definition.meta[digest]
            location = Location(self.dockerfile_name, *meta.span) if meta.span else None
            raise StepFailed(
                f'{meta.description}: process "{shown}" did not complete successfully: {why}',
                exit_code=result.exit_code,
                output_tail="\n".join(tail),
                location=location,
            )
        return await self._commit(digest, op, key, active, inputs)

    async def _devices(self, digest: str, op: ExecOp) -> CdiEdits:
        """What RUN --device adds to the step, from the host's CDI specs as they are now
        (``build`` checked the entitlement before anything ran; checked again here, as the
        other entitlements are, for a runner used without it)."""
        from pybuild.executors import load_cdi_registry

        def resolve() -> CdiEdits:
            registry = load_cdi_registry()
            return registry.edits(step_devices(registry, op.devices, self.options.entitlements))

        try:
            return await trio.to_thread.run_sync(resolve)
        except BuildError as e:
            span = self.definition.meta[digest].span
            location = Location(self.dockerfile_name, *span) if span else None
            raise BuildError(e.message, hint=e.hint, location=e.location or location) from None

    async def _exec_mounts(
        self, op: ExecOp, inputs: Mapping[str, Result], scratch: list[Path], locks: list[int]
    ) -> tuple[list[Mount], list[str]]:
        from pybuild.executors import BindMount, SecretMount, TmpfsMount

        mounts: list[Mount] = []
        secret_env: list[str] = []
        for mount in op.mounts:
            if mount.kind == "tmpfs":
                mounts.append(TmpfsMount(mount.target, mount.size))
            elif mount.kind == "secret":
                data = self.options.secrets.get(mount.secret_id or "")
                if data is None:
                    if mount.required:
                        raise BuildError(f"secret {mount.secret_id} is required but was not provided", hint=f"pass --secret id={mount.secret_id},src=FILE")
                    continue
                if mount.env:
                    secret_env.append(f"{mount.env}={data.decode('utf-8', 'surrogateescape')}")
                if mount.target and (not mount.env or mount.target != f"/run/secrets/{mount.secret_id}"):
                    mounts.append(SecretMount(mount.target, data, mount.mode or 0o400, mount.uid or 0, mount.gid or 0))
            elif mount.kind == "ssh":
                socket = self.options.ssh.get(mount.secret_id or "default")
                if socket is None:
                    if mount.required:
                        raise BuildError(f"ssh agent {mount.secret_id} is required but was not provided", hint="pass --ssh default")
                    continue
                mounts.append(BindMount(socket, mount.target, readonly=False))
                if not any(e.startswith("SSH_AUTH_SOCK=") for e in (*op.env, *secret_env)):
                    secret_env.append(f"SSH_AUTH_SOCK={mount.target}")  # as BuildKit: the first agent is the default
            elif mount.kind == "cache":
                mounts.append(await self._cache_mount(mount, locks, scratch, inputs))
            else:
                mounts.append(await self._bind_mount(mount, inputs, scratch))
        return mounts, secret_env

    async def _cache_mount(
        self, mount: RunMount, locks: list[int], scratch: list[Path], inputs: Mapping[str, Result]
    ) -> Mount:
        from pybuild.executors import BindMount

        mount_id = mount.cache_id or mount.target
        # leased before it is made, so a concurrent prune leaves it alone
        await trio.to_thread.run_sync(self.lease.add, [self.root.cache_mount_resource(mount_id)])
        directory = await trio.to_thread.run_sync(self.root.cache_mount_dir, mount_id)
        self.used_cache_mounts[mount_id] = directory
        lock_path = str(directory) + ".lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if mount.sharing == "locked":
            try:
                await _flock_polled(fd)
            except BaseException:
                os.close(fd)
                raise
            locks.append(fd)
        elif mount.sharing == "private":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                locks.append(fd)
            except BlockingIOError:
                os.close(fd)
                directory = self.root.tmp_dir("cache-private-")
                scratch.append(directory)
        else:
            os.close(fd)  # shared: no lock at all
        if not any(directory.iterdir()):
            await self._restore_cache_mount(mount_id, directory)
        if not any(directory.iterdir()):
            if mount.source is not None:  # from=: a new cache starts as a copy of that source
                await self._seed_cache(directory, inputs[mount.source], mount.source_path, scratch)
            if mount.uid is not None or mount.gid is not None or mount.mode is not None:
                _chown_cache_mount(directory, mount)
                os.chmod(directory, mount.mode if mount.mode is not None else 0o755)
        return BindMount(str(directory), mount.target, readonly=mount.readonly)

    async def _restore_cache_mount(self, mount_id: str, directory: Path) -> None:
        """An empty cache mount takes its contents from a remote cache that exported it."""
        from ._cache_wiring import unpack_cache_mount

        for cache in self.remote_caches:
            layer = cache.cache_mounts.get(mount_id)
            if layer is None:
                continue
            try:
                await cache.source.fetch(layer, self.root.blobs)
                await run_cpu_bound(unpack_cache_mount, self.root.blobs, layer, directory)
            except (PybuildError, OSError) as error:
                # a cache mount is only ever a speed-up: start it empty instead
                log.warning("cache mount %s not restored from %s: %s", mount_id, cache.source.name, error)
                continue
            return

    async def prepare_export(self, chain: Sequence[str], *, leave_in: frozenset[str] = frozenset()) -> None:
        """Layers of the exported image that only a remote cache has: fetch their blobs.

        A blob that lives in a registry in ``leave_in`` (the registries the
        image is pushed to) stays there: the push mounts it from the cache's
        repository, and ``self.layers`` knows it as remote only.
        """
        for layer in chain:
            if layer not in self.pending_remote:
                continue
            from ._cache_wiring import as_layer  # a layer only a remote cache has: that cache loaded it already

            record, cache, _ = self.pending_remote[layer]
            where = cache.source.registry_ref()
            if where is not None and where.registry in leave_in:
                await trio.to_thread.run_sync(self.layers.leave_remote, layer, as_layer(record.layer), where.name)
            else:
                await self.adopt_remote_layer(layer)

    async def _seed_cache(self, directory: Path, source: Result, source_path: str, scratch: list[Path]) -> None:
        """Copy ``source_path`` of a from= stage, image or context into a new cache mount.

        The copy runs with the source mounted like a bind mount's, so the path
        is resolved inside the source's own root and its symlinks never lead
        to the host's files.
        """
        from pybuild.executors import BindMount, OverlayMount, Rootfs

        subpath = "/" + source_path.strip("/")
        if source.path is not None:
            origin: Any = BindMount(source.path, "/source", subpath=subpath)
        else:
            lowers = self._lowers(source.chain) or (str(self._empty_dir(scratch)),)
            origin = OverlayMount(lowers, "/source", subpath=subpath)
        staging, upper, work = (self.root.tmp_dir(prefix) for prefix in ("cache-seed-", "seed-upper-", "seed-work-"))
        scratch.extend([staging, upper, work])
        seed = BindMount(str(staging), "/seed", readonly=False)
        await self.files.call(Rootfs((), str(upper), str(work)), [origin, seed], _copy_seed, source_path)
        for entry in (staging / "tree").iterdir():
            os.rename(entry, directory / entry.name)

    async def _bind_mount(self, mount: RunMount, inputs: Mapping[str, Result], scratch: list[Path]) -> Mount:
        from pybuild.executors import BindMount, OverlayMount

        source = inputs[mount.source] if mount.source else None
        # Resolved by the sandbox inside the source's own root, never here on
        # the host: a stage's or the context's symlinks must not lead out.
        subpath = "/" + mount.source_path.strip("/")
        if source is not None and source.path is not None:  # the context (a plain directory)
            if mount.readonly:
                return BindMount(source.path, mount.target, readonly=True, subpath=subpath)
            lowers: tuple[str, ...] = (source.path,)
        else:
            lowers = self._lowers(source.chain if source is not None else ()) or (str(self._empty_dir(scratch)),)
        if mount.readonly:
            return OverlayMount(lowers, mount.target, subpath=subpath)
        upper = self.root.tmp_dir("rw-upper-")
        work = self.root.tmp_dir("rw-work-")
        scratch.extend([upper, work])
        return OverlayMount(lowers, mount.target, str(upper), str(work), subpath=subpath)

    def _empty_dir(self, scratch: list[Path]) -> Path:
        path = self.root.tmp_dir("empty-")
        scratch.append(path)
        return path

    async def _run_file(
        self, digest: str, op: FileOp, key: CacheKey, inputs: Mapping[str, Result], *, reuse_allowed: bool = True
    ) -> Result:
        from pybuild.executors import BindMount, OverlayMount, Rootfs

        from . import _copy_reuse
        from ._fileops import FilePlan, PlannedCopy, apply_file_plan

        base_chain = self._base_chain(op, inputs)
        reported = self._reported_copy(digest, op)
        pointer = _copy_reuse.pointer(self.context.path, self.step_ids.get(digest, digest)) if reported and self.context else None
        reuse = None
        if reported is not None and pointer is not None and reuse_allowed and not op.ignore_cache:
            reuse = await trio.to_thread.run_sync(_copy_reuse.find, self.root, pointer, reported.entries, self.lease.add)
        active = await trio.to_thread.run_sync(self.root.snapshots.new_active)
        scratch: list[Path] = []
        mounts: list[Any] = []
        steps: list[Any] = []
        retry = False
        try:
            for index, action in enumerate(op.actions):
                if not isinstance(action, CopyAction):
                    steps.append(action)
                    continue
                target = f"{SOURCE_MOUNTS}/{index}"
                source = inputs[action.source] if action.source else None
                selection = self._selections.get((digest, index))
                if source is not None and source.path is not None:
                    mounts.append(BindMount(source.path, target, readonly=True))
                elif source is not None and source.chain:
                    mounts.append(OverlayMount(self._lowers(source.chain), target))
                else:
                    mounts.append(BindMount(str(self._empty_dir(scratch)), target, readonly=True))
                is_context = action.source is not None and isinstance(self.definition.ops[action.source], LocalSource)
                selected = tuple(selection.entries) if selection is not None else None
                reusable = reuse.reusable if reuse is not None else None
                steps.append(
                    PlannedCopy(
                        action, target, is_context, selected, reusable,
                        report=reported is not None, defer=reported is not None and reuse_allowed,
                    )
                )
            rootfs = Rootfs(self._lowers(base_chain), str(active.upper), str(active.work))
            reports = await self.files.call(rootfs, mounts, apply_file_plan, FilePlan(tuple(steps)))
            await trio.to_thread.run_sync(_remove_mountpoints, Path(active.upper), self._lowers(base_chain))
            report = reports[0] if reported is not None and reports else None  # a reported copy is the only action
            if report is not None and (report.reused or report.dirs or report.copies):
                source_path = Path(self.context.path) if self.context is not None else None
                try:
                    if source_path is None:
                        raise _copy_reuse.ReuseFailed("no context")
                    # synced here unless traded for speed or left to the build's end (cache ``settle``)
                    durable = os.environ.get(VOLATILE_ENV) != "1" and not self.root.snapshots.durability_deferred()
                    await trio.to_thread.run_sync(
                        lambda: _copy_reuse.finish_copy(
                            reuse, Path(active.upper), source_path, report, durable=durable, spread=_spread_from_thread
                        )
                    )
                except _copy_reuse.ReuseFailed as error:
                    log.info("copying every file through the overlay: %s", error)
                    retry = True
            if report is not None and reported is not None and not retry:
                data = _copy_reuse.manifest(report, reported.entries)
                await trio.to_thread.run_sync(self.root.snapshots.attach, active, _copy_reuse.MANIFEST, data)
        except BaseException:
            await trio.to_thread.run_sync(self.root.snapshots.discard, active)
            raise
        finally:
            for path in scratch:
                await trio.to_thread.run_sync(shutil.rmtree, path, True)
        if retry:
            await trio.to_thread.run_sync(self.root.snapshots.discard, active)
            return await self._run_file(digest, op, key, inputs, reuse_allowed=False)
        result = await self._commit(digest, op, key, active, inputs)
        if report is not None and pointer is not None and result.layer is not None:
            await trio.to_thread.run_sync(_copy_reuse.remember, self.root, pointer, result.layer)
        return result

    def _reported_copy(self, digest: str, op: FileOp) -> Selection | None:
        """The selection of a file op that is one copy of the build context: its
        snapshot keeps the facts of its files, and reuses those of the last one."""
        if len(op.actions) != 1 or not isinstance(op.actions[0], CopyAction):
            return None
        return self._selections.get((digest, 0))


def _spread_from_thread(jobs: list[Callable[[], None]]) -> None:
    """Run ``jobs`` at once on the CPU limiter's threads, from a worker thread of this trio run
    (``_copy_reuse.Spread``): the kernel's copying releases the GIL, so the CPUs share it."""

    async def run_all() -> None:
        async with trio.open_nursery() as nursery:
            for job in jobs:
                nursery.start_soon(run_cpu_bound, job)

    trio.from_thread.run(run_all)


async def _flock_polled(fd: int) -> None:
    """An exclusive flock, polled: a waiter holds no thread (steps have no limit, and a blocked
    thread each could starve the holder of one to finish with), and a cancelled build stops waiting."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await trio.sleep(0.05)


async def run_cpu_bound(function: Callable[..., T], *args: object) -> T:
    """Hashing, unpacking: pybuild's own CPU work, a CPU count at once (steps have no limit)."""
    from pybuild.executors import run_cpu_bound as bounded

    return await bounded(function, *args)


def _copy_seed(root: str, source_path: str) -> None:
    """In the caller's mounts: the merged ``/source`` directory into ``/seed/tree``."""
    from pybuild.oci import flatten_into

    source = os.path.join(root, "source")
    if not os.path.isdir(source):
        raise BuildError(f"cache mount source {source_path} is not a directory in its from= stage or image")
    flatten_into([Path(source)], Path(root, "seed", "tree"))


def _store_layers(root: Root) -> SnapshotLayerStore:
    from pybuild.oci import ImageStore, SnapshotLayers

    layers: SnapshotLayerStore = SnapshotLayers(ImageStore(root))
    return layers


def _stack(below: tuple[str, ...], above: tuple[str, ...]) -> tuple[str, ...]:
    """Put the layers of ``above`` (top first) on top of ``below`` (top first)."""
    seen = set(below)
    return tuple(s for s in above if s not in seen) + below


def _remove_mountpoints(upper: Path, lowers: Sequence[str]) -> None:
    """The source mount points are not part of the step's change."""
    name = SOURCE_MOUNTS.strip("/")
    if any(os.path.lexists(os.path.join(lower, name)) for lower in lowers):
        return
    shutil.rmtree(upper / name, ignore_errors=True)


def _named_inputs(op: Op) -> list[tuple[str, str]]:
    out = []
    if isinstance(op, ExecOp) and op.rootfs:
        out.append(("base", op.rootfs))
    if isinstance(op, FileOp) and op.base:
        out.append(("base", op.base))
    if isinstance(op, ExecOp):
        out += [(f"mount:{m.target}", m.source) for m in op.mounts if m.source]
    if isinstance(op, FileOp):
        out += [(f"source{i}", a.source) for i, a in enumerate(op.actions) if isinstance(a, CopyAction) and a.source]
    if isinstance(op, MergeOp):
        out += [(f"layer{i}", l) for i, l in enumerate(op.layers)]
    return out


def _describe_source(name: str, op: Op, definition: Definition) -> str:
    """``stage build changed`` / ``image x changed`` for a COPY --from or mount input."""
    digest = None
    if name.startswith("source") and isinstance(op, FileOp):
        action = op.actions[int(name[6:])]
        digest = action.source if isinstance(action, CopyAction) else None
    elif name.startswith("mount:") and isinstance(op, ExecOp):
        digest = next((m.source for m in op.mounts if m.target == name[6:]), None)
    source = definition.ops.get(digest or "")
    if isinstance(source, ImageSource):
        return f"image {source.ref} changed"
    meta = definition.meta.get(digest or "")
    if meta is not None and meta.stage:
        return f"stage {meta.stage} changed"
    return f"{name.partition(':')[2] or 'a source'} changed"


def describe_changes(old: Mapping[str, str], new: Mapping[str, str], definition: Definition, op: Op) -> str:
    """Why a step's key differs from last time, in the words a user thinks in."""
    from pybuild.cache import diff_entries

    old_files = {k[5:]: v for k, v in old.items() if k.startswith("file:")}
    new_files = {k[5:]: v for k, v in new.items() if k.startswith("file:")}
    reasons: list[str] = []
    changes = diff_entries(old_files, new_files)
    if changes:
        reasons.append(changes.describe())
    for name in sorted(set(old) | set(new)):
        if name.startswith(("file:", "files:")) or old.get(name) == new.get(name):
            continue  # files are told one by one above
        kind, _, detail = name.partition(":")
        if kind == "arg":
            reasons.append(f"build-arg {detail} changed")
        elif kind == "env":
            reasons.append(f"env {detail} changed")
        elif name == "base":
            base_op = definition.ops.get(getattr(op, "rootfs", None) or getattr(op, "base", None) or "")
            if isinstance(base_op, ImageSource):
                reasons.append("base image digest changed")
            else:
                reasons.append("the previous step changed")
        elif name == "base image":
            reasons.append("base image digest changed")
        elif kind in ("command", "user", "workdir", "network"):
            reasons.append(f"{kind} changed")
        elif kind.startswith("source") or kind.startswith("mount"):
            reasons.append(_describe_source(name, op, definition))
        else:
            reasons.append(f"{name} changed")
    return ", ".join(dict.fromkeys(reasons)) or "inputs changed"


if TYPE_CHECKING:
    from ._runner import BuildRunner

    def _is_a_build_runner(worker: Worker) -> BuildRunner:
        return worker  # the checker proves Worker satisfies every Protocol a build asks of its runner


def _chown_cache_mount(directory: Path, mount: RunMount) -> None:
    """Give a new cache mount its ``uid=``/``gid=`` (the container's ids, shifted by a rootless mapping).

    Rootless, an id the user namespace does not map is refused by the kernel (EINVAL):
    the error names the mount and the id instead of an internal error.
    """
    uid, gid = mount.uid or 0, mount.gid or 0
    try:
        os.chown(directory, uid, gid)
    except OSError as error:
        from pybuild.oci import UNMAPPED_IDS_HINT, unmapped_ids

        missing = unmapped_ids(uid, gid) if error.errno == errno.EINVAL else ""
        if not missing:
            raise
        raise BuildError(f"cache mount {mount.target}: {missing} is outside the ids this rootless pybuild maps", hint=UNMAPPED_IDS_HINT) from None
