"""``pybuild worker``: run build steps leased from a Remote Execution API cluster.

The worker speaks the Remote Workers API (bots) to the cluster's scheduler
(BuildGrid), runs each leased pybuild step in the sandbox on its own root
(``--root``; layers are kept there between steps), and logs one line per
step it runs to stderr.  Ctrl-C or SIGTERM drains it: no new work, running
steps finish and are reported; a second signal gives them back.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from pybuild.errors import UsageError

from ._runtime import cpu_count, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", required=True, metavar="grpc://HOST:PORT", help="the cluster's Remote Workers (bots) endpoint (grpcs:// for TLS)")
    parser.add_argument("--instance", default="", metavar="NAME", help="the REAPI instance name (default: none)")
    parser.add_argument("--root", help="this worker's pybuild root (default: $PYBUILD_ROOT or /var/lib/pybuild)")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform whose steps it runs (default: this machine's)")
    parser.add_argument("--jobs", type=positive_int, metavar="N", help="steps at once (default: the number of CPUs)")
    parser.add_argument("--name", metavar="NAME", help="the bot id, shown in each result it reports (default: HOST-PID)")
    parser.add_argument("--remote-header", action="append", default=[], metavar="NAME=VALUE", help="a header sent with every call, e.g. a token (repeatable)")
    parser.add_argument("--remote-tls-ca", metavar="FILE", help="the CA certificate a grpcs:// server is checked against")
    parser.add_argument("--remote-tls-cert", metavar="FILE", help="the client certificate for a grpcs:// server")
    parser.add_argument("--remote-tls-key", metavar="FILE", help="the client certificate's key")


def run(args: argparse.Namespace) -> int:
    import trio

    from pybuild import reapi
    from pybuild.dag import Platform, host_platform
    from pybuild.dag.bot import BotOptions, serve

    from ._runtime import executors, open_root

    try:
        platform = Platform.parse(args.platform).normalized() if args.platform else host_platform()
    except ValueError as error:
        raise UsageError(f"--platform: {error}", hint="e.g. --platform linux/arm64") from None
    endpoint = reapi.parse_endpoint(
        args.remote, instance=args.instance, headers=args.remote_header, ca_cert=args.remote_tls_ca,
        client_cert=args.remote_tls_cert, client_key=args.remote_tls_key, flag="--remote",
    )
    options = BotOptions(name=args.name or f"{socket.gethostname()}-{os.getpid()}", platform=str(platform),
                         jobs=args.jobs or cpu_count())
    root = open_root(args.root)
    remote = reapi.Remote.connect(endpoint)
    executor, files = executors(root)

    def say(line: str) -> None:
        print(f"worker {options.name}: {log_line(line)}", file=sys.stderr, flush=True)

    async def main() -> None:
        try:
            await trio.to_thread.run_sync(remote.capabilities)  # an unreachable cluster: one error, at once
            serving = f"serving {endpoint.url} as {options.name} ({platform}, {options.jobs} at once)"
            await serve(remote, root, executor, files, options, say, on_ready=lambda: say(serving))
        finally:
            with trio.CancelScope(shield=True):
                await executor.aclose()
                files.close()

    try:
        trio.run(main)
    finally:
        remote.close()
    say("stopped")
    return 0


def log_line(text: str) -> str:
    """One line of the worker's log: what leases and servers said is quoted in it, so every
    control or unprintable character is escaped (no escape sequence reaches a terminal, no
    newline forges a line of its own)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii") for c in text)
