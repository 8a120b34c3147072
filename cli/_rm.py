"""``pybuild rm [-f] CONTAINER...``: remove containers, as ``docker rm``.

A running container is refused unless ``-f``, which kills it first.
Removal takes the container's layer, log and state; its image stays.
Each container is printed as it was named once removed.
"""

from __future__ import annotations

import argparse
import sys

from pybuild.errors import PybuildError
from pybuild.executors import ContainerStore

from ._runtime import open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("containers", nargs="+", metavar="CONTAINER", help="name, ID or ID prefix")
    parser.add_argument("-f", "--force", action="store_true", help="kill a running container first")
    parser.add_argument("-v", "--volumes", action="store_true", help="accepted for docker compatibility (pybuild has no volumes)")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import ContainerRuntime

    containers = ContainerStore(open_root(args.root))
    runtime = ContainerRuntime()
    failed = False
    for name in args.containers:
        try:
            record = containers.get(name)
            directory = str(record.directory)
            if runtime.status(directory).supervised:
                if not args.force:
                    raise PybuildError(
                        f"you cannot remove a running container {record.id}",
                        hint="stop the container before removing it, or use rm -f",
                    )
                runtime.kill(directory)
            runtime.release(directory, record.cgroup_name)  # cgroups of a container whose supervisor was killed
            containers.remove(record)
        except PybuildError as error:
            print(error.render(), file=sys.stderr)
            failed = True
            continue
        print(name)
    return 1 if failed else 0
