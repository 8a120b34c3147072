"""Published ports as an ordinary user: slirp4netns listens on the host as the user, so a
host port below net.ipv4.ip_unprivileged_port_start (1024 by default) cannot be bound;
rootlesskit's and Docker's rootless docs (docs/rootless.md, "Exposing privileged ports")
name that sysctl, and the error says so instead of "already allocated"."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import AsUser


def _first_unprivileged_port() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())


def test_a_privileged_host_port_names_the_sysctl(user: AsUser, user_busybox: str) -> None:
    port = _first_unprivileged_port() - 1
    if port < 1:
        pytest.skip("net.ipv4.ip_unprivileged_port_start is 0: every host port is open to users here")
    result = user.pybuild("run", "-d", "--name", "low-port", "-p", f"{port}:8080", user_busybox, "sleep", "30", check=False)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"cannot publish 127.0.0.1:{port}->8080/tcp" in result.stderr or f"cannot publish 0.0.0.0:{port}->8080/tcp" in result.stderr, result.stderr
    assert "net.ipv4.ip_unprivileged_port_start" in result.stderr
