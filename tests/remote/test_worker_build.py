"""Issue 19's end to end runs with ``pybuild worker``: ``pybuild build --remote-executor`` on a
real BuildGrid with two worker processes (separate roots). Four independent stages run on both
workers and give the local build's image ID; an empty root then runs nothing; a worker killed
mid-step costs only its lease; a server stopped mid-build is one clear error."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BuildGrid, Postgres, start_buildgrid
from .workers import WorkerProcess, running_workers

pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]

EPOCH = "1700000000"
STAGES = 4
DOCKERFILE = "".join(
    f"FROM busybox AS stage{n}\n"
    f"RUN sleep 2 && echo stage{n}-{{tag}} > /stage{n}.txt && seq 1 {20000 + n} | md5sum > /stage{n}.sum\n"
    for n in range(STAGES)
) + "FROM busybox\n" + "".join(f"COPY --from=stage{n} /stage{n}.txt /stage{n}.sum /out/\n" for n in range(STAGES))


def pybuild(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    done = subprocess.run([sys.executable, "-m", "pybuild", *args], capture_output=True, text=True, env=env, timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def base_image(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox as an OCI archive every root of the module loads: one base image (one manifest
    digest, so one cache key per step) on every machine, as a pull of one tag would give."""
    seed = tmp_path_factory.mktemp("busybox-oci") / "seed-root"
    pybuild(seed, "import", str(busybox_tar), "busybox:latest")
    archive = seed.parent / "busybox-oci.tar"
    pybuild(seed, "save", "--format", "oci", "-o", str(archive), "busybox:latest")
    return archive


def build(root: Path, context: Path, base: Path, *flags: str, check: bool = True) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A reproducible build (clamped times) of ``context`` on ``root``: the run and its files."""
    if not root.exists():
        pybuild(root, "load", "-q", "-i", str(base))
    files = root.parent / f"{root.name}-files"
    done = pybuild(
        root, "build", "--progress=plain", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}", "--iidfile", f"{root}.iid",
        "-o", "type=image,rewrite-timestamp=true", "-o", f"type=local,dest={files}", *flags, str(context), check=check,
    )
    return done, files


def image_id(root: Path) -> str:
    return Path(f"{root}.iid").read_text()


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def project(directory: Path, text: str) -> Path:
    directory.mkdir()
    (directory / "Dockerfile").write_text(text)
    return directory


def test_four_stages_run_on_both_workers_and_give_the_local_image(
    buildgrid: BuildGrid, base_image: Path, tmp_path: Path
) -> None:
    tag = str(os.getpid()) + tmp_path.name  # steps of their own: the session's server caches results
    context = project(tmp_path / "ctx", DOCKERFILE.format(tag=tag))
    remote = ("--remote-executor", buildgrid.url)
    with running_workers(buildgrid.url, tmp_path, ("w1", "w2")) as workers:
        _, remote_files = build(tmp_path / "remote-root", context, base_image, *remote)
        ran = {w.name: [line for line in w.lines("ran ") if tag in line] for w in workers}
        # an empty root against the same cluster: every step from the action cache
        build(tmp_path / "second-root", context, base_image, *remote)
        ran_again = {w.name: [line for line in w.lines("ran ") if tag in line] for w in workers}
    _, local_files = build(tmp_path / "local-root", context, base_image)

    assert ran["w1"] and ran["w2"], ran  # one step at a time each: both worked
    named = sorted(n for n in range(STAGES) for line in ran["w1"] + ran["w2"] if f"echo stage{n}-" in line)
    assert named == list(range(STAGES))  # each stage's RUN once, on one worker or the other
    assert ran_again == ran, "\n".join(w.log() for w in workers)  # the second root made no worker run anything
    assert tree(remote_files) == tree(local_files)
    assert tree(local_files)["out/stage3.txt"] == f"stage3-{tag}\n".encode()
    assert image_id(tmp_path / "remote-root") == image_id(tmp_path / "local-root") == image_id(tmp_path / "second-root")


def test_a_worker_killed_mid_step_costs_only_its_lease(buildgrid: BuildGrid, base_image: Path, tmp_path: Path) -> None:
    tag = str(os.getpid()) + tmp_path.name
    context = project(tmp_path / "ctx", f"FROM busybox\nRUN sleep 3 && echo {tag} > /survived\n")
    with running_workers(buildgrid.url, tmp_path, ("a", "b")) as workers:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(build, tmp_path / "root", context, base_image, "--remote-executor", buildgrid.url)
            victim = _first_running(workers, tag)
            victim.kill()
            _, files = future.result(timeout=300)
        other = next(w for w in workers if w is not victim)
        assert any(tag in line for line in other.lines("ran "))
        assert not any(tag in line for line in victim.lines("ran "))
    assert (files / "survived").read_text() == f"{tag}\n"


def test_a_server_stopped_mid_build_is_one_clear_error(postgres: Postgres, base_image: Path, tmp_path: Path) -> None:
    context = project(tmp_path / "ctx", f"FROM busybox\nRUN sleep 5 && echo {tmp_path.name} > /never\n")
    with start_buildgrid(postgres, tmp_path / "server") as server:
        worker = WorkerProcess(server.url, tmp_path, "orphan")
        try:
            worker.wait_for("serving")
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                future = pool.submit(build, tmp_path / "root", context, base_image, "--remote-executor", server.url, check=False)
                worker.wait_for("running RUN sleep 5")
                server.stop()
                done, _ = future.result(timeout=300)
            worker.wait_for("bot session update failed")
        finally:
            # Killed, not drained: a draining worker keeps trying to report its step to the
            # stopped server until stop() gives up (30 s); how it drains is test_worker_cluster's.
            worker.kill()
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and server.url in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert sum("update failed" in line for line in worker.log().splitlines()) == 1  # said once, then retried quietly


def _first_running(workers: list[WorkerProcess], tag: str, timeout: float = 120.0) -> WorkerProcess:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in workers:
            if any(tag in line for line in worker.lines("running ")):
                return worker
        time.sleep(0.05)
    raise AssertionError("no worker started the step:\n" + "\n".join(w.log() for w in workers))
