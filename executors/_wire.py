"""Length-prefixed pickled messages between pybuild and its sandbox helpers.

Only builtin types cross this wire (dicts, tuples, strings, bytes, ints), so
the zygote never needs pybuild on its import path.  Both ends are pybuild's
own processes; nothing from a Dockerfile or an image is ever unpickled.

Stdlib only (imported by the zygote, see ``_zygote.py``).
"""

from __future__ import annotations

import os
import pickle
import struct

TYPE_CHECKING = False  # not typing's: the zygote does not import typing
if TYPE_CHECKING:
    from typing import Any

    # What the other end pickled: its shape is the protocol between the two ends
    # (see ``_executor`` and ``_sandbox``), which the type checker cannot follow.
    Message = Any

_HEADER = struct.Struct("!I")
MAX_MESSAGE = 1 << 30


def encode(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class Decoder:
    """Incremental decoder: feed bytes, get whole messages back."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self._buffer)
            if size > MAX_MESSAGE:
                raise ValueError("sandbox message too large")
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            messages.append(pickle.loads(bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return messages

    @property
    def pending(self) -> bool:
        return bool(self._buffer)


def write_message(fd: int, message: object) -> None:
    """Write one message to a blocking fd (pipe or socket), all of it."""
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


def read_message(fd: int) -> Message | None:
    """Read one message from a blocking fd; None at end of file."""
    header = _read_exactly(fd, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_MESSAGE:
        raise ValueError("sandbox message too large")
    body = _read_exactly(fd, size)
    if body is None:
        raise EOFError("truncated sandbox message")
    return pickle.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise EOFError("truncated sandbox message")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
