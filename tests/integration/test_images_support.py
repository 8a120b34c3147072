"""Helpers for the image-command tests (no tests here).

``run_pybuild`` runs the pybuild CLI in a subprocess against a root, as a
user would.  The image commands are added to the command table if
``cli/main.py`` does not list them yet, so these tests run either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
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


DOCKER_ENV: dict[str, str] = {}  # DOCKER_HOST, when the dockerd fixture started a daemon of its own


def docker(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **DOCKER_ENV, **(env or {})}
    result = subprocess.run([DOCKER, *args], env=environment, capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def dockerd(docker_env: dict[str, str]) -> None:
    """Debian's docker daemon for `docker` here: tests/conftest.py's docker_env (started if none runs)."""
    DOCKER_ENV.update((name, value) for name, value in docker_env.items() if name == "DOCKER_HOST")
