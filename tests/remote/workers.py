"""``pybuild worker`` processes for tests/remote: started against a server, their stderr in a
log file the test reads (which steps each ran), stopped (or killed) at the end."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class WorkerProcess:
    def __init__(self, url: str, directory: Path, name: str, *, jobs: int = 1, extra: tuple[str, ...] = ()) -> None:
        self.name = name
        self.url = url
        self.directory = directory
        self.root = directory / f"root-{name}"
        self.log_path = directory / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                # dies with the test process if that is killed (setpriv execs: the pid stays the worker's)
                ["setpriv", "--pdeathsig", "SIGKILL", "--", sys.executable, "-m", "pybuild", "worker", "--remote", url, "--root", str(self.root),
                 "--name", name, "--jobs", str(jobs), *extra],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self, prefix: str) -> list[str]:
        """The log's lines that start (after the worker's name) with ``prefix``."""
        head = f"worker {self.name}: {prefix}"
        return [line[len(f"worker {self.name}: "):] for line in self.log().splitlines() if line.startswith(head)]

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"worker {self.name} exited ({self.process.returncode}) before {text!r}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} did not log {text!r} in {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.05)

    def signal(self, number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, number)

    def kill(self) -> None:
        """SIGKILL the worker and everything it started (its sandboxes)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        """SIGTERM (the worker drains), then SIGKILL if it lingers; its exit code."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # a sandbox left behind by a killed worker
        return self.process.returncode


@contextlib.contextmanager
def running_workers(url: str, directory: Path, names: tuple[str, ...], *, jobs: int = 1) -> Iterator[list[WorkerProcess]]:
    workers = [WorkerProcess(url, directory, name, jobs=jobs) for name in names]
    try:
        for worker in workers:
            worker.wait_for("serving")
        yield workers
    finally:
        for worker in workers:
            worker.stop()


def layer_digest(tar: Path) -> str:
    return "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
