"""A lease is another machine's word: what the worker does with a hostile or broken one
(dag/bot/_lease.py, dag/remote/_action.py's ``decode_step``).

No sandbox here: the step runner is a fake that records what it was asked, so each
test shows where a bad lease stops -- with an error status and one log line, never a
traceback, never a raw escape sequence in the worker's log, never a step run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pybuild import reapi
from pybuild.dag import ExecOp
from pybuild.dag.bot._lease import LeaseRunner
from pybuild.dag.bot._session import INTERNAL, INVALID_ARGUMENT, Assigned, Finished
from pybuild.dag.bot._step import StepOutcome
from pybuild.dag.remote import BadStep, decode_step, encode_step, platform_properties, remote_step, step_json
from pybuild.dag.remote._action import COMMAND, OUTPUTS
from pybuild.reapi import Digest, MemoryRemote

LAYER = b"not really a tar"
DIFF_ID = "sha256:" + Digest.of(LAYER).hash
KEY = "sha256:" + "d" * 64
ESCAPES = "\x1b[2J\x1b]0;owned\x07\r\nforged line\u202e"


@dataclass
class FakeSteps:
    """Records the steps it is asked to run; ``fetch_layers`` also brings their layers."""

    tmp: Path
    ran: list[tuple[str, float | None]] = field(default_factory=list)
    fetch_layers: bool = False
    error: Exception | None = None

    async def run(self, step: object, key: str, fetch: Callable[[str, Path], None], description: str, timeout: float | None = None) -> StepOutcome:
        self.ran.append((description, timeout))
        if self.error is not None:
            raise self.error
        if self.fetch_layers:
            for diff_id in step.diff_ids():  # type: ignore[attr-defined]
                fetch(diff_id, self.tmp / "layer.tar")
        return StepOutcome(0, b"", b"", None, 0.01)


@dataclass
class Bench:
    remote: MemoryRemote
    steps: FakeSteps
    runner: LeaseRunner
    log: list[str]


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    remote = MemoryRemote()
    remote.upload({Digest.of(LAYER): LAYER})
    steps = FakeSteps(tmp_path)
    log: list[str] = []
    return Bench(remote, steps, LeaseRunner(remote, steps, "worker-h", log.append), log)  # type: ignore[arg-type]


def _op(args: tuple[str, ...] = ("/bin/sh", "-c", "true")) -> ExecOp:
    return ExecOp(rootfs="base", args=args, env=("PATH=/bin",), cwd="/", user="root")


def _lease(bench: Bench, *, lease_id: str = "l1", args: tuple[str, ...] = ("/bin/sh", "-c", "true"), timeout: float | None = None) -> Assigned:
    step = remote_step(_op(args), KEY, "linux/amd64", {"base": (DIFF_ID,)})
    encoded = encode_step(step, {DIFF_ID: len(LAYER)}, timeout=timeout)
    bench.remote.upload(dict(encoded.blobs))
    return Assigned(lease_id, encoded.action_digest, encoded.action)


def _forged(bench: Bench, document: bytes, *, layers: dict[str, Digest] | None = None, timeout: float | None = None) -> Assigned:
    """A lease whose step.json is ``document`` (the Command is a pybuild step's)."""
    files = {"step.json": Digest.of(document), **(layers or {})}
    root_digest, directories = reapi.input_root(files)
    command = reapi.Command(arguments=COMMAND, output_paths=OUTPUTS, platform=platform_properties("linux/amd64"))
    command_bytes = reapi.serialize(command)
    action = reapi.Action(reapi.Digest.of(command_bytes), root_digest, timeout_seconds=timeout)
    bench.remote.upload({**directories, reapi.Digest.of(command_bytes): command_bytes, Digest.of(document): document})
    return Assigned("forged", Digest.of(reapi.serialize(action)), action)


def _step_document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = json.loads(step_json(remote_step(_op(), KEY, "linux/amd64", {"base": (DIFF_ID,)})))
    document.update(changes)
    return document


def _printable(lines: list[str]) -> bool:
    return all(line.isprintable() for line in lines)


async def test_what_the_lease_says_reaches_the_log_escaped(bench: Bench) -> None:
    finished = await bench.runner(_lease(bench, lease_id=f"lease{ESCAPES}", args=("/bin/sh", "-c", f"echo {ESCAPES}")))
    assert finished.result is not None and bench.steps.ran
    assert len(bench.log) == 2 and _printable(bench.log), bench.log
    assert "\\x1b[2J" in bench.log[0] and "\\n" in bench.log[0]  # shown, escaped, not dropped
    assert finished.lease_id == f"lease{ESCAPES}"  # the server's id goes back to it unchanged
    assert _printable([bench.steps.ran[0][0]])  # the description the step is run under


async def test_a_deeply_nested_step_json_is_refused_in_one_line(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    finished = await bench.runner(_forged(bench, b"[" * 100_000 + b"]" * 100_000))
    assert finished.status == INVALID_ARGUMENT and "nested too deeply" in finished.message
    assert not bench.steps.ran and len(bench.log) == 1 and bench.log[0].startswith("refused forged:")
    assert not [r for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("timeout", [-5.0, -0.5, 1e12])
async def test_an_action_timeout_out_of_range_is_refused(bench: Bench, timeout: float) -> None:
    finished = await bench.runner(_lease(bench, timeout=timeout))
    assert finished.status == INVALID_ARGUMENT and "timeout" in finished.message
    assert not bench.steps.ran


async def test_an_action_timeout_of_zero_is_the_default(bench: Bench) -> None:
    finished = await bench.runner(_lease(bench, timeout=0.0))
    assert finished.result is not None and bench.steps.ran[0][1] is None


async def test_a_layer_bigger_than_the_disk_is_not_downloaded(bench: Bench) -> None:
    huge = Digest(DIFF_ID.split(":")[1], 1 << 60)  # the CAS would stream until the disk is full
    document = json.dumps(_step_document()).encode()
    bench.steps.fetch_layers = True
    finished = await bench.runner(_forged(bench, document, layers={f"layers/{huge.hash}.tar": huge}))
    assert finished.status == INTERNAL and "no room for a layer" in finished.message  # another worker may have room
    assert not (bench.steps.tmp / "layer.tar").exists()


async def test_a_bug_in_the_worker_is_one_log_line_without_a_traceback(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    bench.steps.error = KeyError(f"boom{ESCAPES}")
    finished = await bench.runner(_lease(bench))
    assert finished.status == INTERNAL and finished.message.startswith("internal error: ") and finished.message.isprintable()
    assert len(bench.log) == 2 and bench.log[1].startswith("failed l1:") and _printable(bench.log)
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is None and errors[0].getMessage().isprintable()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d["op"].update(args=["/bin/sh", "-c", "true\0; rm -rf /"]), "NUL"),
        (lambda d: d["op"].update(cwd="../.."), "op.cwd is not an absolute path"),
        (lambda d: d.update(platform="linux/../../etc"), "platform"),
        (lambda d: d.update(platform=""), "platform"),
        (lambda d: d.update(platform="windows/amd64"), "platform"),
        (lambda d: d["op"].update(mounts=[{"kind": "overlay", "target": "/x"}]), "not a bind, cache or tmpfs"),
        (lambda d: d["op"].update(mounts=[{"kind": "cache", "target": "/x", "sharing": "everyone"}]), "not a bind, cache or tmpfs"),
        (lambda d: d["op"].update(mounts=[{"kind": "tmpfs", "target": "relative"}]), "target is not an absolute path"),
        (lambda d: d["op"].update(mounts=[{"kind": "cache", "target": "/x", "mode": 1 << 40}]), "mode is out of range"),
        (lambda d: d["op"].update(mounts=[{"kind": "cache", "target": "/x", "uid": -2}]), "uid is out of range"),
        (lambda d: d["op"].update(mounts=[{"kind": "tmpfs", "target": "/x", "size": -1}]), "size is out of range"),
    ],
)
def test_a_step_no_pybuild_writes_is_refused(change: Callable[[dict[str, object]], None], words: str) -> None:
    document = _step_document()
    change(document)
    with pytest.raises(BadStep) as caught:
        decode_step(json.dumps(document).encode())
    assert words in caught.value.message


def test_names_a_step_json_chose_are_escaped_in_its_errors() -> None:
    for document in (_step_document(**{f"x{ESCAPES}": 1}), _step_document(inputs={f"in{ESCAPES}": ["nope"]})):
        with pytest.raises(BadStep) as caught:
            decode_step(json.dumps(document).encode())
        assert caught.value.message.isprintable() and "\\x1b" in caught.value.message


async def test_a_refused_lease_finishes_with_the_same_escaped_message_it_logs(bench: Bench) -> None:
    document = json.dumps(_step_document(**{f"evil{ESCAPES}": 1})).encode()
    finished: Finished = await bench.runner(_forged(bench, document))
    assert finished.status == INVALID_ARGUMENT and finished.message.isprintable()
    assert bench.log == [f"refused forged: {finished.message}"]
