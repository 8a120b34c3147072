"""The container's output log: what ``pybuild logs`` replays.

A sequence of frames, each a 16-byte header -- stream (1 = stdout,
2 = stderr, as in Docker's attach protocol), three zero bytes, the payload
length (big-endian u32) and the time it was read in nanoseconds since the
epoch (big-endian i64) -- followed by the payload.  The supervisor appends
one frame per read with a single ``write`` to an ``O_APPEND`` file, so a
reader sees whole frames or a partial last one, which it leaves for the
next read (``logs -f`` polls the file).

Stdlib only (the supervisor imports it, see ``_containers_shim``).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

STDOUT = 1
STDERR = 2

_HEADER = struct.Struct("!B3xIq")
_MAX_FRAME = 1 << 20


@dataclass(frozen=True)
class Frame:
    stream: int
    time_ns: int
    data: bytes


def encode_frame(stream: int, data: bytes, time_ns: int | None = None) -> bytes:
    return _HEADER.pack(stream, len(data), time.time_ns() if time_ns is None else time_ns) + data


class LogWriter:
    """Appends frames to a log file (one write per frame)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, stream: int, data: bytes) -> None:
        for start in range(0, len(data), _MAX_FRAME):
            frame = encode_frame(stream, data[start : start + _MAX_FRAME])
            view = memoryview(frame)
            while view:
                view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_frames(path: str, offset: int = 0) -> tuple[list[Frame], int]:
    """Whole frames from ``offset`` on, and the offset after the last whole one."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    frames = []
    position = 0
    while len(data) - position >= _HEADER.size:
        stream, length, time_ns = _HEADER.unpack_from(data, position)
        end = position + _HEADER.size + length
        if end > len(data):
            break
        frames.append(Frame(stream, time_ns, data[position + _HEADER.size : end]))
        position = end
    return frames, offset + position


def iter_lines(frames: list[Frame]) -> Iterator[Frame]:
    """The frames split at newlines (each line keeps its ``\\n``), for ``--tail`` and ``-t``.

    A line written in several reads stays in pieces: like Docker's json-file
    log, a piece without a newline is its own entry.
    """
    for frame in frames:
        start = 0
        data = frame.data
        while start < len(data):
            end = data.find(b"\n", start)
            end = len(data) if end < 0 else end + 1
            yield Frame(frame.stream, frame.time_ns, data[start:end])
            start = end
