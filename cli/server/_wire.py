"""The fork server's messages, one per SOCK_SEQPACKET datagram.

A datagram is a whole message or nothing (the kernel keeps the boundaries and
carries the client's descriptors with its first one), so neither side needs
framing, and a message too big for the receiver's buffer arrives truncated
(MSG_TRUNC), which is refused rather than parsed.  The client side imports only
what the interpreter has loaded at start-up (``_socket`` rather than ``socket``
and its ``selectors``, no ``json``): a served build pays for nothing else.

The request is ``MAGIC``, the umask and whether stdout is unbuffered, then four
length-prefixed sections of NUL-separated bytes: argv, the environment
(``NAME=VALUE``, as ``os.environb`` holds it), ``sys.path`` and the Python
fingerprint (``_identity``).  Every other message is a kind, a number and, for a
refusal, its reason.
"""

from __future__ import annotations

import os
import struct

MAX_REQUEST = 1 << 20  # a bigger request is refused (the client builds in-process), never read unbounded
MAX_MESSAGE = 1 << 12
PASSED_FDS = 4  # stdin, stdout, stderr, an O_PATH descriptor of the working directory
SOCKET_NAME = "sock"
LOCK_NAME = "lock"
PID_NAME = "pid"
LOG_NAME = "log"
DIRECTORY_NAME = "server"

MAGIC = b"pybuild-server/1\0"
_HEAD = struct.Struct("!HB")  # umask, unbuffered stdout
_LENGTH = struct.Struct("!I")
SECTIONS = 4
# message kinds: server -> client, then client -> server
ACCEPTED, REFUSED, CHILD, STATUS = 1, 2, 3, 4
GO, SIGNAL = 5, 6
_MESSAGE = struct.Struct("!Bi")


class Malformed(Exception):
    """A message that is not one of this protocol's (the reason is the message)."""


class Request:
    """A request as sent: every field bytes, checked by the server before use."""

    def __init__(self, umask: int, unbuffered: bool, argv: list[bytes], env: list[bytes], path: list[bytes], fingerprint: bytes) -> None:
        self.umask = umask
        self.unbuffered = unbuffered
        self.argv = argv
        self.env = env
        self.path = path
        self.fingerprint = fingerprint

    def encode(self) -> bytes:
        sections = [b"\0".join(self.argv), b"\0".join(self.env), b"\0".join(self.path), self.fingerprint]
        parts = [MAGIC, _HEAD.pack(self.umask, self.unbuffered)]
        for section in sections:
            parts += [_LENGTH.pack(len(section)), section]
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Request:
        if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEAD.size:
            raise Malformed("not a request of this protocol")
        umask, unbuffered = _HEAD.unpack_from(data, len(MAGIC))
        offset = len(MAGIC) + _HEAD.size
        sections = []
        for _ in range(SECTIONS):
            if offset + _LENGTH.size > len(data):
                raise Malformed("truncated request")
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            if offset + length > len(data):
                raise Malformed("a section longer than the request")
            sections.append(data[offset : offset + length])
            offset += length
        if offset != len(data):
            raise Malformed("bytes after the last section")
        argv, env, path, fingerprint = sections
        return cls(umask, bool(unbuffered), _words(argv), _words(env), _words(path), fingerprint)


def _words(section: bytes) -> list[bytes]:
    return section.split(b"\0") if section else []


def message(kind: int, value: int = 0, reason: str = "") -> bytes:
    return _MESSAGE.pack(kind, value) + reason.encode("utf-8", "backslashreplace")


def parse_message(data: bytes) -> tuple[int, int, str]:
    """(kind, value, reason) of a message."""
    if len(data) < _MESSAGE.size:
        raise Malformed("truncated message")
    kind, value = _MESSAGE.unpack_from(data)
    return kind, value, data[_MESSAGE.size :].decode("utf-8", "replace")


def close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
