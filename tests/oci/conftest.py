"""Fixtures for the registry tests: a real docker-registry and the fault-injecting one.

``docker_registry`` runs Debian's CNCF distribution registry
(``/usr/bin/docker-registry``) on 127.0.0.1 with a temp storage directory, once
per session; tests use their own repository names.  ``fake_registry`` is the
small Python registry of ``registry_server.py``, served from the test's own
trio run (so trio's MockClock applies to it) and stopped when the test ends.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from .._peers import require_tool
from .registry_server import FakeRegistry


@dataclass(frozen=True)
class RunningRegistry:
    host: str  # 127.0.0.1:PORT
    storage: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="session")
def docker_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    program = require_tool("docker-registry")
    root = tmp_path_factory.mktemp("docker-registry")
    storage = root / "storage"
    storage.mkdir()
    log = root / "registry.log"
    for _attempt in range(3):  # the free port may be taken before the registry binds it
        port = _free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n"
            "storage:\n"
            f"  filesystem:\n    rootdirectory: {storage}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        with open(log, "ab") as log_file:
            process = subprocess.Popen(
                [program, "serve", str(config)], stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        registry = RunningRegistry(f"127.0.0.1:{port}", storage, log)
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline and not _answers(f"{registry.url}/v2/"):
            time.sleep(0.05)
        if process.poll() is None and _answers(f"{registry.url}/v2/"):
            break
        process.kill()
        process.wait()
    else:
        pytest.fail(f"docker-registry did not start; see {log}:\n{log.read_text()[-2000:]}")
    try:
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def fake_registry(nursery: trio.Nursery) -> FakeRegistry:
    """A FakeRegistry on 127.0.0.1, stopped when the test ends."""
    registry = FakeRegistry()
    await nursery.start(registry.server.serve)
    return registry
