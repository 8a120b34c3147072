"""A worker says "serving" only once SIGINT and SIGTERM drain it: a supervisor that stops it
the moment it says so gets a drained, cleanly closed worker, not one killed by the signal."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .conftest import BuildGrid
from .workers import WorkerProcess

pytestmark = [pytest.mark.usefixtures("require_root"), pytest.mark.slow]


def test_sigterm_right_after_serving_drains_the_worker(buildgrid: BuildGrid, tmp_path: Path) -> None:
    worker = WorkerProcess(buildgrid.url, tmp_path, "ready")
    try:
        worker.wait_for("serving")
        worker.signal(signal.SIGTERM)
        assert worker.process.wait(30) == 0, worker.log()
    finally:
        worker.stop()
    assert worker.lines("SIGTERM: draining"), worker.log()
    assert worker.lines("stopped"), worker.log()
