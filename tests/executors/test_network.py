"""Network modes: none (loopback only), default (pybuild's bridge as root, or slirp4netns; no host loopback), host.

The bridge's own tests (routing, isolation, clean-up, the forced driver) are in test_bridge.py."""

# busybox wget -T segfaults (a busybox bug, also outside any sandbox), so timeouts use the timeout applet.

from __future__ import annotations

import functools
import socket
import subprocess

import pytest
import trio

from .test_sandbox import sh

pytestmark = pytest.mark.root

MIRROR = "deb.debian.org"


async def serve_marker(nursery: trio.Nursery, host: str = "127.0.0.1") -> int:
    """An HTTP service on the host that answers with a marker; returns its port."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await stream.receive_some(4096)
            await stream.send_all(b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\nhost-marker\n")
        except trio.BrokenResourceError:
            pass
        finally:
            await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, handle, 0, host=host))
    return listeners[0].socket.getsockname()[1]


def outbound_address() -> str | None:
    """The host's address on its default route (no packet is sent), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


async def test_none_has_loopback_only(executor, make_rootfs) -> None:
    script = (
        "ls /sys/class/net; "
        "mkdir /tmp/www && echo local > /tmp/www/x && httpd -p 127.0.0.1:8080 -h /tmp/www && "
        "wget -q -O- http://127.0.0.1:8080/x; "
        "timeout 5 wget -q -O- http://10.0.2.2/ 2>/dev/null || echo unreachable"
    )
    result, out, err = await sh(executor, make_rootfs(), script, network="none")
    assert out.split() == ["lo", "local", "unreachable"], err


def at_once(probes: list[str]) -> str:
    """A script running ``probes`` side by side (a refusal by DROP costs its whole timeout:
    one after another they cost the sum), printing their outputs in the order given."""
    started = "".join(f"({probe}) > /tmp/probe{n} & " for n, probe in enumerate(probes))
    return started + "wait; " + "; ".join(f"cat /tmp/probe{n}" for n in range(len(probes)))


def default_driver() -> str:
    """What a root step's ``default`` network goes through here: pybuild's bridge when iptables
    works and the host has a resolver the bridge can reach, else slirp4netns (see _bridge)."""
    from pybuild.executors import _bridge as bridge

    usable = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True).returncode == 0
    with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
        resolvers = bridge.nameservers_for_bridge(f.read())
    return "bridge" if usable and resolvers else "slirp4netns"


async def test_default_cannot_reach_the_hosts_loopback(executor, make_rootfs) -> None:
    external = outbound_address()
    bridged = default_driver() == "bridge"
    async with trio.open_nursery() as nursery:
        port = await serve_marker(nursery)
        # The service works from the host.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
        assert b"host-marker" in await stream.receive_some(4096)
        await stream.aclose()
        gateway = "$(ip route | awk '/default/ {print $3}')"
        probes = [
            f"timeout 5 wget -q -O- http://{gateway}:{port}/ || echo gateway-refused",
            f"timeout 5 wget -q -O- http://127.0.0.1:{port}/ || echo loopback-refused",
        ]
        if external is not None:
            # slirp4netns lets a step reach the host's own address; the bridge does not.
            external_port = await serve_marker(nursery, external)
            probes.append(f"timeout 5 wget -q -O- http://{external}:{external_port}/ || echo external-refused")
        result, out, err = await sh(executor, make_rootfs(), "ls /sys/class/net; " + at_once(probes), network="default")
        nursery.cancel_scope.cancel()
    interfaces = ["eth0", "lo"] if bridged else ["lo", "tap0"]
    expected = interfaces + ["gateway-refused", "loopback-refused"]
    if external is not None:
        expected.append("external-refused" if bridged else "host-marker")
    assert out.split() == expected, err


async def test_host_network_sees_the_host(executor, make_rootfs) -> None:
    async with trio.open_nursery() as nursery:
        port = await serve_marker(nursery)
        result, out, err = await sh(executor, make_rootfs(), f"timeout 5 wget -q -O- http://127.0.0.1:{port}/", network="host")
        nursery.cancel_scope.cancel()
    assert out == "host-marker\n", err


def host_can_reach(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=5):
            return True
    except OSError:
        return False


async def test_default_fetches_from_the_debian_mirror(executor, make_rootfs) -> None:
    if not await trio.to_thread.run_sync(host_can_reach, MIRROR, 80):
        pytest.skip(f"this machine has no route out: {MIRROR}:80 is unreachable from the host itself")
    result, out, err = await sh(
        executor, make_rootfs(), f"timeout 30 wget -q -O- http://{MIRROR}/debian/dists/stable/Release | head -n 5", network="default"
    )
    assert "Origin: Debian" in out, err
