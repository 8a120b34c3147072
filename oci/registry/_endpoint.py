"""Where a registry's API is served: host names and the HTTP-or-HTTPS rule.

References name a registry as users write it (``docker.io``,
``127.0.0.1:5000``); the API of ``docker.io`` is served by
``registry-1.docker.io``.  Like Docker, pybuild talks plain HTTP only to
loopback hosts (``localhost``, ``127.0.0.0/8``, ``::1``) and to registries the
user named with ``--insecure-registry``; everything else is HTTPS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"


@dataclass(frozen=True)
class Endpoint:
    """A registry as named in references, and the origin its API is served from."""

    registry: str
    scheme: str
    host: str

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    def url(self, path: str) -> str:
        return self.origin + path

    def serves(self, url: str) -> bool:
        """Does ``url`` belong to this registry's origin (scheme, host and port)?

        Credentials and tokens for the registry are attached only to such URLs,
        so a redirect to a storage host never carries them.
        """
        return origin_of(url) == origin_of(self.origin)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(parts.scheme)
    port = parts.port
    netloc = host if port is None or port == default else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}"


def split_host_port(host: str) -> tuple[str, int | None]:
    """``"[::1]:5000"`` -> ``("::1", 5000)``; ``"example.com"`` -> ``("example.com", None)``."""
    if host.startswith("["):
        address, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return address.lower(), int(port) if port.isdigit() else None
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name.lower(), int(port)
    return host.lower(), None


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def allows_plain_http(host: str, insecure_registries: Iterable[str] = ()) -> bool:
    """May pybuild speak plain HTTP to ``host`` (``name[:port]``)?

    True for loopback hosts and for hosts listed in ``insecure_registries``,
    whose entries are ``name``, ``name:port`` or a CIDR such as ``10.0.0.0/8``.
    """
    hostname, _port = split_host_port(host)
    if _is_loopback(hostname):
        return True
    for entry in insecure_registries:
        entry = entry.strip().lower().removeprefix("http://").removeprefix("https://").rstrip("/")
        if not entry:
            continue
        if "/" in entry:
            try:
                network = ipaddress.ip_network(entry, strict=False)
                if ipaddress.ip_address(hostname) in network:
                    return True
            except ValueError:
                pass
            continue
        if entry == host.lower() or entry == hostname:
            return True
    return False


def endpoint_for(registry: str, insecure_registries: Iterable[str] = ()) -> Endpoint:
    """The API endpoint of a registry named as in a reference."""
    host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
    scheme = "http" if allows_plain_http(host, insecure_registries) or allows_plain_http(registry, insecure_registries) else "https"
    return Endpoint(registry=registry, scheme=scheme, host=host)
