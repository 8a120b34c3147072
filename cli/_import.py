"""``pybuild import``: a root filesystem tarball becomes an image, like ``docker import``."""

from __future__ import annotations

import argparse
import sys

from pybuild.errors import UsageError

from ._runtime import image_store, open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the tarball (plain, gzip, bzip2, xz, zstd); - for stdin")
    parser.add_argument("reference", nargs="?", help="name the image REPOSITORY[:TAG]")
    parser.add_argument("-m", "--message", default="Imported from -", help="the history comment")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    store = image_store(open_root(args.root))
    tags = [args.reference] if args.reference else []
    for tag in tags:
        store.normalize(tag)  # refuse a malformed name before reading anything
    if args.file == "-":
        image = store.import_tarball(sys.stdin.buffer, tags, message=args.message)
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as error:
            raise UsageError(f"{args.file}: {error.strerror}") from None
        with stream:
            image = store.import_tarball(stream, tags, message=args.message)
    print(image.id)
    return 0
