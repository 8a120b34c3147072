"""``pybuild push NAME[:TAG]``: a local image to its registry.

Layers that the registry's repository has are skipped (``Layer already
exists``); layers pulled from another repository of the same registry are
mounted from there.  The output has ``docker push``'s shape; the image then
lists the pushed ``name@digest`` among its digests.

A multi-platform image (an index) is pushed whole: each platform's manifest,
then the index under the tag, as Docker's containerd store pushes it;
``--platform`` (Docker 28's) pushes one platform's image alone under the tag.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._pull import add_registry_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME[:TAG]", help="the image to push, by the name it should have in the registry")
    parser.add_argument("-a", "--all-tags", action="store_true", help="push every local tag of the repository")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="push only this platform's image of a multi-platform image")
    parser.add_argument("--compression", choices=["gzip", "zstd"], help="recompress layers compressed otherwise (default: as stored)")
    add_registry_arguments(parser)


def report(result: Any) -> str:
    """docker push's lines for one pushed tag."""
    ref = result.reference
    lines = []
    for layer in reversed(result.layers):
        short = layer.diff_id.split(":", 1)[1][:12]
        if layer.mounted_from:
            lines.append(f"{short}: {layer.outcome.value} {layer.mounted_from.split('/', 1)[1]}")
        else:
            lines.append(f"{short}: {layer.outcome.value}")
    for platform in result.platforms:  # an index: each platform's layers first
        lines += report(platform).splitlines()[:-1]
    lines.append(f"{ref.tag or 'latest'}: digest: {result.digest} size: {result.size}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import trio

    from pybuild.errors import NotFound, UsageError
    from pybuild.oci import LayerSettings, parse_reference, push_image, push_index, registry_client

    from ._runtime import image_store, open_root

    store = image_store(open_root(args.root))
    if args.all_tags:
        ref = parse_reference(args.name, default_tag=False)
        if ref.tag or ref.digest:
            raise UsageError("--all-tags takes a repository name without a tag")
        names = [t.name for t in store.root.index.tags() if parse_reference(t.name).name == ref.name]
        if not names:
            raise NotFound(f"no such image: {ref.familiar_name}", hint="pybuild images lists the local images")
    else:
        ref = parse_reference(args.name)
        if ref.digest:
            raise UsageError("cannot push a digest reference", hint="push NAME[:TAG]")
        names = [str(ref)]
    settings = LayerSettings(compression=args.compression, force=args.compression is not None)
    if not args.quiet:
        print(f"The push refers to repository [{ref.name}]")

    async def main() -> None:
        client = registry_client(args.insecure_registry)
        try:
            for name in names:
                index = await trio.to_thread.run_sync(store.index, name)
                if index is not None and args.platform is None:
                    result = await push_index(store, client, index, name, layers=settings)
                else:
                    image = await trio.to_thread.run_sync(store.get, name, args.platform)
                    result = await push_image(store, client, image, name, layers=settings)
                if not args.quiet:
                    sys.stdout.write(report(result))
        finally:
            await client.aclose()

    trio.run(main)
    return 0
