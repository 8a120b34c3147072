"""A foreign-platform build with ``--remote-executor``: its RUN steps go to the cluster's
workers of that platform ("a cluster with arm64 workers runs arm64 steps natively").

This machine is amd64, so the arm64 worker below runs the step through QEMU (the
``qemu_handlers`` fixture registers its handler for the session), and with the handler
registered the client's own emulator check passes anyway: this test shows the step ran
on the arm64 worker, not here nor on the amd64 one.  That a step the cluster runs needs
no emulator on the client is shown with a fake emulation in
tests/dag/test_build_placement.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.cli.main import main

from .conftest import BuildGrid
from .test_worker_build import pybuild, project
from .workers import WorkerProcess

pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]


@pytest.mark.usefixtures("qemu_handlers")
def test_arm64_steps_run_on_the_arm64_worker(buildgrid: BuildGrid, arm64_busybox_tar: Path, tmp_path: Path) -> None:
    tag = str(os.getpid()) + tmp_path.name  # steps of their own: the session's server caches results
    root = tmp_path / "client-root"
    pybuild(root, "import", "--platform", "linux/arm64", str(arm64_busybox_tar), "busybox-arm64:latest")
    context = project(tmp_path / "ctx", f"FROM busybox-arm64\nRUN uname -m > /arch && echo {tag} > /tag\n")
    files = tmp_path / "files"
    workers = [
        WorkerProcess(buildgrid.url, tmp_path, "arm", extra=("--platform", "linux/arm64")),
        WorkerProcess(buildgrid.url, tmp_path, "amd"),
    ]
    try:
        for worker in workers:
            worker.wait_for("serving")
        done = pybuild(
            root, "build", "--progress=plain", "--platform", "linux/arm64", "--remote-executor", buildgrid.url,
            "-o", f"type=local,dest={files}", str(context),
        )
    finally:
        for worker in workers:
            worker.stop()
    arm, amd = workers
    assert any(tag in line for line in arm.lines("ran ")), arm.log()
    assert not any(tag in line for line in amd.lines("running ")), amd.log()
    assert "[remote]" in done.stderr, done.stderr
    assert (files / "arch").read_text() == "aarch64\n"
    assert (files / "tag").read_text() == f"{tag}\n"
    for worker in workers:  # pybuild's one-line messages only: gRPC's own log lines are silenced (GRPC_VERBOSITY)
        assert all(line.startswith(f"worker {worker.name}: ") for line in worker.log().splitlines()), worker.log()


@pytest.mark.usefixtures("qemu_handlers")
def test_the_client_needs_no_emulator_for_steps_the_cluster_runs(
    buildgrid: BuildGrid, arm64_busybox_tar: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from pybuild import executors
    from pybuild.executors import EmulationStatus

    asked: list[str] = []

    def nothing_foreign(platform: str) -> EmulationStatus:
        asked.append(platform)
        return EmulationStatus(platform, False, "unavailable", reason="no binfmt_misc handler", hint="pybuild binfmt --install")

    tag = str(os.getpid()) + tmp_path.name
    root = tmp_path / "client-root"
    pybuild(root, "import", "--platform", "linux/arm64", str(arm64_busybox_tar), "busybox-arm64:latest")
    context = project(tmp_path / "ctx", f"FROM busybox-arm64\nRUN echo {tag} > /tag\n")
    monkeypatch.setenv("PYBUILD_ROOT", str(root))
    monkeypatch.setattr(executors, "emulation_status", nothing_foreign)
    build = ["build", "--progress=plain", "--platform", "linux/arm64", "-o", f"type=local,dest={tmp_path / 'files'}", str(context)]

    assert main(build) != 0  # here alone: refused before any step, naming the line
    assert "Dockerfile:2: this machine cannot run linux/arm64 steps: no binfmt_misc handler" in capsys.readouterr().err
    assert asked == ["linux/arm64"]

    asked.clear()
    arm = WorkerProcess(buildgrid.url, tmp_path, "arm", extra=("--platform", "linux/arm64"))
    try:
        arm.wait_for("serving")
        code = main([*build[:1], "--remote-executor", buildgrid.url, *build[1:]])
    finally:
        arm.stop()
    err = capsys.readouterr().err
    assert code == 0, err
    assert asked == []
    assert any(tag in line for line in arm.lines("ran ")), arm.log()
    assert (tmp_path / "files" / "tag").read_text() == f"{tag}\n"
