"""A foreign-platform RUN step that another machine runs needs no emulator here.

With ``--remote-executor`` the build's runner factory is a ``RunnerFactory`` whose
``stays_local`` rule says which RUN steps run on this machine; ``check_platforms``
asks for an emulator only for those, and names the line and why it stays when
none is registered.  The emulation here is a fake that can run nothing foreign, so
these tests show the "no emulator needed" half, which an end-to-end test on this
amd64 machine cannot (its arm64 worker needs QEMU's handler registered, and then
the local check passes anyway: tests/remote/test_remote_platforms.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from pybuild.cache import Root
from pybuild.dag import BuildOptions, ExportOptions, build
from pybuild.dag._build import RunnerFactory, check_platforms
from pybuild.dag._convert import convert
from pybuild.dag._ops import ExecOp
from pybuild.dag.remote import planned_local_reason, remote_runner_factory
from pybuild.errors import BuildError
from pybuild.executors import FakeExecutor
from pybuild.grammar import parse
from pybuild.oci import ImageStore

from .fake_builds import OTHER, fake_runners, import_base


@dataclass(frozen=True)
class Status:
    runnable: bool
    reason: str = ""
    hint: str = ""


class NoEmulator:
    """This machine runs nothing foreign; remembers what it was asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, platform: str) -> Status:
        self.asked.append(platform)
        return Status(False, "no binfmt_misc handler", "install qemu-user-static")


def _store(tmp_path: Path) -> tuple[Root, ImageStore]:
    root = Root.open(tmp_path / "root")
    store = ImageStore(root)
    import_base(store, OTHER)
    return root, store


def _plan(tmp_path: Path, text: str) -> Any:
    _, store = _store(tmp_path)
    options = BuildOptions(platform=OTHER, entitlements=frozenset({"security.insecure"}))
    return convert(parse(text.encode(), "Dockerfile"), options, store)


def _build(tmp_path: Path, text: str, make: Any, emulation: NoEmulator) -> tuple[Any, FakeExecutor]:
    root, store = _store(tmp_path)
    executor = FakeExecutor()
    outcome = trio.run(lambda: build(
        parse(text.encode(), "Dockerfile"), BuildOptions(platform=OTHER), store=store, make_runner=make(fake_runners(root, store, executor)),
        export=ExportOptions(tags=("placed:1",)), emulation=emulation,
    ))
    return outcome, executor


def test_foreign_steps_that_go_remote_ask_for_no_emulator(tmp_path: Path) -> None:
    """Every RUN step goes to another machine: the build starts although nothing here
    runs the platform, and the emulation is never asked."""
    emulation = NoEmulator()
    text = "FROM base\nRUN echo one\nRUN echo two\n"
    outcome, executor = _build(tmp_path, text, lambda make: RunnerFactory(make, lambda definition, digest, op: None), emulation)
    assert emulation.asked == []
    assert outcome.image is not None and outcome.image.config["architecture"] == OTHER.architecture
    assert [spec.args[-1] for spec in executor.specs] == ["echo one", "echo two"]  # the fake runner ran what the rule sent away


def test_a_plain_runner_factory_checks_every_foreign_step(tmp_path: Path) -> None:
    """A local build (a plain callable) keeps today's check: refused before any step runs."""
    emulation = NoEmulator()
    with pytest.raises(BuildError) as caught:
        _build(tmp_path, "FROM base\nRUN echo one\n", lambda make: make, emulation)
    assert emulation.asked == [str(OTHER)]
    assert str(caught.value).startswith("Dockerfile:2:") and "no binfmt_misc handler" in str(caught.value)
    assert "not remotely" not in str(caught.value)


def test_a_foreign_step_that_stays_here_names_its_line_and_why(tmp_path: Path) -> None:
    """With the remote rule, the first step that must stay here is the one named, with the rule's reason."""
    emulation = NoEmulator()
    text = "FROM base\nRUN echo remote\nRUN --mount=type=secret,id=token cat /run/secrets/token\n"
    rule = remote_runner_factory
    with pytest.raises(BuildError) as caught:
        _build(tmp_path, text, lambda make: rule(make), emulation)
    message = str(caught.value)
    assert message.startswith("Dockerfile:3:"), message
    assert f"cannot run {OTHER} steps: no binfmt_misc handler" in message
    assert message.endswith("(this step runs here, not remotely: secret mount)"), message
    assert caught.value.hint == "install qemu-user-static"
    assert emulation.asked == [str(OTHER)]


def test_memory_limit_keeps_every_run_step_here(tmp_path: Path) -> None:
    """--memory is not part of an Action (a worker would not apply it): with it, every RUN step stays."""
    plan = _plan(tmp_path, "FROM base\nRUN echo one\n")
    emulation = NoEmulator()
    with pytest.raises(BuildError) as caught:
        check_platforms(plan, "Dockerfile", emulation, lambda d, digest, op: planned_local_reason(d, digest, op, memory_limit=True))
    assert str(caught.value).endswith("not remotely: memory limit)")
    check_platforms(plan, "Dockerfile", emulation, planned_local_reason)  # without it the step goes remote
    assert emulation.asked == [str(OTHER)]


@pytest.mark.parametrize(("run", "reason"), [
    ("RUN echo plain", None),
    ("RUN --mount=type=secret,id=token true", "secret mount"),
    ("RUN --mount=type=ssh true", "ssh mount"),
    ("RUN --network=host true", "network host"),
    ("RUN --security=insecure true", "security insecure"),
    ("RUN --mount=type=bind,target=/src ls /src", "build context mounted"),
    ("RUN --mount=type=cache,target=/var/cache true", None),
])
def test_the_planned_rule_is_the_remote_runners(tmp_path: Path, run: str, reason: str | None) -> None:
    """What the plan tells before anything runs: the same reasons the remote runner gives when the step runs."""
    plan = _plan(tmp_path, f"FROM base\n{run}\n")
    steps = [(digest, op) for digest, op in plan.definition.ops.items() if isinstance(op, ExecOp)]
    assert len(steps) == 1
    digest, op = steps[0]
    assert planned_local_reason(plan.definition, digest, op) == reason
