"""The ``default`` network as root: a veth to pybuild's bridge, NAT through the host's stack.

The servers a step must reach live in a network namespace the test makes,
joined to the host by a veth of their own and routed by the host (as the
world beyond it is); the host's own services (loopback, its addresses, the
bridge's gateway address) must stay out of reach.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from pybuild.executors import BindMount, SandboxExecutor
from pybuild.executors import _bridge as bridge
from pybuild.executors import _netfiles as netfiles
from pybuild.executors import _sandbox as sandbox
from pybuild.executors import _netlink as netlink

from .._peers import peer_unavailable
from .test_network import at_once, outbound_address, serve_marker
from .test_sandbox import sh

pytestmark = pytest.mark.root

SERVER_PORT = 8713


def has_iptables() -> bool:
    return subprocess.run(["iptables", "-w", "-S", "INPUT"], capture_output=True).returncode == 0


@pytest.fixture
def bridged(require_root: None) -> None:
    if shutil.which("iptables") is None:
        peer_unavailable("iptables is not installed: the bridge falls back to slirp4netns", "iptables")
    if not has_iptables():
        pytest.skip("iptables is not usable here: the bridge falls back to slirp4netns")
    if not bridge.nameservers_for_bridge(Path("/etc/resolv.conf").read_text()):
        pytest.skip("the host has only loopback resolvers: steps use slirp4netns")


class RemoteNetns:
    """A network namespace joined to the host by a veth (10.231.77.0/30), serving HTTP on .2."""

    def __init__(self) -> None:
        self.name = f"pbt{uuid.uuid4().hex[:8]}"
        self.host_if = f"{self.name}h"
        self.address = "10.231.77.2"
        self.server: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "RemoteNetns":
        run = lambda *args: subprocess.run(args, check=True, capture_output=True)  # noqa: E731
        run("ip", "netns", "add", self.name)
        run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", "eth0", "netns", self.name)
        run("ip", "addr", "add", "10.231.77.1/30", "dev", self.host_if)
        run("ip", "link", "set", self.host_if, "up")
        inside = ("ip", "netns", "exec", self.name)
        run(*inside, "ip", "addr", "add", f"{self.address}/30", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        run(*inside, "ip", "link", "set", "lo", "up")
        run(*inside, "ip", "route", "add", "default", "via", "10.231.77.1")
        # socketserver's TCPServer, not http.server's HTTPServer: that one asks the resolver
        # for its own name (getfqdn), which no resolver answers in this namespace (10 s).
        code = textwrap.dedent(f"""
            import http.server, socketserver, sys
            class H(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    body = ("remote-marker from " + self.client_address[0] + "\\n").encode()
                    self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
                    self.wfile.write(body)
                def log_message(self, *a): pass
            s = socketserver.TCPServer(("{self.address}", {SERVER_PORT}), H)
            print("ready", flush=True)
            s.serve_forever()
        """)
        self.server = subprocess.Popen([*inside, sys.executable, "-c", code], stdout=subprocess.PIPE)
        assert self.server.stdout is not None and self.server.stdout.readline() == b"ready\n"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.server is not None:
            self.server.kill()
            self.server.wait()
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture
def remote(bridged: None) -> Iterator[RemoteNetns]:
    with RemoteNetns() as netns:
        yield netns


async def test_a_step_gets_an_address_a_route_and_the_hosts_resolver(executor, make_rootfs, bridged) -> None:
    script = "ls /sys/class/net; ip -4 -o addr show dev eth0; ip route; cat /etc/resolv.conf"
    # No CAP_NET_ADMIN: the step cannot change even its own side.
    script += "; ip link set eth0 down 2>/dev/null || echo denied; ip route del default 2>/dev/null || echo denied"
    result, out, err = await sh(executor, make_rootfs(), script, network="default")
    assert result.exit_code == 0, err
    lines = out.splitlines()
    assert lines[-2:] == ["denied", "denied"], out
    assert lines[:2] == ["eth0", "lo"], out
    address = ipaddress.IPv4Interface(lines[2].split()[3])
    subnet = bridge._read_subnet()  # the bridge lives as long as the executor
    assert address.network == subnet and str(subnet) in bridge.CANDIDATE_SUBNETS, out
    assert f"default via {subnet[1]} dev eth0" in out
    expected = bridge.nameservers_for_bridge(Path("/etc/resolv.conf").read_text())
    assert [line.split()[1] for line in lines if line.startswith("nameserver")] == expected


async def test_a_step_reaches_a_server_routed_through_the_host(executor, make_rootfs, remote) -> None:
    script = f"timeout 10 wget -q -O- http://{remote.address}:{SERVER_PORT}/"
    result, out, err = await sh(executor, make_rootfs(), script, network="default")
    assert result.exit_code == 0, err
    # Masqueraded: the server sees the host's address on its link, not the step's.
    assert out == "remote-marker from 10.231.77.1\n"


async def test_a_step_cannot_reach_the_host(executor, make_rootfs, bridged) -> None:
    external = outbound_address()
    async with trio.open_nursery() as nursery:
        loopback_port = await serve_marker(nursery, "127.0.0.1")
        any_port = await serve_marker(nursery, "0.0.0.0")  # every address of the host, the bridge's too
        targets = [f"127.0.0.1:{loopback_port}", f"GATEWAY:{any_port}"]
        if external is not None:
            targets.append(f"{external}:{any_port}")
        script = "gw=$(ip route | awk '/default/ {print $3}'); " + at_once(
            [f"timeout 3 wget -q -O- http://{t.replace('GATEWAY', '$gw')}/ || echo refused" for t in targets]
        )
        result, out, err = await sh(executor, make_rootfs(), script, network="default")
        # Control: the same services answer the host itself, and a --network=host step.
        _, control, _ = await sh(executor, make_rootfs(), f"wget -q -O- http://127.0.0.1:{any_port}/", network="host")
        nursery.cancel_scope.cancel()
    assert out.split() == ["refused"] * len(targets), err
    assert control == "host-marker\n"


async def test_a_step_cannot_reach_another_step(executor, make_rootfs, bridged, tmp_path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    mount = (BindMount(str(shared), "/shared", readonly=False),)
    server = (
        "mkdir /tmp/www && echo step-marker > /tmp/www/x && httpd -p 8080 -h /tmp/www && "
        "ip -4 -o addr show dev eth0 | awk '{print $4}' > /shared/a.tmp && mv /shared/a.tmp /shared/a && "
        "while [ ! -e /shared/done ]; do sleep 0.1; done; cat /shared/a"
    )
    client = (
        "while [ ! -e /shared/a ]; do sleep 0.1; done; a=$(cut -d/ -f1 /shared/a); "
        "ip -4 -o addr show dev eth0 | awk '{print $4}'; "
        "timeout 3 wget -q -O- http://$a:8080/x || echo refused; touch /shared/done"
    )
    results: dict[str, str] = {}

    async def run(name: str, script: str) -> None:
        result, out, err = await sh(executor, make_rootfs(), script, mounts=mount, network="default")
        assert result.exit_code == 0, err
        results[name] = out

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, "server", server)
        nursery.start_soon(run, "client", client)
    server_address = results["server"].strip()
    client_address, verdict = results["client"].split()
    assert server_address != client_address
    assert ipaddress.IPv4Interface(server_address).network == ipaddress.IPv4Interface(client_address).network
    assert verdict == "refused"


def bridge_state() -> tuple[bool, list[str]]:
    """Whether the bridge exists, and the rules of pybuild's chains iptables has."""
    chains = []
    for table in ("filter", "nat"):
        listing = subprocess.run(["iptables", "-w", "-t", table, "-S"], capture_output=True, text=True).stdout
        chains += [line for line in listing.splitlines() if bridge.CHAIN_PREFIX in line]
    return netlink.link_index(bridge.BRIDGE) is not None, chains


@pytest.fixture
def private_bridge(bridged: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The bridge's names and state directory made unique to this test (in this process only):
    its set-up and removal can be watched while other pybuilds use the real one."""
    tag = uuid.uuid4().hex[:6]
    monkeypatch.setattr(bridge, "BRIDGE", f"pbt{tag}")
    monkeypatch.setattr(bridge, "CHAIN_PREFIX", f"PBTEST{tag}")
    monkeypatch.setattr(bridge, "STATE_DIR", str(tmp_path / "net"))
    (tmp_path / "net").mkdir()
    yield
    assert bridge.BRIDGE == f"pbt{tag}", "the private names were undone: the real bridge is not this test's to remove"
    bridge.remove_bridge()


def test_bridge_and_rules_are_made_and_removed_whole(private_bridge) -> None:
    forwarding = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "1"
    bridge.make_bridge()
    exists, chains = bridge_state()
    subnet = bridge._read_subnet()
    assert exists and f"-A {bridge.CHAIN_PREFIX}-INPUT -i {bridge.BRIDGE} -j DROP" in chains
    assert f"-A {bridge.CHAIN_PREFIX}-POSTROUTING -s {subnet} ! -o {bridge.BRIDGE} -j MASQUERADE" in chains
    assert f"-A INPUT -i {bridge.BRIDGE} -j {bridge.CHAIN_PREFIX}-INPUT" in chains
    # A host that already forwards keeps forwarding what it did (Docker's containers ...).
    assert (f"-A {bridge.CHAIN_PREFIX}-FORWARD -j DROP" in chains) == (not forwarding)
    bridge.remove_bridge()
    assert bridge_state() == (False, [])
    assert not os.path.exists(os.path.join(bridge.STATE_DIR, "subnet"))


def test_a_killed_pybuilds_state_is_reset_and_the_keeper_cleans_up(private_bridge) -> None:
    """A step finding a bridge nobody holds (its pybuild killed with -9) makes it afresh; the keeper
    forked for the step's zygote removes it all once that process ends."""
    bridge.make_bridge()
    stale_index = netlink.link_index(bridge.BRIDGE)
    os.makedirs(os.path.join(bridge.STATE_DIR, "addr"))
    stale_address = os.path.join(bridge.STATE_DIR, "addr", "7")
    os.close(os.open(stale_address, os.O_RDWR | os.O_CREAT, 0o600))
    zygote = subprocess.Popen(["sleep", "600"])  # stands for the zygote the keeper watches (ended below)
    keeper = os.path.join(bridge.STATE_DIR, "user", bridge._process_key(zygote.pid))
    try:
        lease = bridge.Lease.take(zygote.pid)
        try:
            assert netlink.link_index(bridge.BRIDGE) not in (None, stale_index)
            assert not os.path.exists(stale_address) and os.path.exists(keeper)
            assert ipaddress.IPv4Address(lease.address) in bridge._read_subnet()
        finally:
            lease.release()
            os.close(lease.lock_fd)
    finally:
        end(zygote)
    assert settled_state(keeper)[1] == (False, [])


def end(process: subprocess.Popen[bytes]) -> None:
    """End a stand-in zygote now (rather than sleeping until it exits by itself)."""
    process.kill()
    process.wait()


def test_no_iptables_means_no_bridge(private_bridge, tmp_path, monkeypatch) -> None:
    """Without iptables the step is refused the bridge (the monitor then starts slirp4netns)
    and nothing of a half-made bridge stays."""
    empty = tmp_path / "bin"
    empty.mkdir()
    path = os.environ["PATH"]
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(bridge.BridgeUnavailable, match="iptables"):
        bridge.Lease.take(os.getpid())
    monkeypatch.setenv("PATH", path)
    assert bridge_state() == (False, [])
    assert not os.path.exists(os.path.join(bridge.STATE_DIR, "subnet"))
    # The same process's later steps do not try again (each try costs iptables processes),
    # even now that iptables would answer; another process tries afresh.
    with pytest.raises(bridge.BridgeUnavailable, match="iptables"):
        bridge.Lease.take(os.getpid())
    assert bridge_state() == (False, [])
    other = subprocess.Popen(["sleep", "600"])
    keeper = os.path.join(bridge.STATE_DIR, "user", bridge._process_key(other.pid))
    try:
        lease = bridge.Lease.take(other.pid)
        lease.release()
        os.close(lease.lock_fd)
        assert bridge_state()[0]
    finally:
        end(other)
    assert settled_state(keeper)[1] == (False, [])


def test_a_partial_state_is_removed_rule_by_rule(private_bridge) -> None:
    """A pybuild killed half-way through its clean-up: a jump already gone, the rest left."""
    bridge.make_bridge()
    jump = ["-D", "FORWARD", "-j", f"{bridge.CHAIN_PREFIX}-FORWARD"]
    subprocess.run(["iptables", "-w", *jump], check=True)
    bridge.remove_bridge()
    assert bridge_state() == (False, [])


def settled_state(keeper: str, timeout: float = 20.0) -> tuple[bool, tuple[bool, list[str]]]:
    """(in use by another pybuild, state) once the keeper of our zygote has done its clean-up.

    Other pybuild processes on this machine may hold the bridge: the state is
    checked under the global lock, and only asserted gone when nothing holds it."""
    deadline = time.monotonic() + timeout
    while os.path.exists(keeper):  # the keeper removes its own file last
        assert time.monotonic() < deadline, f"the keeper of {keeper} did not finish"
        time.sleep(0.05)
    with bridge._global_lock():
        return bridge._in_use(), bridge_state()


async def run_one_step(tmp_path: Path, make_rootfs, script: str = "ls /sys/class/net") -> tuple[str, str]:
    """Run a step in an executor of its own; its output and the path of its zygote's keeper file."""
    state = tmp_path / f"executor-{uuid.uuid4().hex[:6]}"
    state.mkdir()
    async with SandboxExecutor(state_dir=str(state)) as executor:
        result, out, err = await sh(executor, make_rootfs(), script, network="default")
        assert result.exit_code == 0, err
        during = bridge_state()
        assert executor._zygote is not None
        keeper = os.path.join(bridge.STATE_DIR, "user", bridge._process_key(executor._zygote.process.pid))
        assert os.path.exists(keeper)
    assert during[0] and any("MASQUERADE" in rule for rule in during[1])
    return out, keeper


async def test_bridge_and_rules_go_with_the_last_user(make_rootfs, bridged, tmp_path) -> None:
    out, keeper = await run_one_step(tmp_path, make_rootfs)
    assert out == "eth0\nlo\n"
    in_use, (exists, chains) = settled_state(keeper)
    if not in_use:  # else another pybuild on this machine holds them: only our reference is checked
        assert not exists and chains == []


async def test_a_killed_pybuilds_bridge_is_cleaned_by_the_next(make_rootfs, bridged, tmp_path) -> None:
    # What a pybuild killed with -9 leaves: bridge, rules and state files, with no live lock holder.
    with bridge._global_lock():
        if bridge._in_use():
            pytest.skip("another pybuild on this machine is using the bridge: a stale one cannot be made")
        bridge.remove_bridge()
        bridge.make_bridge()
        stale = os.open(os.path.join(bridge.STATE_DIR, "addr", "7"), os.O_RDWR | os.O_CREAT, 0o600)
        os.close(stale)
    assert bridge_state()[0]
    out, keeper = await run_one_step(tmp_path, make_rootfs)
    assert out == "eth0\nlo\n"
    assert not os.path.exists(os.path.join(bridge.STATE_DIR, "addr", "7"))
    in_use, (exists, chains) = settled_state(keeper)
    if not in_use:
        assert not exists and chains == []


# -- the driver forced from the environment (read from the pybuild process's) ----------------

RUN_ONE = textwrap.dedent("""
    import sys, tempfile, trio
    from pathlib import Path
    from pybuild.executors import ProcessSpec, Rootfs, SandboxExecutor

    async def main():
        base = Path(tempfile.mkdtemp(dir=sys.argv[1]))
        (base / "u").mkdir(); (base / "w").mkdir(); (base / "state").mkdir()
        out = []
        async with SandboxExecutor(state_dir=str(base / "state")) as executor:
            spec = ProcessSpec(("/bin/sh", "-c", sys.argv[3]), env=("PATH=/bin",), network="default")
            result = await executor.run(Rootfs((sys.argv[2],), str(base / "u"), str(base / "w")), spec, on_output=lambda s, b: out.append(b))
        sys.stdout.write(b"".join(out).decode())
        sys.exit(result.exit_code)

    trio.run(main)
""")


def run_with_driver(tmp_path: Path, busybox_rootfs: Path, driver: str, script: str) -> str:
    env = {**os.environ, bridge.DRIVER_ENV: driver}
    done = subprocess.run([sys.executable, "-c", RUN_ONE, str(tmp_path), str(busybox_rootfs), script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_slirp4netns_forced_from_the_environment(tmp_path, busybox_rootfs, remote) -> None:
    script = f"ls /sys/class/net; grep nameserver /etc/resolv.conf; timeout 10 wget -q -O- http://{remote.address}:{SERVER_PORT}/"
    out = run_with_driver(tmp_path, busybox_rootfs, "slirp4netns", script)
    assert out.splitlines() == ["lo", "tap0", "nameserver 10.0.2.3", "remote-marker from 10.231.77.1"]


def test_bridge_forced_from_the_environment(tmp_path, busybox_rootfs, bridged) -> None:
    assert run_with_driver(tmp_path, busybox_rootfs, "bridge", "ls /sys/class/net") == "eth0\nlo\n"


def test_two_pybuild_processes_share_the_bridge(tmp_path, busybox_rootfs, remote) -> None:
    """Two processes starting at once: one makes the bridge, both get an address and the world."""
    script = f"ip -4 -o addr show dev eth0 | awk '{{print $4}}'; timeout 30 wget -q -O- http://{remote.address}:{SERVER_PORT}/"
    env = {**os.environ, bridge.DRIVER_ENV: "bridge"}
    runs = [
        subprocess.Popen([sys.executable, "-c", RUN_ONE, str(tmp_path), str(busybox_rootfs), script], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    for run, (out, err) in zip(runs, outputs):
        assert run.returncode == 0, (out, err)
        assert out.splitlines()[1:] == ["remote-marker from 10.231.77.1"], (out, err)
    assert len({out.splitlines()[0] for out, _ in outputs}) == 2


# -- pieces ------------------------------------------------------------------------------------


def test_the_subnet_avoids_the_hosts_routes() -> None:
    first, second = (ipaddress.IPv4Network(s) for s in bridge.CANDIDATE_SUBNETS[:2])
    assert bridge.choose_subnet([ipaddress.IPv4Network("192.0.2.0/24")]) == first
    assert bridge.choose_subnet([ipaddress.IPv4Network("10.213.5.0/24")]) == second
    assert bridge.choose_subnet([ipaddress.IPv4Network("10.0.0.0/8")]) not in (first, second)
    with pytest.raises(OSError):
        bridge.choose_subnet([ipaddress.IPv4Network("0.0.0.0/1"), ipaddress.IPv4Network("128.0.0.0/1")])


def test_host_routes_are_read_from_proc() -> None:
    ip = subprocess.run(["ip", "-4", "route", "show", "table", "main"], capture_output=True, text=True)
    if ip.returncode != 0:
        pytest.skip("no ip command")
    listed = {line.split()[0] for line in ip.stdout.splitlines() if line and not line.startswith("default")}
    assert {str(r) for r in bridge.host_routes()} >= {str(ipaddress.IPv4Network(n)) for n in listed if "/" in n}


def test_resolvers_the_bridge_cannot_reach_are_left_out() -> None:
    local = outbound_address() or "127.0.0.1"
    text = f"search example\nnameserver 127.0.0.53\nnameserver {local}\nnameserver 9.9.9.9\nnameserver 2001:db8::1\n"
    assert bridge.nameservers_for_bridge(text) == ["9.9.9.9"]
    assert bridge.nameservers_for_bridge("nameserver 127.0.0.53\n") == []


def test_an_address_lock_is_exclusive_and_dies_with_its_holder(tmp_path) -> None:
    path = str(tmp_path / "5")
    fd = bridge._try_lock(path)
    assert fd is not None and bridge._try_lock(path) is None
    os.close(fd)
    again = bridge._try_lock(path)
    assert again is not None
    fcntl.flock(again, fcntl.LOCK_UN)
    os.close(again)


def test_macs_follow_addresses() -> None:
    assert netlink.mac_for("10.213.0.2") == bytes([0x02, 0x42, 10, 213, 0, 2])


# -- which driver a step gets (the monitor's choice, without running a step) -------------------


def monitor(setting_up: str = "sandbox", resolv: str = "nameserver 9.9.9.9\n") -> sandbox._Monitor:
    chosen = sandbox._Monitor.__new__(sandbox._Monitor)
    chosen.setting_up = setting_up
    chosen.host_resolv = resolv
    chosen.bridge_nameservers = []
    return chosen


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch, require_root: None) -> list[int]:
    """Lease.take as on a host that refuses the bridge; the calls it got."""
    calls: list[int] = []

    def take(zygote: int) -> bridge.Lease:
        calls.append(zygote)
        raise bridge.BridgeUnavailable("iptables-restore: no such table")

    monkeypatch.setattr(bridge.Lease, "take", staticmethod(take))
    monkeypatch.delenv(bridge.DRIVER_ENV, raising=False)
    monkeypatch.setattr(bridge, "_pybuild_environ", lambda: {})
    return calls


def test_a_refused_bridge_falls_back_to_slirp4netns_quietly(refused) -> None:
    assert monitor().bridge_lease() is None
    assert refused == [os.getppid()]


def test_a_refused_bridge_is_an_error_when_asked_for(refused, monkeypatch) -> None:
    monkeypatch.setenv(bridge.DRIVER_ENV, "bridge")
    with pytest.raises(sandbox.SetupError, match="iptables-restore") as raised:
        monitor().bridge_lease()
    assert raised.value.hint is not None and "slirp4netns" in raised.value.hint


def test_slirp4netns_without_asking_the_bridge(refused, monkeypatch) -> None:
    """Containers (their published ports go through slirp4netns), a loopback-only resolver,
    or the environment's choice: the bridge is not even tried."""
    assert monitor(setting_up="container").bridge_lease() is None
    assert monitor(resolv="nameserver 127.0.0.53\n").bridge_lease() is None
    monkeypatch.setenv(bridge.DRIVER_ENV, "slirp4netns")
    assert monitor().bridge_lease() is None
    assert refused == []


def test_resolv_conf_behind_the_bridge_names_the_reachable_resolvers() -> None:
    host = "search example.org\noptions ndots:2\nnameserver 127.0.0.53\nnameserver 9.9.9.9\n"
    text = netfiles.resolv_conf(host, "default", ["9.9.9.9"]).decode()
    assert text == "search example.org\noptions ndots:2\nnameserver 9.9.9.9\n"
    assert "nameserver 10.0.2.3" in netfiles.resolv_conf(host, "default").decode()
    assert netfiles.nameservers(host) == ["9.9.9.9"]


IP_FORWARD_CHECK = textwrap.dedent("""
    import sys
    from pybuild.executors import _bridge as bridge
    bridge.STATE_DIR = sys.argv[1]
    forward = "/proc/sys/net/ipv4/ip_forward"
    read = lambda: open(forward).read().strip()
    with open(forward, "w") as f:
        f.write("0")
    bridge.make_bridge()
    made = read()
    import subprocess
    listing = subprocess.run(["iptables", "-w", "-S", "PYBUILD-FORWARD"], capture_output=True, text=True).stdout
    others = "dropped" if "-A PYBUILD-FORWARD -j DROP" in listing.splitlines() else "forwarded"
    bridge.remove_bridge()
    print(made, others, read())
""")


def test_ip_forward_is_turned_on_only_while_the_bridge_lives(bridged, tmp_path) -> None:
    """In a network namespace of its own (ip_forward and the rules are per namespace): pybuild
    turns forwarding on for its bridge and back off with it, where Docker leaves it on."""
    done = subprocess.run(["unshare", "--net", sys.executable, "-c", IP_FORWARD_CHECK, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # While on, nothing but the bridge's traffic is forwarded: the host did not forward before.
    assert done.stdout.split() == ["1", "dropped", "0"]
