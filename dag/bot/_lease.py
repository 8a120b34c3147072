"""One lease: read the Action from the CAS, run its step, upload what it made.

Everything read comes from another machine and is checked before use: the
Command must be a pybuild step's, step.json is decoded by the Action
format's own strict reader (``dag.remote.decode_step``), every layer it names
must be in the input root under its own digest, and small messages are
size-capped before they are read.  Layer tars are verified by digest as they
download (``reapi``) and applied by ``oci.apply_layer``.

The outcome is a ``Finished``: an ActionResult (exit code, ``layer.tar`` +
``result.json`` when the step succeeded, stdout and stderr by digest, this
worker's name) -- a failing step is a normal result with its exit code -- or
an error status when nothing could run (a step refused, inputs missing,
the sandbox broken), never a made-up result.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import trio

from pybuild.errors import PybuildError, SandboxError, StoreError

from ._session import FAILED_PRECONDITION, INTERNAL, INVALID_ARGUMENT, UNAVAILABLE, Assigned, Finished
from ._step import StepOutcome, StepRunner

if TYPE_CHECKING:
    from pybuild.reapi import ActionResult, BotSession, Digest

    from ..remote import RemoteStep

log = logging.getLogger(__name__)

INLINE_OUTPUT = 64 << 10  # stdout/stderr up to this size also go inline (the client then reads no blob)
MESSAGE_LIMIT = 4 << 20  # step.json, the Command and Directory messages are small: a bigger one is refused
KEY_VERSION = b"pybuild-worker/v1\0"
SMALL_LAYER = 1 << 20  # a layer tar up to this size goes up with the step's small blobs, in one call
MAX_TIMEOUT = 366 * 86400.0  # seconds: a longer Action timeout is a forged one


@dataclass(frozen=True)
class LeasedStep:
    """A lease's Action, read and checked: the step, its layers' CAS digests by diffID."""

    step: RemoteStep
    key: str  # this worker's cache key: from step.json's bytes, not the key the client wrote in it
    layers: Mapping[str, Digest]
    timeout: float | None


class BotsRemote(Protocol):
    """What a worker asks of the cluster (``reapi.Remote``; synchronous, thread-safe)."""

    def read(self, digest: Digest) -> bytes: ...

    def read_blobs(self, digests: Sequence[Digest]) -> list[bytes]: ...

    def download(self, digest: Digest, path: Path) -> None: ...

    def find_missing(self, digests: Iterable[Digest]) -> frozenset[Digest]: ...

    def upload(self, blobs: Mapping[Digest, bytes]) -> None: ...

    def upload_file(self, digest: Digest, path: Path) -> None: ...

    def create_bot_session(self, bot_id: str, properties: tuple[tuple[str, str], ...], *, capacity: int = 1) -> BotSession: ...

    def update_bot_session(self, session: BotSession) -> BotSession | None: ...


class LeaseRunner:
    """Runs one lease to its ``Finished`` (``Session``'s ``run``)."""

    def __init__(self, remote: BotsRemote, steps: StepRunner, name: str, say: Callable[[str], None]) -> None:
        self.remote = remote
        self.steps = steps
        self.name = name
        self.say = say  # one line per step into the worker's log

    async def __call__(self, lease: Assigned) -> Finished:
        from ..remote._action import shown

        started = trio.current_time()
        name = shown(lease.lease_id)  # the server's word: never raw into the log
        try:
            leased = await self._read(lease)
            description = _describe(leased.step)
            self.say(f"running {description} (lease {name})")
            outcome = await self.steps.run(leased.step, leased.key, self._fetcher(leased), description, leased.timeout)
            result = await trio.to_thread.run_sync(self._upload, outcome)
        except Exception as error:
            status, message = _status(error)
            self.say(f"refused {name}: {message}" if status == INVALID_ARGUMENT else f"failed {name}: {message}")
            return Finished(lease.lease_id, status=status, message=message)
        cached = ", cached here" if outcome.cached else ""
        took = trio.current_time() - started  # the step and the worker's reads and uploads around it
        self.say(f"ran {description} (exit code {outcome.exit_code}, {outcome.duration:.2f}s{cached}, lease {took:.2f}s)")
        return Finished(lease.lease_id, result=result)

    # ------------------------------------------------------------ in

    async def _read(self, lease: Assigned) -> LeasedStep:
        from pybuild import reapi

        from ..remote import SANDBOX_VERSION, STEP_FILE, BadStep, check_command, decode_step, layer_path

        action = lease.action or reapi.parse_action((await self._small((lease.action_digest, "the Action")))[0])
        # the Command and the input root at once, then step.json and the layers directory: two round trips
        command, listing = await self._small((action.command_digest, "the Command"), (action.input_root_digest, "the input root"))
        check_command(reapi.parse_command(command))
        root = reapi.parse_directory(listing)
        files = {node.name: node.digest for node in root.files}
        if STEP_FILE not in files:
            raise BadStep(f"the input root has no {STEP_FILE}")
        directories = {node.name: node.digest for node in root.directories}
        wanted = [(files[STEP_FILE], STEP_FILE)]
        if "layers" in directories:
            wanted.append((directories["layers"], "the layers directory"))
        read = await self._small(*wanted)
        data = read[0]
        step = decode_step(data)
        layer_files: dict[str, Digest] = {}
        if len(read) > 1:
            layer_files = {node.name: node.digest for node in reapi.parse_directory(read[1]).files}
        layers = {}
        for diff_id in step.diff_ids():
            name = layer_path(diff_id).split("/", 1)[1]
            digest = layer_files.get(name)
            if digest is None or "sha256:" + digest.hash != diff_id:
                raise BadStep(f"the input root has no layer {diff_id} under its own digest")
            layers[diff_id] = digest
        # the sandbox version too: a worker's own cache outlives an upgrade that changes results
        key = "sha256:" + hashlib.sha256(KEY_VERSION + SANDBOX_VERSION.encode() + b"\0" + data).hexdigest()
        return LeasedStep(step, key, layers, _timeout(action.timeout_seconds))

    async def _small(self, *wanted: tuple[Digest, str]) -> list[bytes]:
        """Small messages, each checked by digest as it is read, in order: one round trip."""
        from ..remote import BadStep

        for digest, what in wanted:
            if digest.size_bytes > MESSAGE_LIMIT:
                raise BadStep(f"{what} is {digest.size_bytes} bytes: more than a pybuild step ever sends")
        digests = [digest for digest, _ in wanted]
        return await trio.to_thread.run_sync(self.remote.read_blobs, digests)

    def _fetcher(self, leased: LeasedStep) -> Callable[[str, Path], None]:
        def fetch(diff_id: str, path: Path) -> None:
            digest = leased.layers[diff_id]
            _check_room(path.parent, digest.size_bytes)
            self.remote.download(digest, path)

        return fetch

    # ------------------------------------------------------------ out

    def _upload(self, outcome: StepOutcome) -> ActionResult:
        from pybuild import reapi

        from ..remote import LAYER_OUTPUT, RESULT_OUTPUT, RemoteResult, result_json

        blobs: dict[Digest, bytes] = {}
        outputs = []
        stdout = _blob(outcome.stdout, blobs)
        stderr = _blob(outcome.stderr, blobs)
        layer_digest = None
        if outcome.layer is not None:
            layer = outcome.layer
            layer_digest = reapi.Digest(layer.diff_id.split(":", 1)[1], layer.size)
            report = _put(result_json(RemoteResult(layer.diff_id, layer.empty)), blobs)
            outputs = [reapi.OutputFile(LAYER_OUTPUT, layer_digest, False), reapi.OutputFile(RESULT_OUTPUT, report, False)]
        if layer_digest is not None and outcome.layer is not None:
            if layer_digest.size_bytes <= SMALL_LAYER:
                blobs[layer_digest] = outcome.layer.path.read_bytes()  # ``upload`` hashes it again
            elif layer_digest in self.remote.find_missing([layer_digest]):
                self.remote.upload_file(layer_digest, outcome.layer.path)
        # small blobs go up in one batch, present or not: asking first would cost a round trip more
        self.remote.upload(blobs)
        return reapi.ActionResult(
            exit_code=outcome.exit_code, output_files=tuple(outputs), stdout_digest=stdout, stderr_digest=stderr,
            stdout_raw=_inline(outcome.stdout), stderr_raw=_inline(outcome.stderr), worker=self.name,
        )


def _inline(data: bytes) -> bytes:
    return data if len(data) <= INLINE_OUTPUT else b""


def _blob(data: bytes, blobs: dict[Digest, bytes]) -> Digest | None:
    """Stdout or stderr by digest; none at all when the step wrote nothing there."""
    return _put(data, blobs) if data else None


def _put(data: bytes, blobs: dict[Digest, bytes]) -> Digest:
    from pybuild import reapi

    digest = reapi.Digest.of(data)
    blobs[digest] = data
    return digest


def _describe(step: RemoteStep) -> str:
    """``RUN <command>`` as the step's progress line shows it (escaped: it is the client's text)."""
    from ..remote._action import shown

    args = step.op.args
    command = args[2] if len(args) == 3 and args[1] == "-c" else " ".join(args)
    return shown(f"RUN {command}", 120)


def _timeout(seconds: float | None) -> float | None:
    """The Action's timeout: none when unset or zero (REAPI's "the server's default")."""
    from ..remote import BadStep

    if seconds is None or seconds == 0:
        return None
    if not 0 < seconds < MAX_TIMEOUT:  # a negative one, or one no step lives to see (NaN included)
        raise BadStep(f"the Action's timeout of {seconds!r} seconds is out of range")
    return seconds


def _check_room(directory: Path, size: int) -> None:
    """Refuse a layer the disk cannot hold before downloading it (it is unpacked beside, too):
    a lease naming a huge blob must not fill this worker's disk."""
    import os

    stats = os.statvfs(directory)
    if size > stats.f_bavail * stats.f_frsize:
        raise StoreError(f"no room for a layer of {size} bytes in {directory}", hint="free space in the worker's root")


def _status(error: Exception) -> tuple[int, str]:
    """The status a lease that ran no step ends with: retried elsewhere when this machine
    is at fault (INTERNAL, UNAVAILABLE), final when the step itself is (the server then
    fails the client's Execute with this one-line message)."""
    from pybuild import reapi

    from ..remote import BadStep

    from ..remote._action import shown

    while isinstance(error, ExceptionGroup) and error.exceptions:  # a failure inside the step's own tasks
        error = error.exceptions[0]
    # errors quote the step (its command, paths, user) and the server: escaped, one line
    message = shown(str(error) or type(error).__name__, 400)
    if isinstance(error, BadStep):
        return INVALID_ARGUMENT, message
    if isinstance(error, reapi.RemoteUnavailable):
        return UNAVAILABLE, message
    if isinstance(error, (SandboxError, StoreError, OSError)):
        return INTERNAL, message
    if isinstance(error, PybuildError):
        return FAILED_PRECONDITION, message
    # a bug of this worker: one line in its log (the traceback only with debug logging on)
    log.error("internal error in a lease: %s: %s", type(error).__name__, message)
    log.debug("the internal error's traceback", exc_info=error)
    return INTERNAL, f"internal error: {message}"
