"""Contents of the sandbox's /etc/hosts, /etc/resolv.conf and /etc/hostname.

They are bind-mounted read-only from a tmpfs outside the layer, as BuildKit
does, so they never become part of a step's change.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

import ipaddress

TYPE_CHECKING = False  # not typing's: the zygote and the shim do not import typing
if TYPE_CHECKING:
    from collections.abc import Iterable

# slirp4netns's built-in DNS forwarder (with --configure, 10.0.2.0/24).
SLIRP_DNS = "10.0.2.3"
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")


class BadExtraHost(ValueError):
    pass


def parse_extra_host(entry: str) -> tuple[str, str]:
    """``name:ip`` or ``name=ip`` (an IPv6 address may follow the first ``:``)."""
    separator = "=" if "=" in entry else ":"
    name, found, address = entry.partition(separator)
    name, address = name.strip(), address.strip().strip("[]")
    if not found or not name or any(c.isspace() for c in name):
        raise BadExtraHost(f"invalid extra host {entry!r}: expected name:ip")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise BadExtraHost(f"invalid extra host {entry!r}: {address!r} is not an IP address") from None
    return name, address


def hosts_file(hostname: str, extra_hosts: tuple[str, ...] = ()) -> bytes:
    lines = [
        f"127.0.0.1\tlocalhost {hostname}".rstrip(),
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    for entry in extra_hosts:
        name, address = parse_extra_host(entry)
        lines.append(f"{address}\t{name}")
    return ("\n".join(lines) + "\n").encode()


def hostname_file(hostname: str) -> bytes:
    return f"{hostname}\n".encode()


def resolv_conf(host_text: str, network: str, bridged: list[str] | None = None) -> bytes:
    """The sandbox's resolv.conf for a network mode, from the host's file.

    ``host`` keeps the host's file as it is (the host's loopback resolver is
    reachable).  ``default`` keeps search and options lines and points at
    slirp4netns's forwarder.  ``none`` keeps the host's file unless it only
    names loopback resolvers, which mean nothing in a private namespace.
    ``default`` through pybuild's bridge points at ``bridged``, the host's
    resolvers the bridge can reach (the caller checked there is one).
    """
    if network == "host":
        return host_text.encode() if host_text.strip() else _nameservers(FALLBACK_NAMESERVERS)
    kept = []
    nameservers = []
    for line in host_text.splitlines():
        words = line.split()
        if words and words[0] == "nameserver":
            if len(words) > 1 and not _is_loopback(words[1]):
                nameservers.append(words[1])
            continue
        kept.append(line)
    if network == "default":
        nameservers = list(bridged) if bridged else [SLIRP_DNS]
    elif not nameservers:
        nameservers = list(FALLBACK_NAMESERVERS)
    text = "\n".join(line for line in kept if line.strip())
    return ((text + "\n") if text else "").encode() + _nameservers(nameservers)


def nameservers(host_text: str) -> list[str]:
    """The nameserver addresses of a resolv.conf that are not loopback, in order."""
    found = []
    for line in host_text.splitlines():
        words = line.split()
        if len(words) > 1 and words[0] == "nameserver" and not _is_loopback(words[1]):
            found.append(words[1])
    return found


def _nameservers(addresses: Iterable[str]) -> bytes:
    return "".join(f"nameserver {a}\n" for a in addresses).encode()


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False
