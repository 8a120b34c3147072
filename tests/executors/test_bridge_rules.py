"""A build joining the bridge checks the rules that keep steps off the host, and makes them again.

The bridge and its rules live as long as some pybuild uses them; meanwhile a
firewall reload or an ``iptables -F`` may drop them, or another tool may put
an ACCEPT above pybuild's jump.  A build that trusted the bridge then would
let its steps reach the host.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess

import pytest

from pybuild.executors import _bridge as bridge

from .test_bridge import bridged, end, private_bridge, settled_state  # noqa: F401  (fixtures)

SUBNET = ipaddress.IPv4Network("10.213.0.0/20")


def saved(expected: str) -> str:
    """iptables-save's text for the rules of ``expected``, as a host shows them (jumps appended
    to parents that hold other rules after them)."""
    tables = bridge._rule_lines(expected)
    out = []
    for table, lines in tables.items():
        out.append(f"*{table}")
        for line in lines:
            if line.startswith("-I "):
                parent, jump = line[3:].split(" 1 ", 1)
                out.append(f"-A {parent} {jump}")
        out.append("-A INPUT -i lo -j ACCEPT" if table == "filter" else "-A POSTROUTING -o eth0 -j RETURN")
        out += [line for line in lines if line.startswith("-A ")]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("only_the_bridge", [False, True])
def test_the_rules_as_made_are_in_place(only_the_bridge: bool) -> None:
    expected = bridge.rules(SUBNET, only_the_bridge=only_the_bridge)
    assert bridge.rules_in_place(expected, saved(expected))


def test_a_rule_above_the_input_jump_is_noticed() -> None:
    expected = bridge.rules(SUBNET)
    text = saved(expected).replace("*filter\n", "*filter\n-A INPUT -j ACCEPT\n")
    assert not bridge.rules_in_place(expected, text)


@pytest.mark.parametrize(
    ("above", "safe"),
    [
        ("-A INPUT -i lo -j ACCEPT", True),
        ("-A INPUT -i docker0 -j ACCEPT", True),
        ("-A INPUT -i pbt123abc -j PBTEST123abc-INPUT", True),  # another pybuild's (a test's private bridge)
        ("-A INPUT -j ACCEPT", False),
        ("-A INPUT ! -i lo -j ACCEPT", False),
        ("-A INPUT -i BRIDGE -j ACCEPT", False),
        ("-A INPUT -i pybu+ -j ACCEPT", False),
        ("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", False),
    ],
)
def test_a_rule_above_the_input_jump_may_only_match_other_interfaces(above: str, safe: bool) -> None:
    expected = bridge.rules(SUBNET)
    text = saved(expected).replace("*filter\n", f"*filter\n{above.replace('BRIDGE', bridge.BRIDGE)}\n")
    assert bridge.rules_in_place(expected, text) == safe


def test_a_rule_above_the_forward_jump_is_another_tools_say() -> None:
    """Docker puts DOCKER-USER first in FORWARD whenever dockerd starts: not a reason to remake."""
    expected = bridge.rules(SUBNET)
    text = saved(expected).replace("*filter\n", "*filter\n-A FORWARD -j DOCKER-USER\n")
    assert bridge.rules_in_place(expected, text)
    text = saved(expected).replace(f"-A FORWARD -j {bridge.CHAIN_PREFIX}-FORWARD\n", "")
    assert not bridge.rules_in_place(expected, text)


def test_a_missing_jump_is_noticed() -> None:
    expected = bridge.rules(SUBNET)
    text = saved(expected).replace(f"-A INPUT -i {bridge.BRIDGE} -j {bridge.CHAIN_PREFIX}-INPUT\n", "")
    assert not bridge.rules_in_place(expected, text)


def test_a_flushed_chain_is_noticed() -> None:
    expected = bridge.rules(SUBNET)
    text = saved(expected).replace(f"-A {bridge.CHAIN_PREFIX}-INPUT -i {bridge.BRIDGE} -j DROP\n", "")
    assert not bridge.rules_in_place(expected, text)


def test_a_rule_added_to_a_chain_of_pybuilds_is_noticed() -> None:
    expected = bridge.rules(SUBNET)
    drop = f"-A {bridge.CHAIN_PREFIX}-INPUT -i {bridge.BRIDGE} -j DROP\n"
    text = saved(expected).replace(drop, f"-A {bridge.CHAIN_PREFIX}-INPUT -i {bridge.BRIDGE} -j ACCEPT\n" + drop)
    assert not bridge.rules_in_place(expected, text)


def test_nat_rules_missing_are_noticed() -> None:
    expected = bridge.rules(SUBNET)
    text = saved(expected).replace(f"-A {bridge.CHAIN_PREFIX}-POSTROUTING -s {SUBNET} ! -o {bridge.BRIDGE} -j MASQUERADE\n", "")
    assert not bridge.rules_in_place(expected, text)


def all_settled(keepers: list[str]) -> tuple[bool, list[str]]:
    """The state once every keeper named has done its clean-up (each may end in any order)."""
    state = (True, ["not checked"])
    for keeper in keepers:
        state = settled_state(keeper)[1]
    return state


def first_input_rule() -> str:
    listing = subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True, text=True, check=True).stdout
    return next(line for line in listing.splitlines() if line.startswith("-A INPUT"))


def take(zygote: subprocess.Popen[bytes]) -> None:
    lease = bridge.Lease.take(zygote.pid)
    lease.release()
    os.close(lease.lock_fd)


def test_a_build_joining_a_tampered_bridge_makes_its_rules_again(private_bridge) -> None:  # noqa: F811
    first = subprocess.Popen(["sleep", "600"])  # the zygote of a running build: its keeper holds the bridge
    second = subprocess.Popen(["sleep", "600"])  # a build starting meanwhile
    foreign = ["INPUT", "-i", bridge.BRIDGE, "-j", "ACCEPT"]
    keepers = [os.path.join(bridge.STATE_DIR, "user", bridge._process_key(p.pid)) for p in (first, second)]
    try:
        take(first)
        subnet = bridge._read_subnet()
        expected = bridge.rules(subnet, only_the_bridge=os.path.exists(os.path.join(bridge.STATE_DIR, "forward")))
        # What a firewall reload and another tool may do while the bridge is up.
        subprocess.run(["iptables", "-w", "-F", f"{bridge.CHAIN_PREFIX}-INPUT"], check=True)
        subprocess.run(["iptables", "-w", "-I", *foreign[:1], "1", *foreign[1:]], check=True)
        subprocess.run(["iptables", "-w", "-t", "nat", "-F", f"{bridge.CHAIN_PREFIX}-POSTROUTING"], check=True)
        assert not bridge.rules_in_place(expected, bridge._iptables_save())
        take(first)  # a later step of the same build does not check (no new keeper): still tampered
        assert not bridge.rules_in_place(expected, bridge._iptables_save())
        take(second)
        assert bridge.rules_in_place(expected, bridge._iptables_save())
        assert first_input_rule() == f"-A INPUT -i {bridge.BRIDGE} -j {bridge.CHAIN_PREFIX}-INPUT"
        assert bridge._read_subnet() == subnet
    finally:
        subprocess.run(["iptables", "-w", "-D", *foreign], capture_output=True)
        end(first)
        end(second)
    assert all_settled(keepers) == (False, [])


def test_a_build_joining_an_intact_bridge_changes_nothing(private_bridge) -> None:  # noqa: F811
    first = subprocess.Popen(["sleep", "600"])
    second = subprocess.Popen(["sleep", "600"])
    keepers = [os.path.join(bridge.STATE_DIR, "user", bridge._process_key(p.pid)) for p in (first, second)]
    original = bridge._iptables_restore
    restored: list[str] = []

    def spy(text: str) -> None:  # still restores: the keeper forked meanwhile keeps this one
        restored.append(text)
        original(text)

    try:
        take(first)
        bridge._iptables_restore = spy  # not monkeypatch's: its undo would take the private names too
        try:
            take(second)
        finally:
            bridge._iptables_restore = original
        assert restored == []
    finally:
        end(first)
        end(second)
    assert all_settled(keepers) == (False, [])
