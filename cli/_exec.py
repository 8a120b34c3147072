"""``pybuild exec [-it] [-d] CONTAINER COMMAND...``: run a command in a running container.

The command enters the container's namespaces and cgroups and runs with
its environment (plus ``-e``), user (``-u``) and working directory
(``-w``), as ``docker exec`` does; pybuild exits with its exit code.
"""

from __future__ import annotations

import argparse
import os

from pybuild.errors import PybuildError, UsageError
from pybuild.executors import ContainerStore, process_env

from ._containers import env_entries
from ._runtime import open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER", help="name, ID or ID prefix")
    parser.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="the command and its arguments")
    parser.add_argument("-d", "--detach", action="store_true", help="leave the command running in the background")
    parser.add_argument("-i", "--interactive", action="store_true", help="keep stdin open for the command")
    parser.add_argument("-t", "--tty", action="store_true", help="give the command a pseudo-terminal")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="K=V", help="set an environment variable")
    parser.add_argument("-u", "--user", help="USER[:GROUP] to run as (default: the container's)")
    parser.add_argument("-w", "--workdir", help="working directory (default: the container's)")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import ContainerRuntime, ProcessSpec

    if not args.command:
        raise UsageError("exec needs a command", hint="pybuild exec CONTAINER COMMAND [ARG...]")
    if args.workdir is not None and not args.workdir.startswith("/"):
        raise UsageError(f"the working directory {args.workdir!r} is invalid, it needs to be an absolute path", hint="-w /path")
    record = ContainerStore(open_root(args.root)).get(args.container)
    config = record.config
    hostname = config.get("Hostname") or record.short_id
    process = ProcessSpec(
        args=tuple(args.command),
        env=process_env(config, hostname, tty=args.tty, extra=env_entries(args.env, os.environ)),
        cwd=args.workdir or config.get("WorkingDir") or "/",
        user=args.user if args.user is not None else config.get("User") or "",
        seccomp=record.seccomp,  # Docker: an exec'd process is confined as the container is
        no_new_privileges=record.no_new_privileges,
    )
    runtime = ContainerRuntime()
    try:
        return runtime.exec(str(record.directory), process, tty=args.tty, interactive=args.interactive, detach=args.detach)
    except PybuildError as error:
        if not runtime.status(str(record.directory)).running:
            raise PybuildError(f"container {record.short_id} is not running", hint=f"pybuild ps -a shows {record.name}'s state") from None
        raise error
