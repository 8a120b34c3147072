"""Storage of an ordinary user: the default root is $XDG_DATA_HOME/pybuild, the user's alone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .conftest import _MAIN, AsUser


def test_a_user_root_is_private_to_the_user(user: AsUser, user_busybox: str) -> None:
    """Two users never share or see each other's roots: the default root is made for the
    user alone (0700), so another account cannot list or read it even where the directories
    above it are open (as BuildKit's rootless root, ~/.local/share/buildkit, is 0700; containerd
    makes its root 0o700, cmd/containerd/server/server.go CreateTopLevelDirectories)."""
    os.chmod(user.dir, 0o755)
    os.chmod(user.data_home, 0o755)
    assert user.root.stat().st_uid == user.account.uid
    assert user.root.stat().st_mode & 0o077 == 0
    other = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--", "ls", str(user.root)],
        capture_output=True,
    )  # fmt: skip
    assert other.returncode != 0



def test_without_xdg_data_home_the_root_is_under_home(user: AsUser, busybox_tar: Path) -> None:
    """BuildKit's rootless default, ~/.local/share/buildkit (cmd/buildkitd/main.go's
    defaultConf via appdefaults.UserAddress/UserRoot: $XDG_DATA_HOME or ~/.local/share)."""
    tar = user.give(busybox_tar, "busybox.tar")
    env = user.environment()
    del env["XDG_DATA_HOME"]
    done = subprocess.run(
        user.command(sys.executable, "-c", _MAIN, "import", str(tar), "busybox:latest"), env=env, cwd=user.dir,
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (user.home / ".local" / "share" / "pybuild").is_dir()
    assert not user.root.exists()


def test_a_root_the_user_cannot_write_is_a_clear_error(user: AsUser, tmp_path: Path) -> None:
    """PYBUILD_ROOT naming root's directory: one line saying so, nothing made in it."""
    closed = Path(tempfile.mkdtemp(prefix="pybuild-root-of-root-", dir="/tmp"))
    try:
        os.chmod(closed, 0o755)
        done = user.pybuild("images", check=False, env={"PYBUILD_ROOT": str(closed / "root")})
        assert done.returncode != 0
        assert "Traceback" not in done.stderr and "internal error" not in done.stderr
        assert str(closed / "root") in done.stderr
        assert os.listdir(closed) == []
    finally:
        shutil.rmtree(closed)


def test_memory_limit_rootless_is_refused_and_the_cgroup_warning_said_once(user: AsUser, user_busybox: str) -> None:
    """No cgroup the user may write (cgroup v1 here): `-m` fails before any step instead of
    being ignored, and a build of several steps warns once that limits are unavailable.
    (BuildKit's rootless ToRootless, util/rootless/specconv/specconv_linux.go, drops the
    spec's cgroup resources the same way; pybuild refuses the flag rather than drop it.)"""
    user.write("ctx/Dockerfile", "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n")
    refused = user.pybuild("build", "-q", "--network=none", "-m", "64m", str(user.dir / "ctx"), check=False)
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "memory" in errors[0].lower()
    built = user.pybuild("build", "-q", "--network=none", str(user.dir / "ctx"))
    assert len([line for line in built.stderr.splitlines() if "cgroup" in line]) == 1  # once, not per step


def test_run_with_a_memory_limit_rootless_is_refused(user: AsUser, user_busybox: str) -> None:
    """`run -m` as a user without a writable cgroup: refused before the container starts.
    Rootless Docker on cgroup v1 discards the limit with a warning (moby
    daemon/daemon_unix.go, verifyPlatformContainerResources); issue 17 asks for a clear
    failure instead, so a limit the user counts on is never silently absent."""
    refused = user.pybuild("run", "--rm", "-m", "64m", user_busybox, "true", check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "memory" in errors[0].lower()
    assert user.pybuild("ps", "-a", "-q").stdout == ""
