"""The network of an ordinary user's steps: `default` through slirp4netns (which needs no
privilege), `none`, and `host` only with the network.host entitlement — as BuildKit's
rootless worker (docs/rootless.md); a step's host network needs the network.host
entitlement, solver/llbsolver/vertex.go ValidateEntitlements, rootless or not.
"""

from __future__ import annotations

from .conftest import AsUser, saved_image


def interfaces(user: AsUser, run_flags: str, *build_flags: str) -> list[str]:
    """The network interfaces a step sees (from /proc/net/dev, saved into the image)."""
    user.write("ctx/Dockerfile", f"FROM busybox\nRUN {run_flags} tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /ifaces\n")
    user.pybuild("build", "-q", *build_flags, "-t", "net:1", str(user.dir / "ctx"))
    archive = user.dir / "net.tar"
    user.pybuild("save", "-o", str(archive), "net:1")
    return sorted(saved_image(archive)[0]["/ifaces"].data.decode().split())


def test_network_none_leaves_only_loopback(user: AsUser, user_busybox: str) -> None:
    assert interfaces(user, "--network=none") == ["lo"]


def test_the_default_network_gives_the_step_an_interface_of_its_own(user: AsUser, user_busybox: str) -> None:
    seen = interfaces(user, "")
    assert "lo" in seen and len(seen) == 2  # slirp4netns' tap device beside loopback


def test_network_host_needs_the_entitlement(user: AsUser, user_busybox: str) -> None:
    user.write("ctx/Dockerfile", "FROM busybox\nRUN --network=host true\n")
    refused = user.pybuild("build", "-q", str(user.dir / "ctx"), check=False)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Dockerfile:2" in errors[0] and "network.host" in refused.stderr
    host = interfaces(user, "--network=host", "--allow", "network.host")
    assert "lo" in host and len(host) >= 2  # the host's interfaces (the user's network namespace is the host's)
