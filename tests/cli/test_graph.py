"""``pybuild graph``: the ops a build needs, in text, JSON and dot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.cli.main import main

DOCKERFILE = (
    "FROM busybox AS a\nRUN echo a > /a\n"
    "FROM busybox AS unused\nRUN exit 1\n"
    "FROM scratch\nCOPY --from=a /a /a\n"
)


@pytest.fixture
def dockerfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "root"))
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE)
    return path


def test_text_lists_needed_ops_with_lines(dockerfile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "-f", str(dockerfile)]) == 0
    out = capsys.readouterr().out
    assert "RUN echo a > /a (line 2)" in out
    assert "COPY --from=a /a /a (line 6)" in out
    assert "exit 1" not in out  # the unused stage is not part of the graph


def test_json_has_inputs(dockerfile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "-f", str(dockerfile), "--format", "json"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    by_digest = {op["digest"]: op for op in ops}
    copy = next(op for op in ops if op["kind"] == "FileOp")
    [source] = copy["inputs"]
    assert by_digest[source]["kind"] == "ExecOp" and by_digest[source]["lines"] == [2, 2]


def test_dot_is_a_digraph(dockerfile: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", "-f", str(dockerfile), "--format", "dot", "--target", "a"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph pybuild {") and "op1 -> op2;" in out and "COPY" not in out


CROSS = (
    "FROM --platform=$BUILDPLATFORM busybox AS build\nRUN echo fetch\nARG TARGETARCH\nRUN echo $TARGETARCH > /out\n"
    "FROM scratch\nCOPY --from=build /out /out\n"
)


def test_several_platforms_show_which_ops_they_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``graph --platform a,b`` is the one graph a several-platform build solves
    (BuildKit merges each platform's LLB into one solve): the build-platform
    step before ARG TARGETARCH is marked shared, each later step names its platform."""
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "root"))
    path = tmp_path / "Dockerfile"
    path.write_text(CROSS)
    assert main(["graph", "-f", str(path), "--platform", "linux/amd64,linux/arm64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    fetch = [line for line in lines if "RUN echo fetch" in line]
    assert len(fetch) == 1 and fetch[0].endswith("[shared]")
    arm = [line for line in lines if "RUN echo arm64 > /out" in line]
    assert len(arm) == 1 and arm[0].endswith("[linux/arm64]")
    assert main(["graph", "-f", str(path), "--platform", "linux/amd64", "--platform", "linux/arm64", "--format", "json"]) == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    assert sorted(len(op["platforms"]) for op in ops if op["kind"] == "ExecOp") == [1, 1, 2]
