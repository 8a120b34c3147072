"""The ``default`` network of a RUN step as root: a veth pair to pybuild's bridge, with NAT.

slirp4netns (the rootless path, and the fallback) is a user-space TCP/IP
stack: every byte a step downloads is copied through it.  As root a step can
use the host's own stack instead, as BuildKit's steps do: the monitor gives
the step's network namespace one end of a veth pair whose other end is a port
of the bridge ``pybuild0``; the host routes and masquerades its traffic.

What a step can reach: the world through the host's routes, nothing of the
host itself (an iptables INPUT rule drops everything the bridge brings in,
so the host's loopback services and its own addresses are out of reach; IPv6
is off on the bridge and in the step), and no other step (every port is an
isolated bridge port).  It holds no capability in the host's namespace, so it
cannot change the bridge or the rules.

State, shared by every pybuild process of the host (``STATE_DIR``):

- ``lock``: flock held while the bridge and its rules are made, checked or removed;
- ``addr/N``: flock held by a step's monitor for its life: the step owns host N of the subnet;
- ``user/PID-START``: flock held by a *keeper*, forked by the first step of a zygote,
  which waits for that zygote (pidfd) to end;
- ``subnet`` (and ``forward``, when pybuild turned ``ip_forward`` on): what the rules were made for.

A lock held is a live reference, and the kernel drops it when its process
dies, however it dies: the reference count survives crashes.  The bridge
and rules are made by the first step that finds no live reference (removing
whatever a killed pybuild left first), and removed by the last keeper to end
when no reference is left: a build's sequential steps share one setup.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import select
import socket

TYPE_CHECKING = False  # not typing's: the zygote does not import typing
if TYPE_CHECKING:
    from collections.abc import Iterator

if __package__:
    from . import _linux as linux
    from . import _netfiles as netfiles
    from . import _netlink as netlink
else:  # loaded by the zygote as top-level modules
    import _linux as linux
    import _netfiles as netfiles
    import _netlink as netlink

BRIDGE = "pybuild0"
STEP_IFNAME = "eth0"
STATE_DIR = "/run/pybuild/net"
DRIVER_ENV = "PYBUILD_NETWORK_DRIVER"
SLIRP, BRIDGE_DRIVER, AUTO = "slirp4netns", "bridge", "auto"
# Private /20s unlikely to be in use (Docker takes 172.17+, Podman 10.88, BuildKit's CNI 10.10);
# the first that overlaps no route of the host is used.
CANDIDATE_SUBNETS = ("10.213.0.0/20", "10.214.0.0/20", "10.215.0.0/20", "172.31.240.0/20", "192.168.213.0/24")
CHAIN_PREFIX = "PYBUILD"  # pybuild's chains: PYBUILD-INPUT, PYBUILD-FORWARD (filter), PYBUILD-POSTROUTING (nat)
_IP_FORWARD = "/proc/sys/net/ipv4/ip_forward"


FALLBACK_HINT = f"{DRIVER_ENV}=slirp4netns runs the default network through slirp4netns instead"


class BridgeUnavailable(Exception):
    """The bridge cannot be used for this step; the message says why (the step falls back to slirp4netns)."""


# --------------------------------------------------------------------------
# which driver


def driver_setting() -> str:
    """``PYBUILD_NETWORK_DRIVER``: slirp4netns, bridge or auto (unset).

    The zygote runs with a clean environment, so the variable is read from
    the monitor's own environment and else from the pybuild process that
    started the zygote (its environment at start).
    """
    value = os.environ.get(DRIVER_ENV)
    if value is None:
        value = _pybuild_environ().get(DRIVER_ENV, "")
    return value if value in (SLIRP, BRIDGE_DRIVER) else AUTO


def _pybuild_environ() -> dict[str, str]:
    try:
        zygote = os.getppid()
        with open(f"/proc/{zygote}/stat", "rb") as f:
            pybuild = int(f.read().rsplit(b")", 1)[1].split()[1])
        with open(f"/proc/{pybuild}/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return {}
    pairs = (entry.decode(errors="replace").partition("=") for entry in entries if b"=" in entry)
    return {name: value for name, _, value in pairs}


def nameservers_for_bridge(host_resolv: str) -> list[str]:
    """The host's nameservers a step behind the bridge can use: not loopback, not the host's own
    addresses (the bridge may not reach the host).  Empty: the step needs slirp4netns's forwarder."""
    usable = []
    for address in netfiles.nameservers(host_resolv):
        try:
            if ipaddress.ip_address(address).version != 4 or _is_local(address):
                continue
        except ValueError:
            continue
        usable.append(address)
    return usable


def _is_local(address: str) -> bool:
    """An address of this host: one a socket can bind to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


# --------------------------------------------------------------------------
# a step's lease


class Lease:
    """A step's address on the bridge, held from before its namespaces exist until the monitor exits."""

    def __init__(self, subnet: ipaddress.IPv4Network, host: int, lock_fd: int) -> None:
        self.subnet = subnet
        self.address = str(subnet[host])
        self.gateway = str(subnet[1])
        self.lock_fd = lock_fd
        self.host_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self.host_side: netlink.Netlink | None = None
        try:
            self.host_side = netlink.Netlink()  # opened in the host's namespace
        except OSError:
            self.release()
            raise

    @classmethod
    def take(cls, zygote: int) -> "Lease":
        """Make sure the bridge and rules exist, take an address and a keeper for ``zygote``.

        Called by the monitor before it unshares anything (the keeper must not
        hold the step's mounts or namespaces).  BridgeUnavailable when the host
        refuses (no iptables, no CAP_NET_ADMIN ...).
        """
        try:
            os.makedirs(os.path.join(STATE_DIR, "addr"), 0o700, exist_ok=True)
            os.makedirs(os.path.join(STATE_DIR, "user"), 0o700, exist_ok=True)
            refused = _refused_for(zygote)
            if refused:  # once per pybuild process: a host that refuses does not change its mind
                raise BridgeUnavailable(refused)
            with _global_lock():
                made = False
                if not _in_use() or netlink.link_index(BRIDGE) is None:
                    remove_bridge()  # what a killed pybuild may have left
                    try:
                        make_bridge()
                    except BaseException as e:
                        remove_bridge()
                        _remember_refusal(zygote, str(e))
                        raise
                    made = True
                subnet = _read_subnet()
                if _ensure_keeper(zygote) and not made:
                    # A build joining a bridge another pybuild made: a firewall reload or an
                    # `iptables -F` since may have dropped or outranked the rules that keep
                    # steps off the host; checked once per zygote (one iptables-save).
                    ensure_rules(subnet)
                host, fd = _take_address(subnet)
        except (OSError, ValueError) as e:
            raise BridgeUnavailable(str(e)) from None
        try:
            return cls(subnet, host, fd)
        except OSError as e:
            os.close(fd)
            raise BridgeUnavailable(str(e)) from None

    def connect(self) -> None:
        """Give the current (the step's, just unshared) network namespace its end of a veth pair.

        The host's side is made from the host's namespace (entered for that
        moment through ``host_netns``, opened before the unshare): interface
        names are looked up where they live."""
        assert self.host_side is not None and self.host_netns >= 0
        step_netns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            # No IPv6 in the step: its link-local address could reach the host's.
            _write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1", missing_ok=True)
            linux.setns(self.host_netns, linux.CLONE_NEWNET)
            try:
                self.attach(step_netns)
            finally:
                linux.setns(step_netns, linux.CLONE_NEWNET)
        finally:
            os.close(step_netns)
            self.release()
        inside = netlink.Netlink()
        try:
            index = netlink.link_index(STEP_IFNAME)
            if index is None:
                raise OSError(f"{STEP_IFNAME} did not arrive in the step's namespace")
            inside.add_address(index, self.address, self.subnet.prefixlen)
            inside.set_up(index)
            inside.add_default_route(self.gateway, index)
        finally:
            inside.close()

    def attach(self, step_netns: int) -> None:
        """Create the veth pair (a fresh name on a clash with a dying namespace's) and isolate its port."""
        assert self.host_side is not None
        bridge = netlink.link_index(BRIDGE)
        if bridge is None:
            raise OSError(f"the bridge {BRIDGE} is gone")
        mac = netlink.mac_for(self.address)
        for _ in range(5):
            name = "pbv" + os.urandom(5).hex()[:10]
            try:
                self.host_side.add_veth(name, bridge, STEP_IFNAME, step_netns, mac)
            except FileExistsError:
                continue
            index = netlink.link_index(name)
            if index is None:
                raise OSError(f"the veth {name} vanished")
            # Isolated and locked before it is up: no frame of another step ever crosses a port
            # that is not.  The bridge learns no MAC and the host no ARP answer from a step: with
            # CAP_NET_RAW a step could otherwise claim another step's MAC or address (another
            # build's, maybe another user's) and receive its downloads.  A MAC follows its address
            # (mac_for), so the host's permanent entry stays right for the address's next holder.
            self.host_side.isolate_port(index)
            self.host_side.add_static_fdb(index, mac)
            self.host_side.add_permanent_neighbour(bridge, self.address, mac)
            self.host_side.set_up(index)
            return
        raise OSError("no free veth name")

    def release(self) -> None:
        """Close what reaches the host's namespace.  The address stays taken until the monitor
        exits (its lock closes with the process): the veth goes with the step's namespace then."""
        if self.host_side is not None:
            self.host_side.close()
            self.host_side = None
        if self.host_netns >= 0:
            os.close(self.host_netns)
            self.host_netns = -1


def _refusal_path(zygote: int) -> str:
    return os.path.join(STATE_DIR, "refused", _process_key(zygote))


def _refused_for(zygote: int) -> str:
    """Why making the bridge failed for an earlier step of this zygote ("" if it did not)."""
    try:
        with open(_refusal_path(zygote)) as f:
            return f.read() or "refused"
    except FileNotFoundError:
        return ""


def _remember_refusal(zygote: int, reason: str) -> None:
    """Later steps of the zygote go straight to slirp4netns; the files of zygotes that have
    ended are removed here, so the directory holds at most the live ones."""
    directory = os.path.join(STATE_DIR, "refused")
    try:
        os.makedirs(directory, 0o700, exist_ok=True)
        for name in os.listdir(directory):
            pid = name.partition("-")[0]
            try:
                alive = pid.isdigit() and _process_key(int(pid)) == name
            except OSError:
                alive = False
            if not alive:
                os.unlink(os.path.join(directory, name))
        with open(_refusal_path(zygote), "w") as f:
            f.write(reason)
    except OSError:
        pass


def _take_address(subnet: ipaddress.IPv4Network) -> tuple[int, int]:
    """A host number of ``subnet`` no live step holds, and its lock (random: a number just
    given back may still be on a namespace the kernel is tearing down)."""
    hosts = subnet.num_addresses - 2
    for _ in range(64):
        host = 2 + int.from_bytes(os.urandom(4), "little") % (hosts - 1)
        fd = _try_lock(os.path.join(STATE_DIR, "addr", str(host)))
        if fd is not None:
            return host, fd
    raise OSError(f"no free address in {subnet}")


# --------------------------------------------------------------------------
# locks and references


class _global_lock:
    def __enter__(self) -> int:
        self.fd = os.open(os.path.join(STATE_DIR, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self.fd

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def _try_lock(path: str) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created), or None if a live process holds it.

    The inode is checked after locking: a holder may have unlinked the file in between."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    os.close(fd)
    return None


def _held(directory: str) -> Iterator[str]:
    """The names in ``directory`` whose lock a live process holds; stale files are removed (under the global lock)."""
    path = os.path.join(STATE_DIR, directory)
    for name in os.listdir(path):
        fd = _try_lock(os.path.join(path, name))
        if fd is None:
            yield name
            continue
        try:
            os.unlink(os.path.join(path, name))
        except FileNotFoundError:
            pass
        os.close(fd)


def _in_use() -> bool:
    """Whether a live step or keeper references the bridge (under the global lock)."""
    live = list(_held("addr")) + list(_held("user"))  # both walked to the end: stale files go
    return bool(live)


def _process_key(pid: int) -> str:
    """``PID-STARTTIME``: a process, not a pid that may be reused."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        return f"{pid}-{int(f.read().rsplit(b')', 1)[1].split()[19])}"


def _ensure_keeper(zygote: int) -> bool:
    """Fork the keeper of ``zygote`` unless one lives (under the global lock); whether one was forked."""
    fd = _try_lock(os.path.join(STATE_DIR, "user", _process_key(zygote)))
    if fd is None:
        return False
    try:
        pidfd = os.pidfd_open(zygote)
    except ProcessLookupError:
        os.close(fd)
        return False
    pid = os.fork()
    if pid == 0:
        try:
            _keeper_main(fd, pidfd)
        finally:
            os._exit(0)
    os.close(fd)
    os.close(pidfd)
    return True


def _keeper_main(lock_fd: int, pidfd: int) -> None:
    """Hold a reference until the zygote ends, then remove the bridge if nothing else uses it."""
    devnull = os.open("/dev/null", os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(devnull, target)
    keep = sorted({lock_fd, pidfd})
    # Nothing of the step (its control socket, output pipes, the global lock) stays open here.
    first = 3
    for fd in keep:
        if fd > first:
            os.closerange(first, fd)
        first = fd + 1
    os.closerange(first, 65536)
    os.setsid()
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while True:
        try:
            poller.poll()
            break
        except InterruptedError:
            continue
    with _global_lock():
        os.close(lock_fd)  # our own reference goes first, so _in_use sees only the others
        if not _in_use():
            remove_bridge()


# --------------------------------------------------------------------------
# the bridge and its rules (under the global lock)


def make_bridge() -> None:
    """Create the bridge and its rules for a subnet no route of the host overlaps."""
    subnet = choose_subnet(host_routes())
    with open(os.path.join(STATE_DIR, "subnet"), "w") as f:
        f.write(str(subnet))
    # Docker turns ip_forward on and leaves it; pybuild turns it back off with the bridge, and
    # meanwhile forwards nothing but the bridge's traffic, as the host did not forward before.
    turn_on = _read(_IP_FORWARD) != "1"
    _iptables_restore(rules(subnet, only_the_bridge=turn_on))
    if turn_on:
        with open(os.path.join(STATE_DIR, "forward"), "w") as f:
            f.write("0")
        _write(_IP_FORWARD, "1")
    nl = netlink.Netlink()
    try:
        nl.add_bridge(BRIDGE)
        index = netlink.link_index(BRIDGE)
        if index is None:
            raise OSError(f"the bridge {BRIDGE} vanished")
        _write(f"/proc/sys/net/ipv6/conf/{BRIDGE}/disable_ipv6", "1", missing_ok=True)
        nl.add_address(index, str(subnet[1]), subnet.prefixlen)
        nl.set_up(index)
    finally:
        nl.close()


def remove_bridge() -> None:
    """Remove the bridge and rules, whatever part of them exists; ``ip_forward`` back as it was.

    The ``subnet`` file is written before the rules are made and removed after
    they are gone: without it there are no rules to look for (the common case,
    a clean host: no iptables process is started)."""
    if netlink.link_index(BRIDGE) is not None:
        nl = netlink.Netlink()
        try:
            nl.delete_link(BRIDGE)
        except OSError:
            pass
        finally:
            nl.close()
    subnet = os.path.join(STATE_DIR, "subnet")
    if os.path.exists(subnet):
        _remove_rules()
    forward = os.path.join(STATE_DIR, "forward")
    if os.path.exists(forward):
        _write(_IP_FORWARD, "0")
        os.unlink(forward)
    try:
        os.unlink(subnet)
    except FileNotFoundError:
        pass


def _remove_rules() -> None:
    """All of pybuild's rules in one iptables-restore; rule by rule when only some exist."""
    tables: dict[str, list[str]] = {}
    for table, parent, chain in _chains():
        tables.setdefault(table, []).extend([f"-D {parent} {' '.join(_jump(parent, chain))}", f"-F {chain}", f"-X {chain}"])
    text = "".join(f"*{table}\n" + "\n".join(lines) + "\nCOMMIT\n" for table, lines in tables.items())
    try:
        _iptables_restore(text)
        return
    except OSError:
        pass  # a killed pybuild's partial state
    for table, parent, chain in _chains():
        while _iptables("-t", table, "-D", parent, *_jump(parent, chain)):
            pass
        _iptables("-t", table, "-F", chain)
        _iptables("-t", table, "-X", chain)


def ensure_rules(subnet: ipaddress.IPv4Network) -> None:
    """Make pybuild's rules again unless every one is in place, each jump first in its parent chain
    (under the global lock).  The ``forward`` file says whether the host forwarded nothing before."""
    only_the_bridge = os.path.exists(os.path.join(STATE_DIR, "forward"))
    expected = rules(subnet, only_the_bridge=only_the_bridge)
    if rules_in_place(expected, _iptables_save()):
        return
    _remove_rules()
    _iptables_restore(expected)


def rules_in_place(expected: str, saved: str) -> bool:
    """Whether ``saved`` (iptables-save's output) holds the rules of ``expected`` (``rules()``'s):
    pybuild's chains rule for rule, each jump in its parent chain, INPUT's as its first rule.

    Only INPUT's order keeps the host safe: a rule above the jump must match
    another interface only (``-A INPUT -i lo -j ACCEPT``), or it could accept
    what the bridge brings in.  A rule above the FORWARD or POSTROUTING jump (Docker's
    DOCKER-USER, re-inserted first when dockerd starts) is another tool's say on
    forwarding, not a reason to make the rules again at every build."""
    wanted = _rule_lines(expected)
    present = _rule_lines(saved)
    for table, lines in wanted.items():
        have = present.get(table, [])
        for line in lines:
            if line.startswith("-I "):
                parent, jump = line[3:].split(" 1 ", 1)
                ours = f"-A {parent} {jump}"
                if ours not in have:
                    return False
                if parent == "INPUT":
                    above = [rule for rule in have[: have.index(ours)] if rule.startswith("-A INPUT ")]
                    if not all(_other_interface_only(rule) for rule in above):
                        return False
        for chain in {line.split()[1] for line in lines if line.startswith("-A ")}:
            if [rule for rule in have if rule.split()[1] == chain] != [line for line in lines if line.split()[1] == chain]:
                return False
    return True


def _other_interface_only(rule: str) -> bool:
    """Whether an iptables-save rule matches packets of one input interface, never the bridge's."""
    words = rule.split()
    for at, word in enumerate(words[:-1]):
        if word == "-i" and (at == 0 or words[at - 1] != "!"):
            name = words[at + 1]
            return not (name == BRIDGE or (name.endswith("+") and BRIDGE.startswith(name[:-1])))
    return False


def _rule_lines(text: str) -> dict[str, list[str]]:
    """The ``-A``/``-I`` lines of iptables-restore text, by table."""
    tables: dict[str, list[str]] = {}
    table = ""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(("-A ", "-I ")) and table:
            tables.setdefault(table, []).append(line)
    return tables


def _chains() -> tuple[tuple[str, str, str], ...]:
    """(table, parent chain, pybuild's chain) for each chain pybuild adds."""
    return tuple((table, parent, f"{CHAIN_PREFIX}-{parent}") for table, parent in (("filter", "INPUT"), ("filter", "FORWARD"), ("nat", "POSTROUTING")))


def _jump(parent: str, chain: str) -> tuple[str, ...]:
    match = ("-i", BRIDGE) if parent == "INPUT" else ()
    return (*match, "-j", chain)


def rules(subnet: ipaddress.IPv4Network, only_the_bridge: bool = False) -> str:
    """iptables-restore input (``--noflush``): pybuild's chains, and a jump to each at the top of its parent.

    ``only_the_bridge``: every other forwarded packet is dropped (for a host that forwarded nothing)."""
    net, chain_in, chain_fwd, chain_nat = str(subnet), *(chain for _, _, chain in _chains())
    return "\n".join([
        "*filter",
        f":{chain_in} - [0:0]",
        f":{chain_fwd} - [0:0]",
        # Nothing the bridge brings in reaches the host itself: not its loopback, not its addresses.
        f"-A {chain_in} -i {BRIDGE} -j DROP",
        # Steps do not reach each other (their ports are isolated too), only the world, and only
        # from their own subnet; from outside only the replies of their own connections come in.
        f"-A {chain_fwd} -i {BRIDGE} -o {BRIDGE} -j DROP",
        f"-A {chain_fwd} -s {net} -i {BRIDGE} -j ACCEPT",  # in iptables-save's order: ensure_rules compares
        f"-A {chain_fwd} -i {BRIDGE} -j DROP",
        f"-A {chain_fwd} -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        f"-A {chain_fwd} -o {BRIDGE} -j DROP",
        *([f"-A {chain_fwd} -j DROP"] if only_the_bridge else []),
        f"-I INPUT 1 {' '.join(_jump('INPUT', chain_in))}",
        f"-I FORWARD 1 {' '.join(_jump('FORWARD', chain_fwd))}",
        "COMMIT",
        "*nat",
        f":{chain_nat} - [0:0]",
        f"-A {chain_nat} -s {net} ! -o {BRIDGE} -j MASQUERADE",
        f"-I POSTROUTING 1 {' '.join(_jump('POSTROUTING', chain_nat))}",
        "COMMIT",
    ]) + "\n"


def host_routes() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes (/proc/net/route: little-endian hex destination and mask)."""
    routes = []
    with open("/proc/net/route") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            destination = ipaddress.IPv4Address(bytes(reversed(bytes.fromhex(fields[1]))))
            mask = ipaddress.IPv4Address(bytes(reversed(bytes.fromhex(fields[7]))))
            if int(mask):
                routes.append(ipaddress.IPv4Network(f"{destination}/{mask}", strict=False))
    return routes


def choose_subnet(routes: list[ipaddress.IPv4Network]) -> ipaddress.IPv4Network:
    for candidate in CANDIDATE_SUBNETS:
        subnet = ipaddress.IPv4Network(candidate)
        if not any(subnet.overlaps(route) for route in routes):
            return subnet
    raise OSError("every subnet pybuild may use for its bridge overlaps a route of the host")


def _read_subnet() -> ipaddress.IPv4Network:
    with open(os.path.join(STATE_DIR, "subnet")) as f:
        return ipaddress.IPv4Network(f.read().strip())


def _iptables(*args: str) -> bool:
    import subprocess  # only when the bridge is made or removed: the zygote starts without it

    try:
        done = subprocess.run(["iptables", "-w", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False  # no iptables: nothing of pybuild's can be in it either
    return done.returncode == 0


def _iptables_save() -> str:
    import subprocess

    done = subprocess.run(["iptables-save"], stdin=subprocess.DEVNULL, capture_output=True)
    if done.returncode != 0:
        raise OSError(f"iptables-save: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode(errors="replace")


def _iptables_restore(text: str) -> None:
    import subprocess

    done = subprocess.run(["iptables-restore", "-w", "--noflush"], input=text.encode(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        raise OSError(f"iptables-restore: {done.stderr.decode(errors='replace').strip()}")


def _read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def _write(path: str, value: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise

