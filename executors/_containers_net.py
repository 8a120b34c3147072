"""Published ports (``run -p``): host ports forwarded by slirp4netns into the container.

slirp4netns already carries the container's default network; started with
``--api-socket`` it takes ``add_hostfwd`` requests (one JSON object per
connection) and listens on the host address and port itself, forwarding
each connection to the container's address (10.0.2.100) and port.

The RUN sandbox starts slirp4netns with fixed arguments, so a container
that publishes ports names a small wrapper as its slirp4netns binary,
adding ``--api-socket`` with a path relative to the container's directory
(the supervisor's working directory, inherited by slirp4netns): a socket
path must fit in 108 bytes, and the pybuild root can be deep.

Stdlib only (the supervisor imports it, see ``_containers_shim``).
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import time

TYPE_CHECKING = False  # not typing's: the zygote and the shim do not import typing
if TYPE_CHECKING:
    from typing import Any

if __package__:
    from . import _linux as linux
else:  # loaded by the supervisor as a top-level module
    import _linux as linux

API_SOCKET = "slirp.sock"
WRAPPER = "slirp4netns"
_CONNECT_ATTEMPTS = 200


class PortError(Exception):
    """A port could not be published; the message is for the user."""


def write_wrapper(directory: str, binary: str) -> str:
    """Write the slirp4netns wrapper into ``directory``; returns its path."""
    path = os.path.join(directory, WRAPPER)
    text = f"#!/bin/sh\nexec {shlex.quote(binary)} --api-socket={API_SOCKET} \"$@\"\n"
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o700)
    return path


def add_forward(directory_fd: int, host_ip: str, host_port: int, container_port: int, protocol: str) -> None:
    """Ask slirp4netns to forward ``host_ip:host_port`` to the container's ``container_port``."""
    request = {
        "execute": "add_hostfwd",
        "arguments": {"proto": protocol, "host_addr": host_ip, "host_port": host_port, "guest_port": container_port},
    }
    reply = _call(directory_fd, request)
    if "error" in reply:
        first_free = unprivileged_port_start()
        if host_port < first_free and linux.in_user_namespace():
            # slirp4netns binds in the host's network namespace, as the user: below this sysctl
            # only the host's root may (rootlesskit's docs give the same sysctl)
            reason = f"a rootless pybuild may bind host ports from {first_free} up (net.ipv4.ip_unprivileged_port_start)"
        else:
            reason = "the port is already allocated or cannot be bound"
        raise PortError(f"cannot publish {host_ip}:{host_port}->{container_port}/{protocol}: {reason}")


def unprivileged_port_start() -> int:
    """The lowest port an unprivileged process may bind on the host (the kernel's default is 1024)."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1024


def _call(directory_fd: int, request: dict[str, Any]) -> dict[str, Any]:  # Any: slirp4netns's JSON API
    # /proc/self/fd/N/... keeps the socket path short whatever the directory's length.
    path = f"/proc/self/fd/{directory_fd}/{API_SOCKET}"
    for _ in range(_CONNECT_ATTEMPTS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            time.sleep(0.01)  # slirp4netns is ready before its API socket listens, now and then
            continue
        with sock:
            sock.settimeout(10)
            sock.sendall(json.dumps(request).encode())
            sock.shutdown(socket.SHUT_WR)
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        try:
            reply = json.loads(data or b"{}")
        except ValueError:
            raise PortError(f"slirp4netns gave an unreadable answer: {data[:200]!r}") from None
        return reply if isinstance(reply, dict) else {"error": reply}
    raise PortError("cannot reach slirp4netns's API socket")
