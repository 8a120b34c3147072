"""What the suite needs from outside the repository: peer tools, the docker daemon, ../shared.

Every test that depends on one of them finds it here, so that its absence is handled in one way:

- A peer tool (docker, skopeo, umoci, docker-registry, gcc...) or a daemon that does not start
  is a *failure* when ``PYBUILD_TEST_STRICT`` is set (``.ci/run`` sets it: ``.ci/setup``
  installs every peer, so a skip there would hide a broken interop), and otherwise a *skip*
  whose reason names the Debian package to install.
- The conformance files of ``../shared/conformance`` are found by `conformance_cases` (cases
  for parametrize, at collection time) and `require_conformance` (in a test or fixture); a
  clone without ``../shared`` reports those tests as skipped with one reason naming the
  directory, never a collection error.

Tools are looked up on ``PATH`` (`shutil.which`), so a run with a PATH that lacks one shows what
CI would do without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

STRICT_VARIABLE = "PYBUILD_TEST_STRICT"

# The Debian package each peer comes from (.ci/setup installs them all).
PACKAGES = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "umoci": "umoci",
    "buildah": "buildah",
    "git": "git",
    "gcc": "gcc",
    "slirp4netns": "slirp4netns",
    "fuse-overlayfs": "fuse-overlayfs",
    "zstd": "zstd",
    "xz": "xz-utils",
    "bzip2": "bzip2",
    "gzip": "gzip",
}

REPO = Path(__file__).resolve().parent.parent
CONFORMANCE = REPO.parent / "shared" / "conformance"


def strict() -> bool:
    """True under CI, where every peer is installed and must work."""
    return os.environ.get(STRICT_VARIABLE, "") not in ("", "0")


def peer_unavailable(reason: str, package: str) -> NoReturn:
    """Fail under CI, skip elsewhere naming the Debian package that provides the peer."""
    if strict():
        pytest.fail(f"{reason} ({STRICT_VARIABLE} is set; .ci/setup installs {package})", pytrace=False)
    pytest.skip(f"{reason} (apt-get install {package})")


def require_tool(name: str) -> str:
    """The path of peer tool `name`; fails (CI) or skips (elsewhere) when it is missing."""
    found = shutil.which(name)
    if found is None:
        peer_unavailable(f"{name} is not installed", PACKAGES[name])
    return found


def tool_present(name: str) -> bool:
    """For tests that try several tools: False when `name` is missing, a failure under CI."""
    if shutil.which(name) is not None:
        return True
    if strict():
        require_tool(name)  # fails
    return False


def require_tools(names: Sequence[str]) -> None:
    for name in names:
        require_tool(name)


# --- the docker daemon --------------------------------------------------------------------------

DOCKER = "/usr/bin/docker"  # Debian's client; /usr/local/bin/docker may be another one


def docker_answers(env: dict[str, str]) -> bool:
    try:
        return subprocess.run([DOCKER, "info"], env=env, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def docker_daemon(state: Path) -> Iterator[dict[str, str]]:
    """The environment for Debian's docker CLI: the running daemon, or one started in `state`.

    A daemon started here listens on a socket in `state` (named by DOCKER_HOST in the returned
    environment), keeps its data there, and is stopped on exit, its mounts undone.
    """
    if not os.path.exists(DOCKER):
        peer_unavailable(f"{DOCKER} is not installed", PACKAGES["docker"])
    env = dict(os.environ)
    if docker_answers(env):
        yield env
        return
    require_tool("dockerd")
    if os.geteuid() != 0:
        pytest.skip("no docker daemon runs and starting one needs root")
    sock = state / "docker.sock"
    env["DOCKER_HOST"] = f"unix://{sock}"
    log_path = state / "dockerd.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(
            [
                "dockerd", "--iptables=false", "--bridge=none", f"--host=unix://{sock}",
                f"--data-root={state / 'data'}", f"--exec-root={state / 'exec'}", f"--pidfile={state / 'pid'}",
            ],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_docker(daemon, env, log_path)
        yield env
    finally:
        _stop(daemon)
        unmount_under(state)


def _wait_for_docker(daemon: subprocess.Popen[bytes], env: dict[str, str], log: Path) -> None:
    for _ in range(120):
        if docker_answers(env):
            return
        if daemon.poll() is not None:
            peer_unavailable(f"dockerd exited ({daemon.returncode}): {log.read_text()[-500:]}", PACKAGES["dockerd"])
        time.sleep(0.5)
    peer_unavailable(f"dockerd did not answer within 60 s: {log.read_text()[-500:]}", PACKAGES["dockerd"])


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below `directory`, deepest first (from /proc/self/mountinfo)."""
    prefix = str(directory.resolve())
    points = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            # octal escapes (\040 for a space) as the kernel writes them
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def unmount_under(directory: Path) -> None:
    """Detach what a daemon left mounted in `directory` (e.g. dockerd's exec/netns/default),
    so pytest can remove its temporary directories."""
    for point in mounts_under(directory):
        subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)


# --- ../shared/conformance ----------------------------------------------------------------------


def no_conformance() -> str:
    """The one skip reason of tests whose conformance files are absent."""
    return f"the conformance files are not here: {CONFORMANCE} (the ../shared checkout beside the repository)"


def conformance_dir(name: str) -> Path | None:
    """``../shared/conformance/<name>``, or None when the clone has no ../shared."""
    directory = CONFORMANCE / name
    return directory if directory.is_dir() else None


def conformance_cases(name: str, cases: Callable[[Path], Sequence[Any]], width: int = 1) -> list[Any]:
    """Parameters for a test whose cases are read from ``../shared/conformance/<name>``.

    Without ../shared this is one placeholder case (of `width` values) marked skipped with
    `no_conformance()` as its reason, so the test still collects and is reported as skipped.
    """
    directory = conformance_dir(name)
    if directory is None:
        values = (None,) * width
        return [pytest.param(*values, id="no-conformance-files", marks=pytest.mark.skip(reason=no_conformance()))]
    return list(cases(directory))


def require_conformance(name: str) -> Path:
    """``../shared/conformance/<name>``, or a skip naming the directory looked for."""
    directory = conformance_dir(name)
    if directory is None:
        pytest.skip(no_conformance())
    return directory
