"""``pybuild load``: images from a docker-archive or OCI layout tar (``-i FILE`` or stdin).

Prints ``Loaded image: NAME`` per name, ``Loaded image ID: sha256:...``
for an image without one, and, as Docker does, a note when a name moves
away from another image.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from pybuild.errors import UsageError

from ._runtime import image_store, open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", help="read from this file instead of standard input")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("--platform", help="of a multi-platform archive, load only this platform (default: every platform, kept as an index)")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.oci import load_archive, parse_reference

    root = open_root(args.root)
    store = image_store(root)
    if args.input:
        path = Path(args.input)
        if not path.is_file():
            raise UsageError(f"{args.input}: no such file", hint="name an archive written by docker save or pybuild save")
    else:
        if sys.stdin.isatty():
            raise UsageError("requested load from stdin, but stdin is empty", hint="use -i FILE or redirect standard input")
        path = root.tmp_dir("load-stdin-") / "archive.tar"
        with open(path, "wb") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
    results = load_archive(store, path, platform=args.platform)
    if args.quiet:
        return 0
    for result in results:
        for name, previous in result.replaced:
            print(f"The image {parse_reference(name).familiar} already exists, renaming the old one with ID {previous} to empty string")
        for name in result.names:
            print(f"Loaded image: {parse_reference(name).familiar}")
        if not result.names:
            print(f"Loaded image ID: {result.image.id}")
    return 0
