"""The fork server's messages: one JSON object per SOCK_SEQPACKET datagram.

A datagram is a whole message or nothing (the kernel keeps the boundaries and
carries the client's descriptors with its first one), so neither side needs
framing, and a message too big for the receiver's buffer arrives truncated
(MSG_TRUNC), which is refused rather than parsed.  Light stdlib only: the client
side runs before a build has imported anything.
"""

from __future__ import annotations

import json
import os
import socket

TYPE_CHECKING = False  # typing is not imported by the client
if TYPE_CHECKING:
    from typing import Any

# The request carries argv and the environment; a bigger one is refused (the client then
# builds in-process) rather than read without bound.
MAX_REQUEST = 1 << 20
MAX_REPLY = 1 << 12
PASSED_FDS = 4  # stdin, stdout, stderr, an O_PATH descriptor of the working directory
SOCKET_NAME = "sock"
LOCK_NAME = "lock"
PID_NAME = "pid"
LOG_NAME = "log"
DIRECTORY_NAME = "server"


class Malformed(Exception):
    """A message that is not one of this protocol's (the reason is the message)."""


def encode(message: dict[str, Any]) -> bytes:
    # ensure_ascii keeps argv's and the environment's undecodable bytes (surrogateescape'd) intact
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def decode(data: bytes) -> dict[str, Any]:
    try:
        message = json.loads(data)
    except (ValueError, RecursionError) as error:
        raise Malformed(f"not JSON: {type(error).__name__}") from None
    if not isinstance(message, dict):
        raise Malformed("not a JSON object")
    return message


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(encode(message))


def receive(sock: socket.socket, limit: int = MAX_REPLY) -> dict[str, Any] | None:
    """The next message, or None when the peer closed its end."""
    data, _, flags, _ = sock.recvmsg(limit)
    if not data:
        return None
    if flags & socket.MSG_TRUNC:
        raise Malformed("message too long")
    return decode(data)


def receive_with_fds(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The request and the descriptors that came with it; Malformed (every descriptor
    received closed) for anything else."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_REQUEST, PASSED_FDS + 1)
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise Malformed("request too long, or too many descriptors")
        if not data:
            raise Malformed("empty request")
        if len(fds) != PASSED_FDS:
            raise Malformed(f"{len(fds)} descriptors instead of {PASSED_FDS}")
        return decode(data), fds
    except Malformed:
        for fd in fds:
            os.close(fd)
        raise
