"""``pybuild build`` starts the RUN sandbox's zygote before its trio run when the Dockerfile has a
RUN step (``SandboxExecutor.start_early``), and a build that fails before any step stops it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pybuild.cli import _build
from pybuild.cli.main import main
from pybuild.executors import SandboxExecutor
from pybuild.grammar import parse


@pytest.mark.parametrize(
    ("text", "runs"),
    [
        ("FROM scratch\nCOPY a /a\n", False),
        ("FROM busybox AS one\nRUN true\nFROM scratch\nCOPY --from=one /a /a\n", True),  # any stage's
        ("FROM busybox\nRUN <<EOF\ntrue\nEOF\n", True),
        ("FROM busybox\n# RUN true\nCMD [\"true\"]\n", False),
    ],
)
def test_a_dockerfile_has_run_steps(text: str, runs: bool) -> None:
    assert _build._has_run_steps(parse(text.encode(), "Dockerfile")) is runs


def _started(monkeypatch: pytest.MonkeyPatch) -> list[SandboxExecutor]:
    started: list[SandboxExecutor] = []
    start_early = SandboxExecutor.start_early

    def spy(self: SandboxExecutor) -> None:
        start_early(self)
        started.append(self)

    monkeypatch.setattr(SandboxExecutor, "start_early", spy)
    return started


@pytest.mark.root
def test_a_build_failing_before_its_first_step_stops_the_early_zygote(
    require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    started = _started(monkeypatch)
    # a base the store lacks, from a registry that refuses at once (no network needed)
    (tmp_path / "Dockerfile").write_text("FROM localhost:1/none:1\nRUN true\n")
    assert main(["build", "-q", "--root", str(tmp_path / "root"), str(tmp_path)]) != 0
    assert "localhost:1/none:1" in capsys.readouterr().err
    assert len(started) == 1
    # killed by aclose (it had no step), and reaped
    assert started[0]._early is None and started[0]._zygote is None


@pytest.mark.root
def test_a_build_without_run_steps_starts_no_zygote(
    require_root: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _started(monkeypatch)
    (tmp_path / "a").write_text("a\n")
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY a /a\n")
    assert main(["build", "-q", "--root", str(tmp_path / "root"), str(tmp_path)]) == 0
    assert started == []
