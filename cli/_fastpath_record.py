"""What a finished build depended on, written down for ``_fastpath`` to check next time.

Called after a build succeeded and reported.  Nothing is written unless every
dependency can be recorded exactly; what cannot (flags reaching outside the
store and the context, a terminal's live view, a context read from stdin or a
URL, a Dockerfile behind a symlink ...) leaves no record and every such build
stays a normal one.  Writing a record never fails a build.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._frozen import frozen
from . import _fastpath
from ._fastpath import DIRECTORY, FILE, NO_CONTENT, SYMLINK, Invocation, Record, debug, listing_bytes, signature

if TYPE_CHECKING:
    from pybuild.cache import ContextReads, DockerIgnore, Root

# flags whose whole effect is in the invocation key and the recorded dependencies;
# any other flag away from its default (caches, outputs, --pull, secrets, remote
# execution ...) reaches outside them, and such a build is not recorded
SAFE_FLAGS = frozenset({
    "context", "file", "tag", "target", "build_arg", "label", "platform", "network", "allow", "progress",
    "step_log_limit", "quiet", "iidfile", "metadata_file", "step_timeout", "jobs", "compression",
    "compression_level", "insecure_registry", "root", "fastpath",
})
# the packages whose code decides a build's result: a change there is a change of pybuild
_SOURCE_PACKAGES = ("cli", "dag", "oci", "cache", "grammar", "executors")


@frozen
class Finished:
    """A build that succeeded, as the build command saw it."""

    invocation: Invocation
    flags_given: frozenset[str]  # the flags away from their default
    args: Any  # the parsed command line
    root: Root
    context_dir: Path | None  # None: not a directory of the host (stdin, a URL)
    dockerfile: str  # its path
    dockerfile_bytes: bytes
    outcome: Any  # dag.BuildOutcome
    events: Sequence[Any]  # what the progress display was given
    reads: ContextReads
    report: tuple[list[tuple[str, bytes]], str, str]  # files written, stdout, stderr


def save(finished: Finished) -> None:
    """Write the record of ``finished``, or say (with PYBUILD_DEBUG_FASTPATH) why not."""
    started = _fastpath._time_ns()
    try:
        reason = _refusal(finished)
        if reason is None:
            record = _record(finished)
            if isinstance(record, str):
                reason = record
            else:
                record.save(_fastpath.record_path(finished.invocation.root, finished.invocation.rebuild_key))
                debug(f"recorded ({len(_fastpath.split_paths(record.fields[b'paths']))} paths, {(_fastpath._time_ns() - started) / 1e6:.0f} ms)")
                return
        debug(f"not recorded: {reason}")
    except Exception as error:  # noqa: BLE001 - a record is an optimisation; the build has succeeded
        debug(f"not recorded: {type(error).__name__}: {error}")


def _refusal(finished: Finished) -> str | None:
    """Why this build cannot be answered from a record next time; None if it can."""
    args, invocation = finished.args, finished.invocation
    unsafe = sorted(finished.flags_given - SAFE_FLAGS - {"no_cache"})
    if unsafe:
        return f"--{unsafe[0].replace('_', '-')} reaches outside what is recorded"
    if ("--no-cache" in invocation.argv) != bool(args.no_cache) or (args.no_cache and "--" in invocation.argv):
        return "--no-cache is not given as such"
    if finished.context_dir is None or args.file == "-":
        return "the context or the Dockerfile is not a file of this host"
    if os.path.realpath(invocation.root) != os.path.realpath(finished.root.path):
        return "the root is not the one the fast path would look in"
    if _fastpath.build_arg_env_names(invocation.rebuild_argv) != [v for v in args.build_arg if "=" not in v]:
        return "the --build-arg flags are not read as the fast path reads them"
    if b"--device" in finished.dockerfile_bytes:
        return "RUN --device depends on the CDI registry"
    if finished.outcome.outputs:
        return "an --output"
    from pybuild.executors import rootless

    mapping = rootless()
    if mapping is not None and mapping.one_id:  # entering the namespace warns on every command
        return "a rootless build without subordinate ids warns each time"
    from pybuild.dag import ExecOp, FileOp, ImageSource, LocalSource, MergeOp

    for op in finished.outcome.plan.definition.ops.values():
        # a download or a git checkout is asked again by a build with nothing else to do
        if not isinstance(op, (ImageSource, LocalSource, ExecOp, FileOp, MergeOp)):
            return f"a {type(op).__name__} reaches outside the host"
        # --no-cache (recorded for the same command without it: the steps it ran are what the
        # cache now holds) is the one way to ignore_cache here; --no-cache-filter is refused above
        if isinstance(op, ExecOp) and op.ignore_cache and not args.no_cache:
            return "a step runs whatever the cache holds"
        if isinstance(op, ExecOp) and op.platform:  # a build asks first whether this machine can still run it
            return "a step of a foreign platform depends on the emulators registered"
    if not finished.reads.consistent:
        return "the context changed while it was read"
    return None


def _progress_mode(args: Any) -> str:
    """As ``_build._progress`` picks the display."""
    if args.quiet or args.progress == "quiet":
        return "quiet"
    if args.progress == "rawjson":
        return "rawjson"
    if args.progress in ("tty", "auto") and _fastpath._stderr_is_tty():
        return "tty"
    return "plain"


def noop_events(events: Iterable[Any]) -> list[Any] | None:
    """The events a rebuild with nothing to do gives, from this build's: each step that
    ran is CACHED where it finished; its pulls are not repeated.  None if unsure."""
    out: list[Any] = []
    for event in events:
        kind = type(event).__name__
        if kind in ("StepCached", "StepFinished"):
            out.append(_fastpath.StepCached(event.digest, event.name, event.time))
        elif kind in ("StepStarted", "StepMiss", "StepLog"):
            continue
        elif kind == "Notice" and event.message.startswith("pulling "):
            continue
        elif kind == "Notice" and (event.message == "exporting to image" or event.message.startswith("WARNING: ")):
            out.append(_fastpath.Notice(event.message, event.time))
        else:
            return None
    return out


def _progress_text(args: Any, events: Sequence[Any]) -> bytes:
    """What the build's display prints for ``events``, rendered by that display."""
    from ._progress import PLAIN_OUTPUT_LIMIT, JsonProgress, PlainProgress
    from ._prune import parse_size

    mode = _progress_mode(args)
    if mode in ("quiet", "tty"):  # the live view is replayed from the events
        return b""
    out = io.StringIO()
    limit = parse_size(args.step_log_limit) if args.step_log_limit else PLAIN_OUTPUT_LIMIT
    display = JsonProgress(out) if mode == "rawjson" else PlainProgress(out, output_limit=limit)
    for event in events:
        display(event)
    return out.getvalue().encode("utf-8", "surrogateescape")


class _Builder:
    """The record's sections, gathered."""

    def __init__(self) -> None:
        self.paths: list[bytes] = []
        self.sigs: list[int] = []
        self.digests: list[bytes] = []
        self.same: list[tuple[bytes, os.stat_result]] = []
        self.absent: list[bytes] = []
        self.files: list[bytes] = []
        self.seen: set[bytes] = set()
        self.wholes: set[bytes] = set()  # sha256 of a directory's path + that of all its names (some hidden)

    def whole(self, path: bytes, st: os.stat_result, kind: int, digest: bytes = b"\0" * 32) -> None:
        self.add(path, signature(st), bytes([kind]) + digest)

    def add(self, path: bytes, sig: tuple[int, ...], digest: bytes) -> None:
        """``path`` checked whole: its signature, and its kind byte and content digest."""
        if path in self.seen:
            return
        self.seen.add(path)
        self.paths.append(path)
        self.sigs.extend(sig)
        self.digests.append(digest)

    def file(self, path: bytes, data: bytes) -> None:
        self.files.append(path + b"\0" + data)

    def exists(self, path: bytes) -> bool:
        """Checked as still the same object (``path`` exists now); False if it does not."""
        try:
            self.same.append((path, os.lstat(path)))
        except FileNotFoundError:
            return False
        return True

    def file_or_absent(self, path: bytes) -> str | None:
        """``path``'s bytes as a regular file, or its absence; why not, for anything else."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            self.absent.append(path)
            return None
        if not stat.S_ISREG(st.st_mode):
            return f"{os.fsdecode(path)} is not a regular file"
        data = _fastpath._read_regular(path)
        if data is None:
            return f"{os.fsdecode(path)} cannot be read"
        self.file(path, data)
        return None


def _record(finished: Finished) -> Record | str:
    """The record, or why there is none."""
    started = _fastpath._time_ns()
    builder = _Builder()
    events = noop_events(finished.events)
    if events is None:
        return "the build said something a rebuild would not repeat"
    for reason in (_add_dockerfile(builder, finished), _add_store(builder, finished)):
        if reason is not None:
            return reason
    ignore = _ignore_rules(finished)
    if isinstance(ignore, str):
        return ignore
    _add_context(builder, finished, _Previous(finished), ignore)
    _add_sources(builder)
    since = min(started, finished.reads.started_ns or started)
    from array import array

    sigs = array("q", builder.sigs)
    files, stdout, stderr = finished.report
    fields = {
        b"key": finished.invocation.rebuild_key,
        b"root": os.fsencode(finished.invocation.root),
        b"time": b"%d" % since,
        b"paths": b"\0".join(builder.paths),
        b"sigs": sigs.tobytes(),
        b"digests": b"".join(builder.digests),
        b"racy": _fastpath.racy_indices(sigs, len(builder.paths), since).tobytes(),
        b"same_paths": b"\0".join(path for path, _ in builder.same),
        b"same_sigs": array("q", [v for _, st in builder.same for v in signature(st)[:2] + (stat.S_IFMT(st.st_mode),)]).tobytes(),
        b"absent": b"\0".join(builder.absent),
        b"mode": _progress_mode(finished.args).encode(),
        b"progress": _progress_text(finished.args, events),
        b"stdout": stdout.encode("utf-8", "surrogateescape"),
        b"stderr": stderr.encode("utf-8", "surrogateescape"),
        b"context": os.fsencode(finished.context_dir or ""),  # never None here: _refusal said so
        b"ignore": "\n".join(ignore.patterns).encode("utf-8", "surrogateescape"),
        b"wholes": b"".join(sorted(builder.wholes)),
    }
    writes = [os.fsencode(os.path.abspath(path)) + b"\0" + data for path, data in files]
    replayed = [_fastpath.encode_event(event) for event in events] if _progress_mode(finished.args) == "tty" else []
    return Record(fields, {b"file": builder.files, b"write": writes, b"event": replayed})


def _add_dockerfile(builder: _Builder, finished: Finished) -> str | None:
    """The Dockerfile's bytes, and each ignore file the build could have read (or its absence)."""
    path = os.fsencode(os.path.abspath(finished.dockerfile))
    if os.path.islink(path) or _fastpath._read_regular(path) != finished.dockerfile_bytes:
        return "the Dockerfile is a symlink, or changed during the build"
    builder.file(path, finished.dockerfile_bytes)
    assert finished.context_dir is not None
    candidates = [path + b".dockerignore", os.fsencode(finished.context_dir / ".dockerignore")]
    for candidate in candidates:
        # its bytes are read now, the build read them when it started: written or made
        # between, the record would pair the new rules with what the old ones let the build see
        if _changed_since(candidate, finished.invocation.started_ns):
            return f"{os.fsdecode(candidate)} changed during the build"
        reason = builder.file_or_absent(candidate)
        if reason is not None:
            return reason
    return None


def _changed_since(path: bytes, since_ns: int) -> bool:
    """Whether ``path`` changed at ``since_ns`` or after, as far as its times can tell: the
    kernel stamps files from a clock up to a tick behind ``time_ns`` (10 ms at HZ=100)."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return max(st.st_mtime_ns, st.st_ctime_ns) >= since_ns - _CLOCK_TICK_NS


_CLOCK_TICK_NS = 10_000_000


def _add_store(builder: _Builder, finished: Finished) -> str | None:
    """The result and the bases as the store holds them: image records and tags (their
    files' bytes), the index file and its generation, the snapshots and blobs."""
    from pybuild.dag import ImageSource

    from ._runtime import image_store

    root, outcome = finished.root, finished.outcome
    store = image_store(root)
    images = list(outcome.images) or [outcome.image]
    ids = [image.id for image in images] + ([outcome.index.digest] if outcome.index is not None else [])
    tags = list(outcome.index.tags if outcome.index is not None else outcome.image.tags)
    for op in outcome.plan.definition.ops.values():
        if isinstance(op, ImageSource):
            ids.append(store.image_by_manifest(op.manifest_digest).id)
            if "@" not in op.ref:
                tags.append(op.ref)
    for path in root.index.journal_files(images=ids, tags=tags):
        data = _fastpath._read_regular(os.fsencode(path))
        if data is None:
            return f"the store has no record file {path}"
        builder.file(os.fsencode(path), data)
    generation = root.index.generation_file
    if generation is None or builder.file_or_absent(os.fsencode(generation)) is not None:
        return "the store has no generation file"
    if not builder.exists(os.fsencode(root.index.path)):
        return "the index is gone"
    snapshots = {sid for result in outcome.results.values() for sid in (*result.chain, *([result.layer] if result.layer else []))}
    for sid in sorted(snapshots):
        if not builder.exists(os.fsencode(root.snapshots.tree(sid))):
            return f"snapshot {sid} is gone"
    for image in images:
        for digest in (image.id, image.manifest_digest, *(layer.digest for layer in image.layers)):
            blob = root.blobs.path(digest)
            if blob is not None:
                builder.exists(os.fsencode(blob))
    return None


class _Previous:
    """The previous record of the invocation: a file the hasher did not read this time
    (its selection's digest was known) keeps the content digest it had there, if its
    signature is the one it was hashed under then (and was not racy)."""

    def __init__(self, finished: Finished) -> None:
        from array import array

        self.index: dict[bytes, int] = {}
        self.sigs, racy = array("q"), array("q")
        self.digests = b""
        try:
            with open(_fastpath.record_path(finished.invocation.root, finished.invocation.rebuild_key), "rb") as file:
                old = Record.parse(file.read())
        except (OSError, ValueError):
            return
        paths = _fastpath.split_paths(old.fields[b"paths"])
        self.sigs.frombytes(old.fields[b"sigs"])
        racy.frombytes(old.fields[b"racy"])
        self.digests = old.fields[b"digests"]
        if len(self.sigs) == _fastpath.SIG_FIELDS * len(paths) and len(self.digests) == _SLOT * len(paths):
            self.index = {path: i for i, path in enumerate(paths)}
            for i in racy:
                self.index.pop(paths[i], None)

    def digest(self, path: bytes, sig: tuple[int, ...]) -> bytes:
        i = self.index.get(path)
        if i is None or self.digests[_SLOT * i] != FILE or tuple(self.sigs[_fastpath.SIG_FIELDS * i : _fastpath.SIG_FIELDS * (i + 1)]) != sig:
            return _UNKNOWN
        return self.digests[_SLOT * i : _SLOT * (i + 1)]


_SLOT = _fastpath._DIGEST + 1
_UNKNOWN = bytes([NO_CONTENT]) + b"\0" * _fastpath._DIGEST


def _ignore_rules(finished: Finished) -> DockerIgnore | str:
    """The ``.dockerignore`` rules the build used (the files they come from are recorded by bytes)."""
    from pybuild.cache import DockerIgnore
    from pybuild.errors import PybuildError

    assert finished.context_dir is not None
    try:
        ignore = DockerIgnore.load(finished.context_dir, Path(finished.dockerfile))
    except PybuildError as error:
        return f"the ignore file cannot be read again: {error.message}"
    if any("\n" in pattern for pattern in ignore.patterns):
        return "an ignore pattern holds a newline"
    return ignore


def _add_context(builder: _Builder, finished: Finished, previous: _Previous, ignore: DockerIgnore) -> None:
    """Every context path the build read: whole, with its content digest, or only as the same object
    (a directory's content is its names less those ``.dockerignore`` hides, as the fast path compares it)."""
    assert finished.context_dir is not None
    base = os.fsencode(finished.context_dir)
    prefix, fsencode = base + b"/", os.fsencode
    file_kind, is_regular, fromhex = bytes([FILE]), stat.S_ISREG, bytes.fromhex
    encoding, errors = _fastpath._FS_ENCODING
    for rel, (st, whole, content) in sorted(finished.reads.paths.items()):
        path = base if rel == "." else prefix + rel.encode(encoding, errors)  # os.fsencode, without its call
        if not whole:
            builder.same.append((path, st))
            continue
        sig = signature(st)
        if content is None:
            builder.add(path, sig, previous.digest(path, sig) if is_regular(st.st_mode) else _UNKNOWN)
        elif isinstance(content, str) and content.startswith("sha256:") and is_regular(st.st_mode):
            builder.add(path, sig, file_kind + fromhex(content[7:]))  # most paths: _content_digest's FILE, inline
        elif isinstance(content, tuple):
            kind, all_names = _content_digest(st, content)
            digest = all_names
            if ignore:
                content = tuple(os.fsdecode(name) for name in _fastpath.kept_names(ignore, path, rel, content))
                kind, digest = _content_digest(st, content)
            if kind == DIRECTORY and digest != all_names:
                builder.wholes.add(hashlib.sha256(path).digest() + all_names)
            builder.add(path, sig, bytes([kind]) + digest)
        else:
            kind, digest = _content_digest(st, content)
            builder.add(path, sig, bytes([kind]) + digest)
    builder.absent += [prefix + fsencode(rel) for rel in sorted(finished.reads.absent)]


def _content_digest(st: os.stat_result, content: str | tuple[str, ...] | None) -> tuple[int, bytes]:
    if content is None:
        return NO_CONTENT, b"\0" * 32
    if stat.S_ISREG(st.st_mode) and isinstance(content, str) and content.startswith("sha256:"):
        return FILE, bytes.fromhex(content[len("sha256:") :])
    if stat.S_ISDIR(st.st_mode) and isinstance(content, tuple):
        return DIRECTORY, hashlib.sha256(listing_bytes(list(content))).digest()
    if stat.S_ISLNK(st.st_mode) and isinstance(content, str):
        return SYMLINK, hashlib.sha256(os.fsencode(content)).digest()
    return NO_CONTENT, b"\0" * 32


def _add_sources(builder: _Builder) -> None:
    """pybuild's own code: edited, upgraded or checked out, it may build differently."""
    import pybuild

    base = os.path.dirname(os.path.abspath(pybuild.__file__))
    for name in sorted(os.listdir(base)):  # the modules beside the packages (not the directory: a checkout holds more)
        if name.endswith(".py"):
            path = os.path.join(base, name)
            builder.whole(os.fsencode(path), os.lstat(path), NO_CONTENT)
    for package in _SOURCE_PACKAGES:
        for directory, subdirs, names in os.walk(os.path.join(base, package)):
            subdirs[:] = sorted(d for d in subdirs if d != "__pycache__")
            builder.whole(os.fsencode(directory), os.lstat(directory), NO_CONTENT)
            for name in sorted(names):
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    builder.whole(os.fsencode(path), os.lstat(path), NO_CONTENT)
