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
    parser.add_argument("--platform", help="the image's os/arch[/variant] (e.g. linux/arm64): a foreign base")
    parser.add_argument("--root", help="the pybuild root")


def _platform(text: str | None) -> tuple[str, str, str]:
    """The image's os, architecture and variant: --platform's, or an import's default (linux/amd64)."""
    if text is None:
        return "linux", "amd64", ""
    from pybuild.dag import Platform  # only here: an import without --platform loads no dag

    try:
        platform = Platform.parse(text)
    except ValueError as error:
        raise UsageError(f"--platform: {error}", hint="e.g. --platform linux/arm64 or linux/arm/v7") from None
    return platform.os, platform.architecture, platform.variant


def run(args: argparse.Namespace) -> int:
    os_name, architecture, variant = _platform(args.platform)
    store = image_store(open_root(args.root))
    tags = [args.reference] if args.reference else []
    for tag in tags:
        store.normalize(tag)  # refuse a malformed name before reading anything
    if args.file == "-":
        image = store.import_tarball(sys.stdin.buffer, tags, message=args.message,
                                     os_name=os_name, architecture=architecture, variant=variant)
    else:
        try:
            stream = open(args.file, "rb")
        except OSError as error:
            raise UsageError(f"{args.file}: {error.strerror}") from None
        with stream:
            image = store.import_tarball(stream, tags, message=args.message,
                                         os_name=os_name, architecture=architecture, variant=variant)
    print(image.id)
    return 0
