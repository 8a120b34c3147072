"""A step's port on the bridge is isolated and locked to the step's MAC before it comes up."""

from __future__ import annotations

import ipaddress

import pytest

from pybuild.executors import _bridge as bridge
from pybuild.executors import _netlink as netlink


class RecordingNetlink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def add_veth(self, name: str, master: int, peer: str, peer_netns_fd: int, peer_mac: bytes) -> None:
        self.calls.append(("add_veth", name))

    def isolate_port(self, index: int) -> None:
        self.calls.append(("isolate_port", index))

    def set_up(self, index: int) -> None:
        self.calls.append(("set_up", index))

    def add_static_fdb(self, port: int, mac: bytes) -> None:
        self.calls.append(("add_static_fdb", (port, mac)))

    def add_permanent_neighbour(self, index: int, address: str, mac: bytes) -> None:
        self.calls.append(("add_permanent_neighbour", (index, address, mac)))


def test_the_port_is_isolated_before_it_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    indexes = {bridge.BRIDGE: 3}
    monkeypatch.setattr(netlink, "link_index", lambda name: indexes.setdefault(name, 40 + len(indexes)))
    lease = object.__new__(bridge.Lease)  # no host state: attach only talks through host_side
    lease.address = str(ipaddress.IPv4Network("10.213.0.0/20")[9])
    recorder = RecordingNetlink()
    lease.host_side = recorder  # type: ignore[assignment]
    lease.attach(step_netns=7)
    [(_, name), isolate, fdb, neighbour, up] = recorder.calls
    mac = netlink.mac_for(lease.address)
    assert isolate == ("isolate_port", indexes[name]) and up == ("set_up", indexes[name])
    # the bridge and the host know the step's MAC from pybuild, not from what the step sends
    assert fdb == ("add_static_fdb", (indexes[name], mac))
    assert neighbour == ("add_permanent_neighbour", (indexes[bridge.BRIDGE], lease.address, mac))


def test_a_new_veth_is_asked_for_down() -> None:
    sent: list[bytes] = []
    link = object.__new__(netlink.Netlink)
    link.request = lambda kind, body, flags=0: sent.append(body)  # type: ignore[method-assign]
    link.add_veth("pbvtest", 3, "eth0", 7, netlink.mac_for("10.213.0.9"))
    _family, _kind, _index, flags, change = netlink._IFINFO.unpack_from(sent[0])
    assert (flags & netlink.IFF_UP, change & netlink.IFF_UP) == (0, 0)
