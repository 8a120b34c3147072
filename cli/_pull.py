"""``pybuild pull NAME[:TAG|@DIGEST]``: an image from a registry into the local store.

Docker's naming rules apply (``busybox`` is ``docker.io/library/busybox:latest``);
an image index is resolved to ``--platform`` (default: the host's).  The
output has ``docker pull``'s shape: the layers, ``Digest:``, ``Status:``
and the full reference.  Plain HTTP is used for loopback registries and
for those named with ``--insecure-registry``; credentials come from
Docker's ``config.json`` (``docker login``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--insecure-registry", action="append", default=[], metavar="HOST[:PORT]|CIDR",
        help="talk plain HTTP to this registry (repeatable; loopback hosts always may)",
    )
    parser.add_argument("--root", help="the pybuild root")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME[:TAG|@DIGEST]", help="the image to pull")
    parser.add_argument("--platform", help="os/arch[/variant] to pull from a multi-platform image (default: the host's)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the image's full name")
    parser.add_argument("-a", "--all-tags", action="store_true", help="not supported: pull tags one by one")
    add_registry_arguments(parser)


def report(result: Any) -> str:
    """docker pull's lines for a finished pull."""
    from pybuild.oci import parse_reference

    ref = result.reference
    lines = [f"{ref.digest or ref.tag}: Pulling from {ref.repository}"]
    for layer in result.layers:
        short = layer.digest.split(":", 1)[1][:12]
        lines.append(f"{short}: {'Already exists' if layer.cached else 'Pull complete'}")
    lines.append(f"Digest: {result.digest}")
    shown = parse_reference(str(ref)).familiar
    if result.up_to_date:
        lines.append(f"Status: Image is up to date for {shown}")
    else:
        lines.append(f"Status: Downloaded newer image for {shown}")
    lines.append(str(ref))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import trio

    from pybuild.dag import Platform, host_platform
    from pybuild.errors import UsageError
    from pybuild.oci import parse_reference, pull_image, registry_client

    from ._runtime import image_store, open_root

    if args.all_tags:
        raise UsageError("--all-tags is not supported", hint="pull each tag by name")
    reference = parse_reference(args.name)
    platform = host_platform()
    if args.platform:
        try:
            platform = Platform.parse(args.platform)
        except ValueError as error:
            raise UsageError(str(error)) from None
    store = image_store(open_root(args.root))

    async def main() -> Any:
        client = registry_client(args.insecure_registry)
        try:
            return await pull_image(store, client, reference, str(platform))
        finally:
            await client.aclose()

    result = trio.run(main)
    store.snapshots_for(result.image)  # unpack now, as docker pull does: ready to build on, size known
    sys.stdout.write(str(result.reference) + "\n" if args.quiet else report(result))
    return 0
