"""One lease through the worker's lease runner (dag/bot/_lease.py, _step.py, _chains.py):
a real step in pybuild's sandbox on a real root, the CAS a ``reapi.MemoryRemote``. The
Action is made by the client's own encoder (``dag.remote.encode_step``)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.dag import ExecOp
from pybuild.dag._worker import WorkerOptions
from pybuild.dag.bot._lease import LeaseRunner
from pybuild.dag.bot._session import FAILED_PRECONDITION, INVALID_ARGUMENT, Assigned
from pybuild.dag.bot._step import StepRunner
from pybuild.dag.remote import encode_step, remote_step
from pybuild.oci import ImageStore
from pybuild.reapi import Digest, MemoryRemote

pytestmark = pytest.mark.usefixtures("require_root")

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Bench:
    remote: MemoryRemote
    runner: LeaseRunner
    steps: StepRunner
    log: list[str]
    base: str  # the busybox layer's diffID
    base_size: int


@pytest.fixture
async def bench(tmp_path: Path, busybox_tar: Path) -> AsyncIterator[Bench]:
    from pybuild.executors import NamespaceRootfsCaller, SandboxExecutor

    root = Root.open(tmp_path / "root")
    executor = SandboxExecutor(state_dir=str(root.tmp_dir("executor-")))
    files = NamespaceRootfsCaller(state_dir=str(root.tmp_dir("caller-")))
    data = busybox_tar.read_bytes()
    remote = MemoryRemote()
    remote.upload({Digest.of(data): data})
    steps = StepRunner(root, ImageStore(root), executor, files, WorkerOptions())
    log: list[str] = []
    yield Bench(remote, LeaseRunner(remote, steps, "worker-a", log.append), steps, log,
                "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
    await executor.aclose()
    files.close()
    root.close()


def _lease(bench: Bench, script: str, name: str = "l1", *, chain: tuple[str, ...] | None = None) -> Assigned:
    op = ExecOp(rootfs="base", args=("/bin/sh", "-c", script), env=(PATH,), cwd="/", user="root")
    chains = {"base": chain if chain is not None else (bench.base,)}
    step = remote_step(op, "sha256:" + "a" * 64, "linux/amd64", chains)
    sizes = {bench.base: bench.base_size}
    encoded = encode_step(step, sizes)
    bench.remote.upload(dict(encoded.blobs))
    return Assigned(name, encoded.action_digest, encoded.action)


def _members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar}  # type: ignore[union-attr]


async def test_a_step_runs_and_its_layer_and_output_are_uploaded(bench: Bench) -> None:
    finished = await bench.runner(_lease(bench, "echo made > /made; echo to-out; echo to-err >&2"))
    assert finished.status == 0 and finished.result is not None
    result = finished.result
    assert result.exit_code == 0 and result.worker == "worker-a"
    layer, report = result.output("layer.tar"), result.output("result.json")
    assert layer is not None and report is not None
    tar = bench.remote.read(layer.digest)
    assert hashlib.sha256(tar).hexdigest() == layer.digest.hash  # the digest is the diffID
    assert _members(tar)["made"] == b"made\n"
    assert json.loads(bench.remote.read(report.digest))["diff_id"] == "sha256:" + layer.digest.hash
    assert result.stdout_digest is not None and bench.remote.read(result.stdout_digest) == b"to-out\n"
    assert result.stderr_digest is not None and bench.remote.read(result.stderr_digest) == b"to-err\n"
    assert (result.stdout_raw, result.stderr_raw) == (b"to-out\n", b"to-err\n")  # small: inline too
    assert any(line.startswith("ran RUN echo made") for line in bench.log)


async def test_a_lease_reads_its_small_messages_in_one_batch_call_per_round_trip(bench: Bench) -> None:
    inline = _lease(bench, "echo one > /one", "l1")
    by_digest = replace(_lease(bench, "echo two > /two", "l2"), action=None)
    reads = []
    for lease in (inline, by_digest):
        before = bench.remote.batch_reads
        finished = await bench.runner(lease)
        assert finished.result is not None and finished.result.exit_code == 0, finished
        reads.append(bench.remote.batch_reads - before)
    # the Command and input root, then step.json and the layers directory (and the Action first
    # when the server sent only its digest): one call each, where each blob was one call
    assert reads == [2, 3]


async def test_layers_are_fetched_once_and_the_same_step_again_is_this_workers_cache(bench: Bench) -> None:
    first = await bench.runner(_lease(bench, "echo one > /one", "l1"))
    other = await bench.runner(_lease(bench, "echo two > /two", "l2"))
    again = await bench.runner(_lease(bench, "echo one > /one", "l3"))
    assert bench.steps.chains.downloaded == 1  # the busybox layer, once for three steps
    assert first.result is not None and again.result is not None and other.result is not None
    assert again.result.output("layer.tar") == first.result.output("layer.tar")
    assert "cached here" in bench.log[-1]


async def test_a_step_on_the_layer_a_step_made_here_downloads_nothing(bench: Bench) -> None:
    first = await bench.runner(_lease(bench, "echo one > /one", "l1"))
    assert first.result is not None
    made = first.result.output("layer.tar")
    assert made is not None
    diff_id = "sha256:" + made.digest.hash
    op = ExecOp(rootfs="base", args=("/bin/sh", "-c", "cat /one > /copy"), env=(PATH,), cwd="/", user="root")
    step = remote_step(op, "sha256:" + "b" * 64, "linux/amd64", {"base": (diff_id, bench.base)})
    encoded = encode_step(step, {bench.base: bench.base_size, diff_id: made.digest.size_bytes})
    bench.remote.upload(dict(encoded.blobs))
    second = await bench.runner(Assigned("l2", encoded.action_digest, encoded.action))
    assert second.result is not None and second.result.exit_code == 0
    assert bench.steps.chains.downloaded == 1  # the chain base+one is the snapshot the first step made
    tar = bench.remote.read(second.result.output("layer.tar").digest)  # type: ignore[union-attr]
    assert _members(tar)["copy"] == b"one\n"


async def test_a_chain_whose_lower_snapshot_was_pruned_is_made_again_layer_by_layer(bench: Bench) -> None:
    first = await bench.runner(_lease(bench, "echo one > /one", "l1"))
    assert first.result is not None
    made = first.result.output("layer.tar")
    assert made is not None
    diff_id = "sha256:" + made.digest.hash
    base_snapshot = bench.steps.store.snapshot_of_chain(bench.base)
    assert base_snapshot is not None and bench.steps.root.snapshots.remove(base_snapshot)
    op = ExecOp(rootfs="base", args=("/bin/sh", "-c", "cat /one /bin/busybox > /dev/null && cat /one > /copy"), env=(PATH,), cwd="/", user="root")
    step = remote_step(op, "sha256:" + "c" * 64, "linux/amd64", {"base": (diff_id, bench.base)})
    encoded = encode_step(step, {bench.base: bench.base_size, diff_id: made.digest.size_bytes})
    bench.remote.upload(dict(encoded.blobs))
    second = await bench.runner(Assigned("l2", encoded.action_digest, encoded.action))
    assert second.result is not None and second.result.exit_code == 0, bench.log
    # busybox again, unpacked under its old name (its chain ID): the snapshot of "one" is whole again
    assert bench.steps.chains.downloaded == 2
    tar = bench.remote.read(second.result.output("layer.tar").digest)  # type: ignore[union-attr]
    assert _members(tar)["copy"] == b"one\n"


async def test_a_failing_step_is_a_result_with_its_exit_code(bench: Bench) -> None:
    finished = await bench.runner(_lease(bench, "echo broken >&2; exit 3"))
    assert finished.status == 0 and finished.result is not None
    assert finished.result.exit_code == 3
    assert finished.result.output_files == ()
    assert bench.remote.read(finished.result.stderr_digest) == b"broken\n"  # type: ignore[arg-type]


async def test_a_step_json_of_another_version_is_refused_with_an_error_status(bench: Bench) -> None:
    from pybuild import reapi

    lease = _lease(bench, "true")
    assert lease.action is not None
    root = reapi.parse_directory(bench.remote.read(lease.action.input_root_digest))
    step_node = next(f for f in root.files if f.name == "step.json")
    document = json.loads(bench.remote.read(step_node.digest))
    document["version"] = 99
    forged = json.dumps(document).encode()
    bench.remote.upload({Digest.of(forged): forged})
    files = {f.name if f.name != "step.json" else "step.json": (f.digest if f.name != "step.json" else Digest.of(forged)) for f in root.files}
    layers = {f"layers/{bench.base.split(':')[1]}.tar": Digest(bench.base.split(":")[1], bench.base_size)}
    root_digest, blobs = reapi.input_root({**files, **layers})
    bench.remote.upload(blobs)
    action = reapi.Action(lease.action.command_digest, root_digest, platform=lease.action.platform)
    finished = await bench.runner(Assigned("bad", Digest.of(reapi.serialize(action)), action))
    assert finished.result is None and finished.status == INVALID_ARGUMENT
    assert "version" in finished.message
    assert bench.log[-1].startswith("refused bad:")


async def test_a_layer_that_does_not_match_its_digest_is_never_applied(bench: Bench) -> None:
    digest = Digest(bench.base.split(":")[1], bench.base_size)
    bench.remote.blobs[digest] = b"x" * bench.base_size  # tampered in the CAS
    finished = await bench.runner(_lease(bench, "true"))
    assert finished.result is None and finished.status == FAILED_PRECONDITION
    assert bench.steps.chains.downloaded == 0


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("BadStep", INVALID_ARGUMENT),  # the step itself is wrong: final
        ("BuildError", FAILED_PRECONDITION),  # e.g. network=host, which no worker allows: final
        ("SandboxError", 13),  # this machine's fault: INTERNAL, BuildGrid re-queues it elsewhere
        ("group", 13),  # the same, raised from inside a task group
        ("RemoteUnavailable", 14),
    ],
)
def test_a_lease_that_ran_no_step_ends_with_the_status_of_its_cause(error: str, status: int) -> None:
    from pybuild.dag.bot._lease import _status
    from pybuild.dag.remote import BadStep
    from pybuild.errors import BuildError, SandboxError
    from pybuild.reapi import RemoteUnavailable

    made = {
        "BadStep": BadStep("step.json: op has unknown field x"),
        "BuildError": BuildError("network host is not allowed for this build"),
        "SandboxError": SandboxError("cannot mount /proc"),
        "group": ExceptionGroup("tasks", [SandboxError("cannot mount /proc")]),
        "RemoteUnavailable": RemoteUnavailable("cannot reach the remote executor"),
    }[error]
    code, message = _status(made)
    assert code == status and message and "\n" not in message


async def test_a_large_output_goes_by_digest_only(bench: Bench) -> None:
    finished = await bench.runner(_lease(bench, "head -c 200000 /dev/zero | tr '\\0' x"))
    result = finished.result
    assert result is not None and result.stdout_raw == b""
    assert result.stdout_digest is not None and bench.remote.read(result.stdout_digest) == b"x" * 200000


async def test_a_cached_step_whose_layer_tar_this_worker_lost_makes_it_again(bench: Bench) -> None:
    """A worker's own store missing a file (deleted, a crash) is never reported as the step's
    failure: the layer tar is written again from the snapshot, the same bytes."""
    first = await bench.runner(_lease(bench, "echo one > /one", "l1"))
    assert first.result is not None
    layer = first.result.output("layer.tar")
    assert layer is not None
    blob = bench.steps.root.blobs.path("sha256:" + layer.digest.hash)
    assert blob is not None
    blob.unlink()
    bench.remote.blobs.pop(layer.digest)
    again = await bench.runner(_lease(bench, "echo one > /one", "l2"))
    assert again.result is not None and again.result.output("layer.tar") == layer, (again.status, again.message)
    assert bench.remote.read(layer.digest) and "cached here" in bench.log[-1]
