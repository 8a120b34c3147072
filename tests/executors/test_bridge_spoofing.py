"""A step cannot draw another step's traffic to itself by claiming its address or MAC.

Steps hold CAP_NET_RAW (Docker's default set), so one can send ARP and
Ethernet frames of its choosing.  The bridge is shared by every root
pybuild of the host: a step of one build must not receive the downloads of
a step of another.
"""

from __future__ import annotations

import json
import subprocess

import trio

from pybuild.executors import BindMount
from pybuild.executors import _bridge as bridge
from pybuild.executors import _netlink as netlink

from .test_bridge import bridged  # noqa: F401  (fixture)
from .test_sandbox import sh


def host_neighbour(address: str) -> dict[str, object]:
    listing = subprocess.run(["ip", "-j", "neigh", "show", "to", address, "dev", bridge.BRIDGE], capture_output=True, text=True, check=True)
    entries = json.loads(listing.stdout or "[]")
    return entries[0] if entries else {}


def static_port_of(mac: str) -> str | None:
    """The bridge port a static entry sends ``mac`` to (None: not one such entry)."""
    listing = subprocess.run(["bridge", "-j", "fdb", "show", "br", bridge.BRIDGE], capture_output=True, text=True, check=True)
    ports = [e["ifname"] for e in json.loads(listing.stdout or "[]") if e.get("mac") == mac and "static" in e.get("state", "")]
    return ports[0] if len(ports) == 1 else None


def port_flags(port: str) -> dict[str, object]:
    listing = subprocess.run(["ip", "-d", "-j", "link", "show", port], capture_output=True, text=True, check=True)
    info: dict[str, object] = json.loads(listing.stdout)[0]["linkinfo"]["info_slave_data"]
    return info


def mac_text(address: str) -> str:
    return ":".join(f"{b:02x}" for b in netlink.mac_for(address))


async def test_the_host_and_the_bridge_know_a_steps_mac_from_pybuild_not_from_the_step(executor, make_rootfs, bridged, tmp_path) -> None:  # noqa: F811
    """What a step sends cannot move its address or another's: the host's ARP entry for the step is
    permanent (its MAC follows from the address), the bridge learns nothing on the step's port and
    floods it no unknown unicast; the port is isolated.  (busybox's arping cannot send a forged ARP,
    so the forgery itself is not attempted here.)"""
    shared = tmp_path / "shared"
    shared.mkdir()
    mount = (BindMount(str(shared), "/shared", readonly=False),)
    step = (
        "ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1 > /shared/v.tmp && mv /shared/v.tmp /shared/v && "
        "ping -c 1 -W 1 $(ip route | awk '/default/ {print $3}') >/dev/null 2>&1; "  # the host answers nothing, but hears of us
        "while [ ! -e /shared/done ]; do sleep 0.1; done"
    )
    seen: dict[str, object] = {}

    async def run() -> None:
        result, _, err = await sh(executor, make_rootfs(), step, mounts=mount, network="default")
        assert result.exit_code == 0, err

    async def inspect() -> None:
        try:
            with trio.fail_after(30):
                while not (shared / "v").exists():
                    await trio.sleep(0.05)
            address = (shared / "v").read_text().strip()
            seen["address"] = address
            seen["neighbour"] = host_neighbour(address)
            port = static_port_of(mac_text(address))
            seen["flags"] = port_flags(port) if port is not None else {}
        finally:
            (shared / "done").touch()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(inspect)
    address = str(seen["address"])
    neighbour = seen["neighbour"]
    assert isinstance(neighbour, dict)
    assert neighbour.get("lladdr") == mac_text(address) and "PERMANENT" in neighbour.get("state", []), neighbour
    flags = seen["flags"]
    assert isinstance(flags, dict)
    assert flags.get("learning") is False and flags.get("flood") is False and flags.get("isolated") is True, flags
