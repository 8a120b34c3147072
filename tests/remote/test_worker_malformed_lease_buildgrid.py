"""A malformed lease from a real BuildGrid (tests/remote/conftest.py) reaches a real
``pybuild worker``: an Action whose input root digest is not SHA-256 hex is queued by
BuildGrid as it is and sent in a lease. The worker refuses that lease at once (the client's
Execute ends INVALID_ARGUMENT with the reason) and runs the next step as usual; before, every
session update failed on it and the worker ran nothing again."""

from __future__ import annotations

import concurrent.futures
import hashlib
import time
from pathlib import Path

import pytest
from buildgrid.common.protos.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

from pybuild import reapi
from pybuild.dag import ExecOp
from pybuild.dag.remote import encode_step, remote_step

from .conftest import BuildGrid
from .workers import PATH, running_workers

pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]

INVALID_ARGUMENT = 3


def _action(remote: reapi.Remote, base_tar: Path, script: str) -> reapi.Digest:
    """A step's Action as a build sends it (base layer uploaded), in the CAS."""
    data = base_tar.read_bytes()
    base = "sha256:" + hashlib.sha256(data).hexdigest()
    remote.upload({reapi.Digest.of(data): data})
    op = ExecOp(rootfs="base", args=("/bin/sh", "-c", script), env=(PATH,), cwd="/", user="root")
    step = remote_step(op, "sha256:" + hashlib.sha256(script.encode()).hexdigest(), "linux/amd64", {"base": (base,)})
    encoded = encode_step(step, {base: len(data)})
    remote.upload(dict(encoded.blobs))
    return encoded.action_digest


def _malformed(remote: reapi.Remote, good: reapi.Digest) -> reapi.Digest:
    """``good``'s Action with an input root digest that is no digest (what BuildGrid does not check)."""
    action = re_pb2.Action()
    action.ParseFromString(remote.read(good))
    action.input_root_digest.hash = "not-a-digest"
    data = action.SerializeToString(deterministic=True)
    digest = reapi.Digest.of(data)
    remote.upload({digest: data})
    return digest


def test_a_malformed_lease_is_refused_and_the_worker_goes_on(buildgrid: BuildGrid, busybox_tar: Path, tmp_path: Path) -> None:
    marker = f"after-{time.time_ns()}"
    with reapi.Remote.connect(reapi.parse_endpoint(buildgrid.url)) as remote, \
            running_workers(buildgrid.url, tmp_path, ("picky",)) as (worker,):
        bad = _malformed(remote, _action(remote, busybox_tar, f"echo {marker}-never"))
        pool = concurrent.futures.ThreadPoolExecutor(1)  # a worker stuck on it never answers: not waited for
        try:
            refused = pool.submit(remote.execute, bad, skip_cache_lookup=True).result(timeout=60)
        finally:
            pool.shutdown(wait=False)
        assert refused.status_code == INVALID_ARGUMENT, refused
        assert "malformed input root digest" in refused.message and "not-a-digest" in refused.message
        ran = remote.execute(_action(remote, busybox_tar, f"echo {marker} > /made"), skip_cache_lookup=True)
        assert ran.status_code == 0 and ran.result.exit_code == 0 and ran.result.worker == "picky", ran
        log = worker.log()
    assert len(worker.lines("refused lease ")) == 1, log
    assert "update failed" not in log and "Traceback" not in log, log
