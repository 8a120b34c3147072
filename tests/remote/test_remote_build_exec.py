"""``pybuild build --remote-executor`` against a real BuildGrid and ``pybuild worker``:
what runs where, what never leaves this machine, and what is refused.

- RUN steps run on the worker (its log names them, progress says ``[remote]``);
  a secret step and file operations stay here and say why; the secret's bytes
  are in no CAS blob; the files are the local build's.
- A cluster whose bot lies about the layer it made (result.json names another
  diffID) has its result refused: the step runs here, with one warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..layer_tars import layer_tar
from .conftest import BuildGrid, Postgres, start_buildgrid
from .test_remote_build_cache import base_archive, blobs_containing, build, pybuild, tree  # noqa: F401  # base_archive: a fixture
from .workers import running_workers

pytestmark = pytest.mark.usefixtures("require_root")

SECRET = b"s3cr3t-Only-Here-7f1e"  # the one test_remote_build_cache's build() passes as id=tok


@contextlib.contextmanager
def worker(url: str, directory: Path, name: str) -> Iterator[Path]:
    """A ``pybuild worker`` process (two steps at once) serving ``url``; yields its log file."""
    with running_workers(url, directory, (name,), jobs=2) as (started,):
        yield started.log_path


def project(directory: Path, dockerfile: str) -> Path:
    context = directory / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    (context / "a.txt").write_text("from the context\n")
    (directory / "tok").write_bytes(SECRET)
    return context


def step_lines(progress: str, instruction: str) -> list[str]:
    """The progress lines of the step running ``instruction`` (after its number)."""
    number = next(line.split(" ")[0] for line in progress.splitlines() if line.endswith(instruction))
    return [line[len(number) + 1 :] for line in progress.splitlines() if line.startswith(number + " ")]


def test_run_steps_run_on_the_worker_and_a_secret_step_stays_here(tmp_path: Path, buildgrid: BuildGrid, base_archive: Path) -> None:
    marker = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]  # new steps, whatever the shared cache holds
    dockerfile = (
        "FROM busybox\n"
        "COPY a.txt /a.txt\n"
        f"RUN echo remote {marker} > /r.txt && echo said on the worker\n"
        "RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len.txt\n"
        "RUN cat /a.txt /r.txt /len.txt > /all.txt\n"
    )
    context = project(tmp_path, dockerfile)
    local_id, _, local_files = build(tmp_path / "local", context, base_archive)
    with worker(buildgrid.url, tmp_path, "w1") as log:
        remote_id, progress, files = build(tmp_path / "client", context, base_archive, "--remote-executor", buildgrid.url)
    # read once the worker has stopped: it may log a step after the client has its result
    ran = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("worker w1: ran ")]
    first = step_lines(progress, f"RUN echo remote {marker} > /r.txt && echo said on the worker")
    assert any(line.endswith(f"[remote] {buildgrid.url}") for line in first) and any(line.endswith("said on the worker") for line in first), progress
    assert any(line.endswith("[local: secret mount]") for line in step_lines(progress, "RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /len.txt"))
    assert any(line.endswith("[local: file operation]") for line in step_lines(progress, "COPY a.txt /a.txt"))
    assert any(line.endswith(f"[remote] {buildgrid.url}") for line in step_lines(progress, "RUN cat /a.txt /r.txt /len.txt > /all.txt"))
    # the worker's log names the two steps it ran (an earlier test may have cached others)
    assert len(ran) == 2 and f"RUN echo remote {marker}" in ran[0] and "RUN cat /a.txt" in ran[1], ran
    assert tree(files) == tree(local_files) and remote_id == local_id
    assert tree(files)["all.txt"] == f"from the context\nremote {marker}\n{len(SECRET)}\n".encode()
    assert blobs_containing(buildgrid.cas_dir, SECRET) == []
    assert blobs_containing(buildgrid.cas_dir, marker.encode())


class LyingBot:
    """A bot that answers every lease with a layer whose result.json names another diffID."""

    def __init__(self, url: str) -> None:
        from pybuild import reapi

        self.remote = reapi.Remote.connect(reapi.parse_endpoint(url))
        self.stop = threading.Event()
        self.leases = 0
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def serve(self) -> None:
        from pybuild import reapi
        from pybuild.dag.remote import LAYER_OUTPUT, RESULT_OUTPUT, RemoteResult, platform_properties, result_json

        # Every long poll ends when the test is done (interrupt): no waiting out its 6 s.
        session = self.remote.create_bot_session("liar", platform_properties("linux/amd64"), timeout=6, interrupt=self.stop)
        while not self.stop.is_set():
            done = []
            for lease in session.leases:
                if lease.state is not reapi.LeaseState.ACTIVE:
                    continue
                tar = layer_tar({"lie.txt": b"not what the step makes\n"})
                report = result_json(RemoteResult("sha256:" + hashlib.sha256(b"another layer").hexdigest()))
                self.remote.upload({reapi.Digest.of(tar): tar, reapi.Digest.of(report): report})
                outputs = (reapi.OutputFile(LAYER_OUTPUT, reapi.Digest.of(tar)), reapi.OutputFile(RESULT_OUTPUT, reapi.Digest.of(report)))
                done.append(lease.completed(reapi.ActionResult(exit_code=0, output_files=outputs, worker="liar")))
                self.leases += 1
            active = tuple(l for l in session.leases if l.state is reapi.LeaseState.ACTIVE and l.id not in {d.id for d in done})
            session = self.remote.update_bot_session(session.with_leases(active + tuple(done)), timeout=6, interrupt=self.stop)

    def __enter__(self) -> LyingBot:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.remote.close()


def test_a_layer_that_is_not_what_its_result_says_is_refused_and_the_step_runs_here(
    tmp_path: Path, postgres: Postgres, base_archive: Path
) -> None:
    marker = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    context = project(tmp_path, f"FROM busybox\nRUN echo {marker} > /m.txt\n")
    with start_buildgrid(postgres, tmp_path / "server") as server, LyingBot(server.url) as liar:
        _, progress, files = build(tmp_path / "client", context, base_archive, "--remote-executor", server.url)
    assert liar.leases == 1
    refusals = [line for line in progress.splitlines() if "is refused" in line]
    assert len(refusals) == 1 and refusals[0].startswith("warning: ") and "running it here" in refusals[0], progress
    assert "names layer sha256:" in refusals[0]
    assert tree(files)["m.txt"] == f"{marker}\n".encode() and "lie.txt" not in tree(files)


def test_a_step_that_fails_on_the_worker_reads_as_a_local_failure(tmp_path: Path, buildgrid: BuildGrid, base_archive: Path) -> None:
    marker = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    context = project(tmp_path, f"FROM busybox\nRUN echo {marker}\nRUN echo compiling >&2 && echo 'boom: {marker}' >&2 && exit 3\n")
    errors = {}  # (one stream: how a local sandbox interleaves stdout and stderr is its pipes' business)
    for where, flags in (("local", ()), ("remote", ("--remote-executor", buildgrid.url))):
        root = tmp_path / where
        pybuild(root, "load", "-i", str(base_archive))
        with worker(buildgrid.url, tmp_path, f"w-{where}") if flags else contextlib.nullcontext(tmp_path):
            run = pybuild(root, "build", "--progress=quiet", *flags, str(context), check=False)
        assert run.returncode == 1 and "Traceback" not in run.stderr
        errors[where] = run.stderr
    assert errors["remote"] == errors["local"]
    assert "Dockerfile:3" in errors["remote"] and "exit code: 3" in errors["remote"] and f"boom: {marker}" in errors["remote"]
