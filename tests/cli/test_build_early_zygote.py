"""``pybuild build`` starts the RUN sandbox's zygote as soon as the plan is known when a RUN step
will most likely run (``SandboxExecutor.start_early``): one the cache is off for, or one this
Dockerfile never ran; not for a build whose RUN steps ran before (most often cached), nor for
one without RUN steps.  A build that fails before its first step stops it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.cli.main import main
from pybuild.executors import SandboxExecutor

pytestmark = pytest.mark.root


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[SandboxExecutor]:
    """The executors start_early was called on, in order."""
    calls: list[SandboxExecutor] = []
    start_early = SandboxExecutor.start_early

    def spy(self: SandboxExecutor) -> None:
        start_early(self)
        calls.append(self)

    monkeypatch.setattr(SandboxExecutor, "start_early", spy)
    return calls


def _build(tmp_path: Path, *flags: str) -> int:
    return main(["build", "-q", "--root", str(tmp_path / "root"), *flags, str(tmp_path / "context")])


def test_a_dockerfile_first_run_starts_the_zygote_early_its_cached_rerun_not(
    require_root: None, tmp_path: Path, busybox_tar: Path, started: list[SandboxExecutor]
) -> None:
    assert main(["import", "--root", str(tmp_path / "root"), str(busybox_tar), "busybox:latest"]) == 0
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo ran > /ran\nCOPY a /a\n")
    (context / "a").write_text("one\n")
    assert _build(tmp_path) == 0
    assert len(started) == 1  # this Dockerfile's RUN never ran
    assert started[0]._zygote is None and started[0]._early is None  # used, then closed
    (context / "a").write_text("two\n")  # the COPY misses, the RUN before it is cached
    assert _build(tmp_path) == 0
    assert len(started) == 1
    assert _build(tmp_path, "--no-cache") == 0
    assert len(started) == 2


def test_a_build_failing_before_its_first_step_stops_the_early_zygote(
    require_root: None, tmp_path: Path, started: list[SandboxExecutor], capsys: pytest.CaptureFixture[str]
) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing /x\nRUN true\n")
    assert _build(tmp_path) != 0
    assert "missing" in capsys.readouterr().err
    assert len(started) == 1
    assert started[0]._early is None and started[0]._zygote is None  # killed at the end, and reaped


def test_a_build_without_run_steps_starts_no_zygote(require_root: None, tmp_path: Path, started: list[SandboxExecutor]) -> None:
    context = tmp_path / "context"
    context.mkdir()
    (context / "a").write_text("a\n")
    (context / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    assert _build(tmp_path) == 0
    assert started == []
