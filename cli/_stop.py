"""``pybuild stop [-t SECONDS] CONTAINER...``: stop containers, as ``docker stop``.

The image's STOPSIGNAL (SIGTERM if none) goes to the container's pid 1;
after ``-t`` seconds (default 10) the container is killed.  Everything is
then gone: processes, mounts, cgroups, slirp4netns.  Each container is
printed as it was named once stopped; one that is not running is fine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import signal
import sys

from pybuild.errors import PybuildError, UsageError
from pybuild.executors import ContainerStore

from ._runtime import open_root

DEFAULT_TIMEOUT = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("containers", nargs="+", metavar="CONTAINER", help="name, ID or ID prefix")
    parser.add_argument("-t", "--time", type=int, default=DEFAULT_TIMEOUT, help="seconds to wait before killing it (default 10)")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import ContainerRuntime

    if args.time < 0:
        raise UsageError("the timeout cannot be negative", hint="-t 0 kills at once")
    containers = ContainerStore(open_root(args.root))
    runtime = ContainerRuntime()

    def stop(name: str) -> PybuildError | None:
        try:
            record = containers.get(name)
            runtime.stop(str(record.directory), timeout=args.time, stop_signal=stop_signal(record.config.get("StopSignal")))
        except PybuildError as error:
            return error
        return None

    # Containers stop side by side, as with docker: each may take its whole grace period.
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(len(args.containers), 16)) as pool:
        outcomes = list(pool.map(stop, args.containers))
    for name, error in zip(args.containers, outcomes, strict=True):
        if error is None:
            print(name)
        else:
            print(error.render(), file=sys.stderr)
    return 1 if any(outcomes) else 0


def stop_signal(value: object) -> int:
    """An image's STOPSIGNAL (``SIGQUIT``, ``QUIT``, ``3``) as a number; SIGTERM if unset or unknown."""
    if value is None or value == "":
        return signal.SIGTERM
    text = str(value).upper()
    if text.isdigit():
        return int(text)
    try:
        return int(signal.Signals[text if text.startswith("SIG") else "SIG" + text])
    except KeyError:
        return signal.SIGTERM
