"""``pybuild worker`` processes against a real BuildGrid (tests/remote/conftest.py): Actions
made by the client's encoder (``dag.remote.encode_step``) and sent with ``reapi`` Execute run
on the workers and come back with their layer; several at once spread over the workers; a
SIGTERM drains, a SIGKILL loses only the lease (re-queued to the other worker)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import io
import json
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild import reapi
from pybuild.dag import ExecOp
from pybuild.dag.remote import encode_step, remote_step

from .conftest import BuildGrid
from .workers import PATH, WorkerProcess, running_workers

pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]


class Client:
    """What a build sends: the base layer once, then one Action per step."""

    def __init__(self, url: str, base_tar: Path) -> None:
        self.remote = reapi.Remote.connect(reapi.parse_endpoint(url))
        data = base_tar.read_bytes()
        self.base = "sha256:" + hashlib.sha256(data).hexdigest()
        self.size = len(data)
        digest = reapi.Digest.of(data)
        if self.remote.find_missing([digest]):
            self.remote.upload_file(digest, base_tar)

    def action(self, script: str) -> reapi.Digest:
        op = ExecOp(rootfs="base", args=("/bin/sh", "-c", script), env=(PATH,), cwd="/", user="root")
        step = remote_step(op, "sha256:" + hashlib.sha256(script.encode()).hexdigest(), "linux/amd64", {"base": (self.base,)})
        encoded = encode_step(step, {self.base: self.size})
        missing = self.remote.find_missing(encoded.blobs)
        self.remote.upload({d: b for d, b in encoded.blobs.items() if d in missing})
        return encoded.action_digest

    def execute(self, script: str) -> reapi.ExecuteResponse:
        return self.remote.execute(self.action(script), skip_cache_lookup=True)

    def files(self, result: reapi.ActionResult) -> dict[str, bytes]:
        layer = result.output("layer.tar")
        assert layer is not None, result
        with tarfile.open(fileobj=io.BytesIO(self.remote.read(layer.digest))) as tar:
            return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


@pytest.fixture
def client(buildgrid: BuildGrid, busybox_tar: Path) -> Iterator[Client]:
    made = Client(buildgrid.url, busybox_tar)
    yield made
    made.remote.close()


def _unique(text: str) -> str:
    return f"{text}-{time.time_ns()}"  # the session's server caches results: every test its own steps


def test_an_action_runs_on_a_worker_and_returns_its_layer(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    marker = _unique("made")
    with running_workers(buildgrid.url, tmp_path, ("solo",)) as (worker,):
        response = client.execute(f"echo {marker} > /made; echo said-{marker}")
        assert response.status_code == 0, response.message
        result = response.result
        assert result.exit_code == 0 and result.worker == "solo"
        assert client.files(result)["made"] == f"{marker}\n".encode()
        report = result.output("result.json")
        assert report is not None
        layer = result.output("layer.tar")
        assert layer is not None and json.loads(client.remote.read(report.digest))["diff_id"] == "sha256:" + layer.digest.hash
        assert result.stdout_digest is not None and client.remote.read(result.stdout_digest) == f"said-{marker}\n".encode()
        assert result.stdout_raw == f"said-{marker}\n".encode()  # small: inline too, BuildGrid passes it on
        assert any(marker in line for line in worker.lines("ran "))


def test_a_failing_step_is_a_completed_action_with_its_exit_code(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    with running_workers(buildgrid.url, tmp_path, ("solo",)):
        response = client.execute(f"echo {_unique('broken')} >&2; exit 7")
    assert response.status_code == 0
    assert response.result.exit_code == 7 and response.result.output_files == ()


def test_independent_steps_spread_over_two_workers(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    stages = [_unique(f"stage{n}") for n in range(4)]
    with running_workers(buildgrid.url, tmp_path, ("w1", "w2")) as workers:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(lambda s: client.execute(f"sleep 2; echo {s} > /out"), stages))
    ran = {w.name: [s for s in stages if any(s in line for line in w.lines("ran "))] for w in workers}
    assert all(r.status_code == 0 and r.result.exit_code == 0 for r in responses)
    assert sorted(ran["w1"] + ran["w2"]) == sorted(stages)  # each stage once, on one of them
    assert ran["w1"] and ran["w2"], ran  # one step at a time each: both had to work
    for stage, response in zip(stages, responses):
        assert response.result.worker in ("w1", "w2") and stage in ran[response.result.worker]
        assert client.files(response.result)["out"] == f"{stage}\n".encode()


def test_jobs_steps_run_at_once_on_one_worker(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    # Four steps for a --jobs 2 worker: BuildGrid hands a bot a second lease only on a session
    # update that reaches it while the first runs, which on a loaded machine can miss for one
    # pair; with four queued, some two must have run at once (and never more than two).
    stages = [_unique(f"par{n}") for n in range(4)]
    with running_workers(buildgrid.url, tmp_path, ("wide",), jobs=2):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            script = "read a b < /proc/uptime; sleep 2; read c d < /proc/uptime; echo $a $c > /span; echo {}"
            responses = list(pool.map(lambda s: client.execute(script.format(s)), stages))
    spans = [tuple(float(x) for x in client.files(r.result)["span"].split()) for r in responses]
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1:] if a[0] < b[1] and b[0] < a[1]]
    assert overlapping, spans  # some two steps' lifetimes overlap
    for start, _ in spans:  # at no moment more than --jobs
        assert sum(1 for s, e in spans if s <= start < e) <= 2, spans


class RunningStep:
    """A worker of the test's own that has started a ``sleep`` step nobody else has (its
    Execute is ``future``); other workers the test starts are stopped with it."""

    def __init__(self, worker: WorkerProcess, future: concurrent.futures.Future[reapi.ExecuteResponse], marker: str) -> None:
        self.worker = worker
        self.future = future
        self.marker = marker
        self.started = [worker]

    def another(self, name: str) -> WorkerProcess:
        other = WorkerProcess(self.worker.url, self.worker.directory, name)
        self.started.append(other)
        return other

    def check_done_by(self, client: Client, response: reapi.ExecuteResponse, name: str) -> None:
        """The step succeeded on worker ``name`` and its layer holds what it wrote."""
        assert response.status_code == 0 and response.result.worker == name
        assert client.files(response.result)["out"] == f"{self.marker}\n".encode()


@contextlib.contextmanager
def step_running_on(name: str, url: str, client: Client, directory: Path, seconds: int) -> Iterator[RunningStep]:
    marker = _unique(name)
    worker = WorkerProcess(url, directory, name)
    step: RunningStep | None = None
    try:
        worker.wait_for("serving")
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            future = pool.submit(client.execute, f"sleep {seconds}; echo {marker} > /out")
            worker.wait_for(f"running RUN sleep {seconds}; echo {marker}")
            step = RunningStep(worker, future, marker)
            yield step
    finally:
        for started in step.started if step is not None else [worker]:
            started.stop()


def test_sigterm_drains_the_running_step_and_the_worker_exits(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    with step_running_on("drainer", buildgrid.url, client, tmp_path, seconds=2) as step:
        step.worker.signal(signal.SIGTERM)
        response = step.future.result(timeout=60)
        assert step.worker.process.wait(30) == 0
    step.check_done_by(client, response, "drainer")
    assert "draining" in step.worker.log() and step.worker.log().rstrip().endswith("stopped")


def test_a_killed_worker_loses_only_its_lease(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    with step_running_on("doomed", buildgrid.url, client, tmp_path, seconds=3) as step:
        step.another("survivor").wait_for("serving")
        step.worker.kill()
        response = step.future.result(timeout=120)  # re-queued once the killed session expires
    step.check_done_by(client, response, "survivor")
    assert not step.worker.lines("ran ")


def test_an_unreachable_cluster_is_one_clear_error(tmp_path: Path) -> None:
    from .conftest import free_port

    url = f"grpc://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "pybuild", "worker", "--remote", url, "--root", str(tmp_path / "root")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and url in errors[0], done.stderr
    assert "Traceback" not in done.stderr  # and it gave up: no waiting for a server forever (timeout=60)


def test_a_bad_flag_names_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pybuild", "worker", "--remote", "http//nope"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--remote" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_takes_only_steps_of_its_platform(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    arm = WorkerProcess(buildgrid.url, tmp_path, "arm", extra=("--platform", "linux/arm64"))
    try:
        arm.wait_for("serving")  # waiting for work first: were properties ignored, it would get the step
        with running_workers(buildgrid.url, tmp_path, ("amd",)):
            response = client.execute(f"echo {_unique('amd64-only')}")
    finally:
        arm.stop()
    assert response.status_code == 0 and response.result.worker == "amd"
    assert not arm.lines("running ")


def test_the_properties_a_worker_offers_are_the_ones_an_action_asks_for() -> None:
    from pybuild.dag.bot import worker_properties
    from pybuild.dag.remote import SANDBOX_VERSION, platform_properties

    assert dict(worker_properties("linux/arm64")) == {"OSFamily": "linux", "ISA": "arm64", "pybuild-sandbox": SANDBOX_VERSION}
    assert worker_properties("linux/amd64") == platform_properties("linux/amd64")


def test_a_bad_platform_names_the_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pybuild", "worker", "--remote", "grpc://127.0.0.1:1", "--platform", "linux/arm64/v8/extra"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "--platform" in done.stderr and "Traceback" not in done.stderr


def test_a_second_signal_gives_the_running_step_back_to_the_cluster(buildgrid: BuildGrid, client: Client, tmp_path: Path) -> None:
    with step_running_on("leaving", buildgrid.url, client, tmp_path, seconds=4) as step:
        leaving = step.worker
        leaving.signal(signal.SIGTERM)
        leaving.wait_for("draining")
        leaving.signal(signal.SIGTERM)  # no waiting for the step: it goes back to the queue
        assert leaving.process.wait(30) == 0
        step.another("taker")
        response = step.future.result(timeout=120)
    assert "giving the running steps back" in leaving.log()
    step.check_done_by(client, response, "taker")


def test_the_bots_connection_has_the_behaviour_the_session_relies_on(buildgrid: BuildGrid, client: Client) -> None:
    from pybuild.dag.bot import worker_properties
    from pybuild.dag.bot._connection import BotsConnection
    from pybuild.dag.bot.fake import check_lease_source

    pool = concurrent.futures.ThreadPoolExecutor(4)
    executions: list[concurrent.futures.Future[reapi.ExecuteResponse]] = []

    def make() -> tuple[BotsConnection, object]:
        connection = BotsConnection(client.remote, _unique("conformance-bot"), worker_properties("linux/amd64"), 1)

        def submit() -> reapi.Digest:
            action = client.action(f"echo {_unique('queued')}")  # no worker runs it: the check's bot does
            executions.append(pool.submit(client.remote.execute, action, skip_cache_lookup=True))
            return action

        return connection, submit

    try:
        check_lease_source(make, reapi.ActionResult(exit_code=0, worker="conformance"))  # type: ignore[arg-type]
        assert all(f.result(timeout=60).status_code == 0 for f in executions)  # every Execute ended with the result
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
