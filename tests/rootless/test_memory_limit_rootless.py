"""--memory as an ordinary user on a host that delegates no cgroup: refused before anything
runs, with the reason, where Docker discards the limit with a warning
(moby daemon/daemon_unix.go, verifyPlatformContainerResources) and BuildKit's rootless mode
drops a step's resources silently (util/rootless/specconv/specconv_linux.go, ToRootless);
the steps that run say once that they have no pids or memory limit."""

from __future__ import annotations

from .conftest import AsUser

DOCKERFILE = "FROM busybox:latest\nRUN echo one > /one\nRUN echo two > /two\n"


def test_build_memory_is_refused_before_any_step_runs(user: AsUser, user_busybox: str) -> None:
    user.write("ctx/Dockerfile", DOCKERFILE)
    result = user.pybuild("build", "--memory", "64m", "-t", "limited", "ctx", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "--memory 64m: a memory limit needs a memory cgroup, and this rootless pybuild may write no cgroup here" in result.stderr
    assert "#1" not in result.stdout + result.stderr  # no step started
    assert "limited" not in user.pybuild("images").stdout


def test_run_memory_is_refused_before_the_container_exists(user: AsUser, user_busybox: str) -> None:
    result = user.pybuild("run", "-m", "64m", "--name", "limited", user_busybox, "true", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "a memory limit needs a memory cgroup" in result.stderr
    assert "limited" not in user.pybuild("ps", "-a").stdout


def test_a_rootless_build_says_once_that_steps_have_no_limits(user: AsUser, user_busybox: str) -> None:
    user.write("ctx/Dockerfile", DOCKERFILE)
    result = user.pybuild("build", "--progress=plain", "-t", "unlimited", "ctx")
    assert result.stderr.count("warning: rootless: no cgroup this user may write") == 1, result.stderr
