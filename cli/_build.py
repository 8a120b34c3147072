"""``pybuild build``: Docker's build flags -> one build."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pybuild._frozen import frozen
from pybuild.errors import PybuildError, StoreError, UsageError

from . import _answer, _remote
from ._io import read_dockerfile
from ._runtime import image_store, open_root, positive_int

if TYPE_CHECKING:  # the build's types, imported only for the checker: a no-op build loads little
    from pybuild.cache import CacheIndex, ContextReads, Root
    from pybuild.cache.remote import CacheSpec, RemoteCache
    from pybuild.dag import BuildOptions, BuildOutcome, BuildPlan, ExportOptions, Platform, Worker, WorkerOptions
    from pybuild.executors import Executor, RootfsCaller
    from pybuild.grammar import Dockerfile
    from pybuild.oci import ImageStore


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("context", nargs="?", default=".", help="the build context: a directory, or - for a tar on stdin")
    parser.add_argument("-f", "--file", help="the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)")
    parser.add_argument("-t", "--tag", action="append", default=[], help="name the image NAME[:TAG] (repeatable)")
    parser.add_argument("--target", help="build this stage (default: the last)")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V", help="set a build-time variable (K alone takes it from the environment)")
    parser.add_argument("--label", action="append", default=[], metavar="K=V", help="add a label to the image")
    parser.add_argument("--no-cache", action="store_true", help="do not use the cache")
    parser.add_argument("--no-cache-filter", action="append", default=[], metavar="STAGE", help="do not use the cache for these stages")
    parser.add_argument("--pull", action="store_true", help="always pull base images")
    parser.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[/VARIANT],...", help="target platforms, comma-separated or repeated (local: the host's); several make an image index")
    parser.add_argument("--network", default="default", choices=["default", "none", "host"], help="network mode of RUN steps")
    parser.add_argument("--allow", action="append", default=[], help="extra privileges: network.host, security.insecure, device[=NAME] (RUN --device)")
    parser.add_argument("--secret", action="append", default=[], metavar="id=ID,src=FILE|env=VAR", help="expose a secret to RUN --mount=type=secret")
    parser.add_argument("--ssh", action="append", default=[], metavar="default|ID=SOCKET", help="forward an SSH agent to RUN --mount=type=ssh")
    parser.add_argument("--progress", default="auto", choices=["auto", "tty", "plain", "rawjson", "quiet"], help="how to show progress")
    parser.add_argument("--step-log-limit", metavar="SIZE", help="with --progress=plain, how much of each step's output to show (default 2MiB)")
    parser.add_argument("--failed-log", metavar="FILE", help="keep the whole output of a failed step in FILE")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image ID")
    parser.add_argument("--iidfile", help="write the image ID to this file")
    parser.add_argument("--metadata-file", help="write build results as JSON to this file")
    parser.add_argument("-m", "--memory", metavar="SIZE", help="memory limit of each RUN step (e.g. 512m, 2g)")
    parser.add_argument("--step-timeout", type=float, metavar="SECONDS", help="kill a RUN step that runs longer than this")
    parser.add_argument("--jobs", type=positive_int, default=None, help="how many steps may run at once (default: no limit, as BuildKit)")
    parser.add_argument("--compression", choices=["gzip", "zstd", "none"], help="layer compression (default: layers are compressed when exported or pushed, gzip)")
    parser.add_argument("--compression-level", type=int, help="compression level")
    parser.add_argument("-o", "--output", action="append", default=[], metavar="type=TYPE[,KEY=VALUE...]", help="where the result goes: image (default), registry, oci, docker, local, tar")
    parser.add_argument("--push", action="store_true", help="push the image to its registry (type=registry)")
    parser.add_argument("--cache-from", action="append", default=[], metavar="type=registry,ref=REF|type=local,src=DIR|IMAGE", help="import build cache from a registry, a directory or an image (repeatable)")
    parser.add_argument("--cache-to", action="append", default=[], metavar="type=registry,ref=REF|type=local,dest=DIR|type=inline", help="export build cache (mode=min|max, compression=, cache-mounts=true, ignore-error=)")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR", help="talk plain HTTP to this registry (loopback always may)")
    parser.add_argument("--check", action="store_true", help="run the build checks (pybuild check) instead of building")
    parser.add_argument("--root", help="the pybuild root (default: $PYBUILD_ROOT or /var/lib/pybuild)")
    _remote.add_arguments(parser)
    parser.set_defaults(fastpath=None)  # main's _fastpath.Invocation: a successful build is recorded for it


def _pairs(values: list[str], what: str, *, from_env: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        key, eq, rest = value.partition("=")
        if not key:
            raise UsageError(f"invalid {what} {value!r}: expected KEY=VALUE")
        if not eq:
            if not from_env:
                raise UsageError(f"invalid {what} {value!r}: expected KEY=VALUE")
            if key not in os.environ:
                continue  # as docker: an unset variable is simply not passed
            rest = os.environ[key]
        out[key] = rest
    return out


def _secrets(values: list[str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for value in values:
        fields = dict(part.partition("=")[::2] for part in value.split(","))
        secret_id = fields.get("id")
        if not secret_id:
            raise UsageError(f"invalid --secret {value.split(',')[0]!r}...: an id is required", hint="--secret id=NAME,src=FILE")
        if "src" in fields or "source" in fields:
            path = fields.get("src") or fields.get("source") or ""
            try:
                out[secret_id] = Path(path).read_bytes()
            except OSError as error:
                raise UsageError(f"secret {secret_id}: cannot read {path}: {error.strerror}") from None
        elif "env" in fields:
            if fields["env"] not in os.environ:
                raise UsageError(f"secret {secret_id}: environment variable {fields['env']} is not set")
            out[secret_id] = os.environ[fields["env"]].encode()
        elif secret_id in os.environ:
            out[secret_id] = os.environ[secret_id].encode()
        else:
            raise UsageError(f"secret {secret_id}: give src=FILE or env=VAR")
    return out


def _ssh(values: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, _, socket = value.partition("=")
        socket = socket or os.environ.get("SSH_AUTH_SOCK", "")
        if not socket:
            raise UsageError(f"--ssh {value}: no agent socket (SSH_AUTH_SOCK is not set)")
        out[name] = socket
    return out


def _progress(args: argparse.Namespace) -> Any:
    from ._progress import PLAIN_OUTPUT_LIMIT, FailedStepLog, JsonProgress, PlainProgress, QuietProgress
    from ._prune import parse_size

    limit = parse_size(args.step_log_limit) if args.step_log_limit else PLAIN_OUTPUT_LIMIT
    display: Any
    if args.quiet or args.progress == "quiet":
        display = QuietProgress()
    elif args.progress == "rawjson":
        display = JsonProgress()
    elif args.progress in ("tty", "auto") and sys.stderr.isatty():
        from ._tty import TtyProgress

        display = TtyProgress()
    else:
        display = PlainProgress(output_limit=limit)
    if args.failed_log:
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.failed_log))):
            raise UsageError(f"--failed-log {args.failed_log}: its directory does not exist")
        display = FailedStepLog(display, args.failed_log)
    return display


def run(args: argparse.Namespace) -> int:
    """Options -> build -> outputs: every flag is read and checked first, then one
    build (whose export stage writes the image, the cache exports and every
    ``--output``), then what the build made is reported."""
    _check_flags(args)
    root = open_root(args.root)
    deferred = _defer_durability(root)
    try:
        code = _run(args, root)
    except BaseException:
        root.snapshots.settle()  # the steps committed before the failure are kept: written out too
        raise
    else:
        _settle(root)
        return code
    finally:
        if deferred:
            from pybuild.executors import defer_step_syncs

            defer_step_syncs(False)
        root.close()  # SQLite checkpoints the index here, not in the interpreter's teardown (cli/main.py)


def _defer_durability(root: Root) -> bool:
    """The build's new snapshots are written to disk once, at its end (``_settle``; a served
    build's client has its answer by then), not step by step; trusted meanwhile in this boot
    only.  Nothing changes when the user traded durability away (PYBUILD_VOLATILE_OVERLAYS=1)."""
    if os.environ.get("PYBUILD_VOLATILE_OVERLAYS") == "1" or not root.snapshots.defer_durability():
        return False
    from pybuild.executors import defer_step_syncs

    defer_step_syncs()
    return True


def _settle(root: Root) -> None:
    error = root.snapshots.settle()
    if error is not None:
        raise StoreError(error, hint="check the disk pybuild's root is on (a full disk, dmesg), then build again")


def _run(args: argparse.Namespace, root: Root) -> int:
    context = _open_context(args, root)
    recording = _Recording(args) if args.fastpath is not None and not args.check else None
    try:
        data, name = _dockerfile_source(context)
        build_args = _pairs(args.build_arg, "--build-arg", from_env=True)
        if args.check:
            return _check(args, context, data, name, build_args)
        request = _request(args, build_args)
        outcome = _build(args, root, context, _parse(data, name), name, request, recording)
    finally:
        context.close()
    to_stdout = any(o.to_stdout for o in request.export.outputs)
    _report(args, outcome, to_stdout=to_stdout)
    if recording is None or not recording.debugging():  # (its account of the record goes to stderr)
        if recording is not None and _answer.early():
            recording.hold()  # a rebuild right after this answer waits for the record
        _answer.give(0)  # the result is final: what follows (``_settle``, the record) is for later builds
    _settle(root)  # before the record: a record may name only snapshots on disk
    if recording is not None:
        try:
            recording.save(root, context, data, outcome, _report_output(args, outcome, to_stdout=to_stdout))
        finally:
            recording.release()
    return 0


class _Recording:
    """What the fast path's record of this build needs from it: the events the display
    was given and every context path the hasher read (``_fastpath_record``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from pybuild.cache import ContextReads

        self.args = args
        self.events: list[Any] = []
        self.reads = ContextReads()
        self._lock = -1

    def hold(self) -> None:
        """Lock the record's place (``_fastpath.wait_for_writer``) until ``release``: taken
        before the client's answer, so a rebuild it runs next waits for this record."""
        import fcntl

        from ._fastpath import LOCK_SUFFIX, record_path

        invocation = self.args.fastpath
        path = record_path(invocation.root, invocation.rebuild_key) + LOCK_SUFFIX
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return  # no record will be written there either: nothing to wait for
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another build of this invocation writes its record: it holds the place
            os.close(fd)
            return
        self._lock = fd

    def release(self) -> None:
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1

    def display(self, inner: Any) -> Any:
        """``inner``, also keeping each event but a step's output (which no record repeats)."""
        events = self.events

        class Kept:
            def __call__(self, event: Any) -> None:
                if type(event).__name__ != "StepLog":
                    events.append(event)
                inner(event)

            def close(self) -> None:
                if hasattr(inner, "close"):
                    inner.close()

        return Kept()

    def debugging(self) -> bool:
        """Whether the record's writing is told on stderr (PYBUILD_DEBUG_FASTPATH)."""
        from ._fastpath import DEBUG_ENV

        return os.environ.get(DEBUG_ENV, "") not in ("", "0")

    def save(self, root: Root, context: _Context, data: bytes, outcome: Any, report: tuple[list[tuple[str, bytes]], str, str]) -> None:
        from . import _fastpath_record

        local = self.args.context != "-" and not self.args.context.startswith(("http://", "https://", "git@", "git://", "ssh://"))
        _fastpath_record.save(_fastpath_record.Finished(
            invocation=self.args.fastpath, flags_given=_flags_given(self.args), args=self.args, root=root,
            context_dir=context.directory if local else None, dockerfile=context.dockerfile, dockerfile_bytes=data,
            outcome=outcome, events=self.events, reads=self.reads, report=report,
        ))


def _flags_given(args: argparse.Namespace) -> frozenset[str]:
    """The flags whose value is not their default."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return frozenset(name for name, value in vars(args).items() if value != parser.get_default(name))


def _platforms(args: argparse.Namespace) -> tuple[Platform, ...]:
    """--platform as buildx reads it: comma-separated and repeatable, each once;
    none given: () (the host's, implicitly)."""
    from pybuild.dag import Platform

    out: list[Platform] = []
    for value in args.platform:
        try:
            out += [p for p in Platform.parse_list(value) if p not in out]
        except ValueError as error:
            raise UsageError(f"--platform: {error}", hint="e.g. --platform linux/amd64,linux/arm64") from None
    return tuple(out)


def _check_flags(args: argparse.Namespace) -> None:
    """What the flags alone say is wrong, before anything is opened."""
    from pybuild.oci import parse_outputs

    if len(_platforms(args)) > 1 and any(o.type == "docker" for o in parse_outputs(args.output, push=args.push)):
        # BuildKit's docker exporter: "docker exporter does not currently support exporting manifest lists"
        raise UsageError(
            "-o type=docker cannot hold several platforms: a docker archive has no image index",
            hint="use -o type=oci, push with --push, or build one --platform at a time",
        )
    from pybuild.dag import is_device_entitlement

    for entitlement in args.allow:
        if entitlement not in ("network.host", "security.insecure") and not is_device_entitlement(entitlement):
            raise UsageError(
                f"unknown entitlement {entitlement!r}",
                hint="pybuild knows network.host, security.insecure, device and device=NAME",
            )
    if args.network == "host" and "network.host" not in args.allow:
        raise UsageError("--network=host needs --allow network.host")


def _dockerfile_source(context: _Context) -> tuple[bytes, str]:
    if context.dockerfile_bytes is not None:
        return context.dockerfile_bytes, context.dockerfile
    return read_dockerfile(context.dockerfile)


def _parse(data: bytes, name: str) -> Dockerfile:
    from pybuild.grammar import parse

    return parse(data, name)


def _check(args: argparse.Namespace, context: _Context, data: bytes, name: str, build_args: dict[str, str]) -> int:
    """``build --check``: the build checks instead of a build."""
    from pybuild.dag import check_dockerfile

    from ._check import print_report

    report = check_dockerfile(
        data, name, build_args=build_args, context_dir=context.directory,
        dockerfile_path=context.dockerfile, target=args.target,
    )
    print_report(report, name)
    return 1 if report.failed else 0


@frozen
class _Request:
    """Everything the flags ask of one build, read and checked."""

    options: BuildOptions
    worker: WorkerOptions
    export: ExportOptions
    cache_from: tuple[CacheSpec, ...]
    cache_to: tuple[CacheSpec, ...]


def _request(args: argparse.Namespace, build_args: dict[str, str]) -> _Request:
    from pybuild.dag import BuildOptions, ExportOptions, WorkerOptions, host_platform
    from pybuild.oci import parse_outputs

    source_date_epoch = _source_date_epoch(build_args)
    platforms = _platforms(args)
    options = BuildOptions(
        build_args=build_args,
        target=args.target,
        labels=_pairs(args.label, "--label"),
        platform=platforms[0] if platforms else host_platform(),
        platforms=platforms,
        network=args.network,
        no_cache=args.no_cache,
        no_cache_stages=frozenset(s.lower() for value in args.no_cache_filter for s in value.split(",") if s),
        source_date_epoch=source_date_epoch,
        entitlements=frozenset(args.allow),
    )
    worker = WorkerOptions(
        allow_host_network="network.host" in args.allow,
        allow_insecure="security.insecure" in args.allow,
        entitlements=frozenset(args.allow),
        secrets=_secrets(args.secret),
        ssh=_ssh(args.ssh),
        step_timeout=args.step_timeout,
        memory_limit=_memory(args.memory),
    )
    outputs = parse_outputs(args.output, push=args.push)
    rewrite = any(o.rewrite_timestamp for o in outputs)
    if rewrite and source_date_epoch is None:
        raise UsageError("rewrite-timestamp needs SOURCE_DATE_EPOCH", hint="--build-arg SOURCE_DATE_EPOCH=<seconds>")
    export = ExportOptions(
        tags=tuple(args.tag), compression=args.compression, compression_level=args.compression_level,
        rewrite_timestamp=rewrite, outputs=outputs,
    )
    return _Request(options, worker, export, _cache_specs(args.cache_from, export=False), _cache_specs(args.cache_to, export=True))


def _cache_specs(values: list[str], *, export: bool) -> tuple[CacheSpec, ...]:
    """The --cache-from/--cache-to values pybuild.cache.remote reads (REAPI's are cli/_remote's);
    a build given none does not load it."""
    specs = [value for value in values if not _remote.is_reapi_cache(value)]
    if not specs:
        return ()
    from pybuild.cache.remote import parse_cache_spec

    return tuple(parse_cache_spec(value, export=export) for value in specs)


def _build(
    args: argparse.Namespace, root: Root, context: _Context, dockerfile: Dockerfile, name: str, request: _Request,
    recording: _Recording | None = None,
) -> BuildOutcome:
    """The build itself, in one trio run; the executors and registry client it made are closed after."""
    import trio

    from pybuild.dag import build

    from ._runtime import executors

    store = image_store(root)
    executor, files = executors(root)
    registry = _LazyRegistry(args.insecure_registry)
    progress = _progress(args) if recording is None else recording.display(_progress(args))
    reads = recording.reads if recording is not None else None
    remote_caches: list[RemoteCache] = []  # filled from --cache-from before the build starts
    # the zygote early (executor.start_early) for RUN steps that run here: not with --remote-executor
    start_zygote = executor.start_early if args.remote_executor is None else None
    local = _runner_factory(root, store, context, name, executor, files, request, remote_caches, reads, start_zygote)
    make_runner = _remote.runner_factory(args, local, progress)

    async def main() -> BuildOutcome:
        try:
            # an image's inline cache is per platform: a registry's is imported for each
            # target (a local cache directory has no platforms: once is enough)
            specs = list(request.cache_from)
            for platform in request.options.platforms or (request.options.platform,):
                remote_caches.extend(await _import_caches(specs, registry, str(platform), progress))
                specs = [spec for spec in specs if spec.kind == "registry"]
            return await build(
                dockerfile, request.options, store=store, make_runner=make_runner,
                puller=_SharedClientPuller(store, registry), pull=args.pull,
                jobs=args.jobs, export=request.export, cache_to=request.cache_to,
                registries=registry, stdout=sys.stdout.buffer, emit=progress,
            )
        finally:
            with trio.CancelScope(shield=True):
                await registry.aclose()
                await executor.aclose()
                files.close()

    try:
        return trio.run(main)
    finally:
        if hasattr(progress, "close"):
            progress.close()


def _runs_soon(plan: BuildPlan, ids: dict[str, str], index: CacheIndex) -> bool:
    """Whether a RUN step of the plan will most likely run: one the cache is off for, or one
    this Dockerfile never ran (no history of its step).  A build whose RUN steps ran before
    is most often cached there (a dependency install before a COPY of the sources), and
    would start a zygote (~30 ms of CPU) only to stop it."""
    from pybuild.dag import ExecOp

    needed = plan.definition.needed_by([t.target.op for t in plan.targets or (plan,) if t.target.op])
    for digest, op in needed.ops.items():
        if isinstance(op, ExecOp) and (op.ignore_cache or digest not in ids or index.step_key(ids[digest]) is None):
            return True
    return False


def _runner_factory(
    root: Root, store: ImageStore, context: _Context, name: str, executor: Executor, files: RootfsCaller, request: _Request,
    remote_caches: list[RemoteCache], reads: ContextReads | None = None, start_zygote: Callable[[], None] | None = None,
) -> Callable[[BuildPlan], Worker]:
    """How the build makes its runner once the plan is known: a Worker on this root.
    ``start_zygote`` is called then if a RUN step will most likely run (``_runs_soon``):
    the zygote's start passes beside the steps before it and the runner's own set-up."""
    from pybuild.cache import ContextHasher, DockerIgnore
    from pybuild.dag import Context, StoreImageChains, Worker, step_ids
    from pybuild.oci import RemoteFetcher, SnapshotLayers

    context_dir, dockerfile_path = context.directory, context.dockerfile
    ignore = DockerIgnore.load(context_dir, None if dockerfile_path == "<stdin>" else Path(dockerfile_path))

    def make_runner(plan: BuildPlan) -> Worker:
        ids = step_ids(plan, str(Path(dockerfile_path).absolute()) if dockerfile_path != "-" else "<stdin>")
        if start_zygote is not None and _runs_soon(plan, ids, root.index):
            start_zygote()
        hasher = Context(context_dir, ContextHasher(context_dir, ignore, root.index, reads=reads)) if plan.context_op else None
        return Worker(
            plan.definition,
            root=root,
            executor=executor,
            files=files,
            images=StoreImageChains(store),
            context=hasher,
            fetcher=RemoteFetcher(),
            options=request.worker,
            step_ids=ids,
            dockerfile_name=name,
            remote_caches=remote_caches,
            layers=SnapshotLayers(store),
        )

    return make_runner


def _report(args: argparse.Namespace, outcome: Any, *, to_stdout: bool) -> None:
    from pybuild.oci import write_output_bytes  # a symlink, FIFO or device at the path is written through

    files, out, err = _report_output(args, outcome, to_stdout=to_stdout)
    for path, data in files:
        write_output_bytes(path, data)
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.write(err)


def _report_output(args: argparse.Namespace, outcome: Any, *, to_stdout: bool) -> tuple[list[tuple[str, bytes]], str, str]:
    """What the build reports: the files it writes (--iidfile, --metadata-file) and what
    it prints on stdout and stderr after its progress (the fast path repeats them)."""
    image, index = outcome.image, outcome.index
    # several platforms: the index is what was built (buildx's iidfile and
    # metadata then name the index digest, there being no one config)
    built = index.digest if index is not None else image.id
    files = [(args.iidfile, built.encode())] if args.iidfile else []
    pushed = [pair for result in outcome.outputs for pair in result.pushed]
    if args.metadata_file:
        if index is None:
            metadata = {"containerimage.config.digest": image.id, "containerimage.digest": pushed[0][1] if pushed else image.manifest_digest}
        else:  # the index is pushed last, after its manifests
            metadata = {"containerimage.digest": pushed[-1][1] if pushed else index.digest}
        metadata["image.name"] = ",".join(index.tags if index is not None else image.tags)
        files.append((args.metadata_file, (json.dumps(metadata, indent=2) + "\n").encode()))
    if args.quiet:
        return files, "" if to_stdout else built + "\n", ""
    from pybuild.oci import parse_reference

    lines = [f"writing image {image.id} ({image.platform})" for image in outcome.images]
    lines += [f"writing image index {built}" if index is not None else f"writing image {built}"]
    lines += [f"naming to {parse_reference(t)}" for t in args.tag]
    lines += [f"pushed {reference}@{digest}" for reference, digest in pushed]
    return files, "", "\n".join(lines) + "\n"


class _LazyRegistry:
    """One registry client for the whole build, made only if something needs it
    (importing httpx costs a cached rebuild tens of milliseconds).

    ``quick()`` is the same client giving up after one retry, for the build
    cache's documents: an unreachable cache is a warning, and should cost
    seconds, not tens of them.
    """

    QUICK_RETRIES = 1

    def __init__(self, insecure: list[str]) -> None:
        self.insecure = insecure
        self._client: Any = None
        self._quick: Any = None

    def client(self) -> Any:
        if self._client is None:
            from pybuild.oci import registry_client

            self._client = registry_client(self.insecure)
        return self._client

    def quick(self) -> Any:
        if self._quick is None:
            self._quick = self.client().with_retries(self.QUICK_RETRIES)
        return self._quick

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class _SharedClientPuller:
    """The build's puller, on the build's one registry client (made on the first pull)."""

    def __init__(self, store: Any, registry: _LazyRegistry) -> None:
        self.store = store
        self.registry = registry

    async def pull(self, ref: str, platform: str) -> None:
        from pybuild.oci import StorePuller

        await StorePuller(self.store, client=self.registry.client()).pull(ref, platform)


async def _import_caches(specs: list[CacheSpec], registry: _LazyRegistry, platform: str, emit: Any) -> list[RemoteCache]:
    """Every --cache-from that can be read; the others warn (or fail with ignore-error=false)."""
    if not specs:
        return []  # the remote cache's modules load only for a build that reads one
    import trio

    from pybuild.dag import Notice, import_remote_cache

    caches = []
    for spec in specs:
        where = spec.ref or spec.path
        try:
            if spec.kind == "registry":
                cache = await import_remote_cache(spec, client=registry.quick(), blob_client=registry.client(), platform=platform)
            else:
                cache = await import_remote_cache(spec, client=None, platform=platform)
            caches.append(cache)
        except (PybuildError, OSError) as error:
            message = str(error) if isinstance(error, PybuildError) else (error.strerror or str(error))
            if not spec.ignore_error:
                raise PybuildError(f"importing cache from {where} failed: {message}") from None
            emit(Notice(f"WARNING: importing cache from {where} failed: {message}; building without it", trio.current_time()))
    return caches


def _memory(value: str | None) -> int | None:
    """Docker's --memory units: b, k, m, g (binary)."""
    if value is None:
        return None
    units = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    number, unit = value[:-1], value[-1].lower()
    if unit.isdigit():
        number, unit = value, "b"
    if not number.isdigit() or unit not in units:
        raise UsageError(f"invalid --memory {value!r}", hint="e.g. 512m or 2g")
    from pybuild.executors import memory_limit_unavailable

    if reason := memory_limit_unavailable():  # refused before anything runs, never ignored
        raise UsageError(f"--memory {value}: {reason}", hint="leave out --memory, or run pybuild as root")
    return int(number) * units[unit]


def _source_date_epoch(build_args: dict[str, str]) -> int | None:
    value = build_args.get("SOURCE_DATE_EPOCH") or os.environ.get("SOURCE_DATE_EPOCH")
    if not value:
        return None
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH must be a number of seconds, not {value!r}")
    return int(value)


@dataclass
class _Context:
    """Where the build context and the Dockerfile come from."""

    directory: Path
    dockerfile: str  # a path, or a name for messages when the bytes are given
    dockerfile_bytes: bytes | None = None
    cleanup: Any = None

    def close(self) -> None:
        if self.cleanup is not None:
            self.cleanup()


# gzip, bzip2, xz and zstd: what the docker CLI (DetectArchiveReader) and
# BuildKit's dockerui (isArchive, zstd since Dockerfile 1.27) take for an archive
_TAR_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd")


def _looks_like_tar(head: bytes) -> bool:
    return any(head.startswith(m) for m in _TAR_MAGIC) or head[257:262] == b"ustar"


def _unpack_context_tar(root: Any, stream: Any) -> Any:
    """A context tar, plain or compressed (told by its magic bytes, as Docker
    does), unpacked into the root: a ``TarContext``."""
    from pybuild.cache import open_tar_context
    from pybuild.errors import ContextError, ImageError
    from pybuild.oci import open_decompressed

    try:
        plain = open_decompressed(stream)
        try:
            return open_tar_context(root, plain)
        finally:
            plain.close()
    except ImageError as error:  # the compressed stream is damaged or cut short
        raise ContextError(f"the build context tar is damaged: {error.message}", hint="send a tar made with `tar -c` of a directory") from None


def _open_context(args: argparse.Namespace, root: Any) -> _Context:
    """The context as Docker reads it: a directory, a tar or Dockerfile on stdin, a URL."""
    if args.context == "-":
        if args.file == "-":
            raise UsageError("stdin cannot be both the context and the Dockerfile")
        data = sys.stdin.buffer.read()
        if _looks_like_tar(data[:512]):
            import io

            tar = _unpack_context_tar(root, io.BytesIO(data))
            name = args.file or "Dockerfile"
            return _context_dockerfile(tar.path, name, str(tar.path / name), cleanup=tar.close)
        empty = root.tmp_dir("context-")  # a Dockerfile alone: an empty context
        return _Context(empty, "<stdin>", data)
    if args.context.startswith(("http://", "https://", "git@", "git://", "ssh://")):
        return _remote_context(args, root)
    context = Path(args.context)
    if not context.is_dir():
        raise UsageError(f"unable to prepare context: path {args.context!r} not found", hint="the context is a directory, -, or a URL")
    if args.file == "-":
        return _Context(context.absolute(), "<stdin>", read_dockerfile("-")[0])
    if args.file:  # a path the user chose, read as given
        return _Context(context.absolute(), args.file)
    return _context_dockerfile(context.absolute(), "Dockerfile", str(context / "Dockerfile"))


def _context_dockerfile(directory: Path, name: str, display: str, cleanup: Any = None) -> _Context:
    """A Dockerfile the context provides, read inside it: a symlink there is
    followed only while it stays in the context, as BuildKit reads it from its
    copy of the context (never the host's file a hostile context links to)."""
    from pybuild.cache import read_in_context
    from pybuild.grammar import MAX_DOCKERFILE_SIZE

    try:
        data = read_in_context(directory, name, limit=MAX_DOCKERFILE_SIZE)
        if data is None:
            raise UsageError(f"{display}: no such file", hint="name the Dockerfile with -f PATH")
    except BaseException:
        if cleanup is not None:
            cleanup()
        raise
    return _Context(directory, display, data, cleanup=cleanup)


def _remote_context(args: argparse.Namespace, root: Any) -> _Context:
    """A git repository (``URL.git#ref:subdir``), a tarball URL, or the URL of a
    Dockerfile alone, fetched into the root."""
    import trio

    from pybuild.dag import git_source, http_source, is_git_source
    from pybuild.oci import RemoteFetcher

    fetcher = RemoteFetcher()
    where = root.tmp_dir("remote-context-")
    if is_git_source(args.context):
        trio.run(fetcher.git, git_source(args.context), where)
        directory = where
    else:
        trio.run(fetcher.http, http_source(args.context, "context"), where)
        with open(where / "context", "rb") as stream:
            if not _looks_like_tar(stream.read(1024)):
                # no archive: the download is the Dockerfile and the context holds
                # only it, named "context" (BuildKit's dockerui isArchive)
                if args.file == "-":
                    return _Context(where, "<stdin>", read_dockerfile("-")[0])
                return _context_dockerfile(where, "context", str(where / "context"))
            stream.seek(0)
            tar = _unpack_context_tar(root, stream)
        directory = tar.path
    if args.file == "-":
        return _Context(directory, "<stdin>", read_dockerfile("-")[0])
    name = args.file or "Dockerfile"
    return _context_dockerfile(directory, name, str(directory / name))
