"""``pybuild worker``: run build steps leased from a Remote Execution API cluster."""

from __future__ import annotations

import argparse

from pybuild.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--remote", required=True, metavar="grpc://HOST:PORT", help="the cluster's Remote Workers (bots) endpoint")


def run(args: argparse.Namespace) -> int:
    raise UsageError("pybuild worker is not implemented yet")
