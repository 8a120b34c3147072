"""Where the remote executor is and how to talk to it: ``grpc://`` (plain) or ``grpcs://`` (TLS).

Header values (tokens) never show in a repr, an error or a log: only their names do.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from pybuild.errors import UsageError

from ._errors import never_shown

_SCHEMES = {"grpc": False, "http": False, "grpcs": True, "https": True}  # scheme -> TLS
_HEADER_NAME = re.compile(r"[0-9a-z_.-]+")  # gRPC metadata keys (lowercase ASCII)
_RESERVED_HEADERS = {"content-type", "te", "user-agent", "host", "grpc-timeout"}
_HOST = re.compile(r"[0-9a-z._-]+|[0-9a-f:.]+")  # a DNS name or an IPv4/IPv6 address (urlsplit lowercases it)


@dataclass(frozen=True)
class Endpoint:
    """A REAPI server: ``url`` as given, ``target`` as gRPC dials it (``host:port``)."""

    url: str
    target: str
    tls: bool
    instance: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @property
    def header_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.headers)


def parse_header(value: str, *, flag: str = "--remote-header") -> tuple[str, str]:
    """``NAME=VALUE`` as a gRPC metadata pair (the name lowercased, as HTTP/2 requires)."""
    name, sep, content = value.partition("=")
    name = name.strip().lower()
    if not sep or not _HEADER_NAME.fullmatch(name) or name.startswith("grpc-") or name in _RESERVED_HEADERS:
        # never quote the value: "authorization: Bearer T" (a colon for the =) is all token
        shown = f" (got {name!r})" if sep and _HEADER_NAME.fullmatch(name) else ""
        raise UsageError(f"{flag}: expected NAME=VALUE with a header name of a-z, 0-9, '-', '_', '.', not reserved{shown}")
    if name.endswith("-bin") or any(ord(c) < 0x20 or ord(c) > 0x7E for c in content):
        raise UsageError(f"{flag} {name}: the value must be printable ASCII")
    never_shown(content)  # a server echoing it back in an error does not print it
    return name, content


def parse_endpoint(
    url: str,
    *,
    instance: str = "",
    headers: Iterable[str] = (),
    ca_cert: str | Path | None = None,
    client_cert: str | Path | None = None,
    client_key: str | Path | None = None,
    flag: str = "--remote-executor",
) -> Endpoint:
    """Read a ``grpc://HOST:PORT`` or ``grpcs://HOST[:PORT]`` URL and its options.

    A mistake is one ``UsageError`` naming ``flag``. TLS files must exist; a client certificate
    comes with its key.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced [ in the host
        raise UsageError(f"{flag} {shown_url(url)}: expected grpc://HOST:PORT or grpcs://HOST[:PORT]") from None
    shown = shown_url(url)
    if not url.isprintable() or " " in url:  # urlsplit drops tabs and newlines: the url shown would keep them
        raise UsageError(f"{flag} {shown}: the URL holds a space or a control character")
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        raise UsageError(f"{flag} {shown}: expected grpc://HOST:PORT or grpcs://HOST[:PORT]")
    tls = _SCHEMES[scheme]
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"{flag} {shown}: the port is not a number from 1 to 65535") from None
    host = parts.hostname
    if not host or parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
        raise UsageError(f"{flag} {shown}: expected grpc://HOST:PORT or grpcs://HOST[:PORT] (no path, user or query)",
                         hint="a token goes in --remote-header NAME=VALUE")
    if not _HOST.fullmatch(host):
        raise UsageError(f"{flag} {shown}: the host is not a name or an address")
    if port is None:
        if not tls:
            raise UsageError(f"{flag} {shown}: a port is needed (grpc://HOST:PORT)")
        port = 443
    if port == 0:
        raise UsageError(f"{flag} {shown}: the port is not a number from 1 to 65535")
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    files = {name: _tls_file(flag, name, value) for name, value in
             (("ca-cert", ca_cert), ("client-cert", client_cert), ("client-key", client_key))}
    if not tls and any(files.values()):
        raise UsageError(f"{flag} {url}: TLS certificates need a grpcs:// URL")
    if (files["client-cert"] is None) != (files["client-key"] is None):
        raise UsageError(f"{flag}: a client certificate needs its key, and a key its certificate")
    return Endpoint(
        url=url,
        target=target,
        tls=tls,
        instance=instance.strip("/"),
        headers=tuple(parse_header(h) for h in headers),
        ca_cert=files["ca-cert"],
        client_cert=files["client-cert"],
        client_key=files["client-key"],
    )


def shown_url(url: str) -> str:
    """``url`` fit for an error: its scheme, host and port, never a user, password, path,
    query or fragment (where a mistaken token would be), unprintable characters escaped."""
    scheme, sep, rest = url.partition("://")
    if sep:
        authority = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        _, at, host = authority.rpartition("@")
        url = f"{scheme}://{'…@' if at else ''}{host}{'…' if len(authority) < len(rest.rstrip('/')) else ''}"
    else:
        url = url.split("?", 1)[0].split("#", 1)[0]
    if not url.isprintable():
        url = url.encode("unicode_escape", "backslashreplace").decode("ascii")
    return url[:200]


def _tls_file(flag: str, name: str, value: str | Path | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_file():
        raise UsageError(f"{flag}: the TLS {name} file {path} does not exist")
    return path
