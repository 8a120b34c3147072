"""``pybuild logs [-f] [-t] [--tail N] CONTAINER``: what the container wrote, as ``docker logs``.

Its stdout goes to stdout and its stderr to stderr (a container with a tty
has only stdout).  ``-f`` keeps following until the container ends;
``-t`` prefixes each line with the time it was written (RFC 3339, in
nanoseconds, UTC); ``--tail N`` starts N lines from the end.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from typing import TYPE_CHECKING

from pybuild.errors import UsageError
from pybuild.executors import ContainerStore

from ._runtime import open_root

if TYPE_CHECKING:
    from pybuild.executors import Frame

_FOLLOW_INTERVAL = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER", help="name, ID or ID prefix")
    parser.add_argument("-f", "--follow", action="store_true", help="follow the output until the container ends")
    parser.add_argument("-t", "--timestamps", action="store_true", help="show timestamps")
    parser.add_argument("-n", "--tail", default="all", help="lines to show from the end (default: all)")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import ContainerRuntime

    tail = _tail(args.tail)
    record = ContainerStore(open_root(args.root)).get(args.container)
    directory = str(record.directory)
    frames, offset = ContainerRuntime.log_frames(directory)
    if tail is not None or args.timestamps:
        frames = _lines(frames)
        if tail is not None:
            frames = frames[len(frames) - tail :] if tail else []
    _write(frames, args.timestamps)
    while args.follow:
        ended = not ContainerRuntime.status(directory).supervised
        frames, offset = ContainerRuntime.log_frames(directory, offset)
        _write(_lines(frames) if args.timestamps else frames, args.timestamps)
        if ended:
            break  # read once more after the end: nothing is written after the supervisor exits
        time.sleep(_FOLLOW_INTERVAL)
    return 0


def _tail(text: str) -> int | None:
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"invalid --tail value {text!r}", hint="a number of lines, or all") from None
    return None if value < 0 else value


def _lines(frames: list[Frame]) -> list[Frame]:
    from pybuild.executors import iter_lines

    return list(iter_lines(frames))


def _write(frames: list[Frame], timestamps: bool) -> None:
    for frame in frames:
        stream = sys.stdout.buffer if frame.stream == 1 else sys.stderr.buffer
        if timestamps:
            stream.write(_timestamp(frame.time_ns).encode() + b" ")
        stream.write(frame.data)
        stream.flush()


def _timestamp(time_ns: int) -> str:
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanoseconds:09d}Z"
