"""Helpers for the image-command tests (no tests here).

``run_pybuild`` runs the pybuild CLI in a subprocess against a root, as a
user would.  The image commands are added to the command table if
``cli/main.py`` does not list them yet, so these tests run either way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker is another one

IMAGE_COMMANDS = {
    "images": "_images", "tag": "_tag", "rmi": "_rmi", "history": "_history", "inspect": "_inspect",
    "save": "_save", "load": "_load", "pull": "_pull", "push": "_push", "image": "_image",
}

_MAIN = (
    "import sys\n"
    "from pybuild.cli import main as m\n"
    f"for name, module in {IMAGE_COMMANDS!r}.items():\n"
    "    m.COMMANDS.setdefault(name, ('pybuild.cli.' + module, name))\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)


def run_pybuild(
    *args: str, root: Path, input: bytes | str | None = None, check: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    environment = {**os.environ, "PYBUILD_ROOT": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", _MAIN, *args], cwd=cwd, env=environment, capture_output=True, input=input,
        text=not isinstance(input, bytes), timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Debian's docker daemon, started for the session if none answers (and stopped after)."""
    if not Path(DOCKER).exists() or shutil.which("dockerd") is None:
        pytest.skip("docker.io is not installed")
    if os.geteuid() != 0:
        pytest.skip("dockerd needs root")
    if docker("info", check=False).returncode == 0:
        yield
        return
    log = open(tmp_path_factory.mktemp("dockerd") / "dockerd.log", "wb")
    process = subprocess.Popen(["dockerd", "--iptables=false", "--bridge=none"], stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(200):
            if docker("info", check=False).returncode == 0:
                break
            if process.poll() is not None:
                pytest.skip(f"dockerd exited ({process.returncode}); see {log.name}")
            time.sleep(0.1)
        else:
            pytest.skip("dockerd did not answer within 20 s")
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
