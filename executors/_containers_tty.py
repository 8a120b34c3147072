"""Terminals and byte relays for containers: raw mode, window sizes, a poll-driven copier.

``run -it`` and ``exec -it`` give the container a pseudo-terminal and copy
bytes between it and pybuild's own terminal, which is put in raw mode so
that keys (Ctrl-C included) reach the container's line discipline
unchanged.  The same ``Relay`` copies a container's output into its log
and to an attached client.

Stdlib only (the supervisor imports it, see ``_containers_shim``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import termios
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

_CHUNK = 65536


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put the terminal on ``fd`` in raw mode for the block (no-op if it is not a terminal)."""
    try:
        saved = termios.tcgetattr(fd)
    except (termios.error, OSError):
        yield
        return
    tty.setraw(fd, termios.TCSANOW)
    try:
        yield
    finally:
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on ``fd``; None if it is not a terminal."""
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None
    rows, columns, _, _ = struct.unpack("HHHH", packed)
    return (rows, columns) if rows and columns else None


def set_window_size(fd: int, size: tuple[int, int] | None) -> None:
    """Give the pty on ``fd`` (either side) a size; its foreground process group gets SIGWINCH."""
    if size is None:
        return
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))


def make_controlling_terminal(fd: int) -> None:
    """Make the terminal on ``fd`` the calling session leader's controlling terminal."""
    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])


def read_some(fd: int) -> bytes | None:
    """Up to 64 KiB; ``b""`` at the end (a pty master reads EIO once the last
    slave is closed); None when a non-blocking descriptor has nothing yet."""
    try:
        return os.read(fd, _CHUNK)
    except BlockingIOError:
        return None
    except OSError as e:
        if e.errno in (errno.EIO, errno.ECONNRESET):
            return b""
        raise


@dataclass
class _Copy:
    source: int
    sinks: list[Callable[[bytes], None]]
    on_end: Callable[[], None] | None


@dataclass
class _Feed:
    """Bytes from ``source`` to a non-blocking ``target``, buffered so neither side stalls the loop."""

    source: int
    target: int
    on_end: Callable[[], None] | None
    pending: bytearray = field(default_factory=bytearray)
    source_open: bool = True


class Relay:
    """Copies bytes between descriptors from a poll loop owned by the caller.

    ``copy(source, sinks)`` hands everything read from ``source`` to each
    sink (a callable); ``feed(source, target)`` writes it to ``target``
    without blocking (the terminal input of a container that is not
    reading).  ``poll_entries()`` says what to poll for and ``handle(fd,
    events)`` acts on one ready descriptor; a route ends at end of file
    and calls its ``on_end``.  The relay never closes descriptors: their
    owners do.
    """

    def __init__(self) -> None:
        self._copies: dict[int, _Copy] = {}
        self._feeds: dict[int, _Feed] = {}

    def copy(self, source: int, sinks: list[Callable[[bytes], None]], on_end: Callable[[], None] | None = None) -> None:
        self._copies[source] = _Copy(source, sinks, on_end)

    def feed(self, source: int, target: int, on_end: Callable[[], None] | None = None) -> None:
        os.set_blocking(target, False)
        self._feeds[source] = _Feed(source, target, on_end)

    def drop(self, fd: int) -> None:
        """Stop every route reading from ``fd`` (without calling ``on_end``)."""
        self._copies.pop(fd, None)
        self._feeds.pop(fd, None)

    @property
    def active(self) -> bool:
        return bool(self._copies) or any(f.source_open or f.pending for f in self._feeds.values())

    def sources(self) -> list[int]:
        return list(self._copies) + [f.source for f in self._feeds.values() if f.source_open]

    def poll_entries(self) -> list[tuple[int, int]]:
        entries = [(fd, select.POLLIN) for fd in self._copies]
        for feed in self._feeds.values():
            if feed.pending:
                entries.append((feed.target, select.POLLOUT))
            elif feed.source_open:
                entries.append((feed.source, select.POLLIN))
        return entries

    def handle(self, fd: int, events: int) -> bool:
        """Act on a ready descriptor; False if the relay does not know it."""
        handled = False
        route = self._copies.get(fd)
        if route is not None:
            handled = True
            data = read_some(fd)
            if data is None:
                pass
            elif not data:
                del self._copies[fd]
                if route.on_end is not None:
                    route.on_end()
            else:
                for sink in list(route.sinks):
                    sink(data)
        for feed in list(self._feeds.values()):
            if fd == feed.target and events & (select.POLLOUT | select.POLLERR | select.POLLHUP):
                handled = True
                self._flush(feed)
            elif fd == feed.source and feed.source_open and not feed.pending:
                handled = True
                data = read_some(fd)
                if data is None:
                    continue
                if not data:
                    feed.source_open = False
                    self._feeds.pop(feed.source, None)
                    if feed.on_end is not None:
                        feed.on_end()
                    continue
                feed.pending += data
                self._flush(feed)
        return handled

    def _flush(self, feed: _Feed) -> None:
        try:
            while feed.pending:
                written = os.write(feed.target, feed.pending)
                del feed.pending[:written]
        except BlockingIOError:
            return
        except OSError:
            feed.pending.clear()  # the container's side is gone: nothing will read it
            feed.source_open = False
            self._feeds.pop(feed.source, None)
