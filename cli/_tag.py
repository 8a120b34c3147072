"""``pybuild tag SOURCE TARGET``: another name for a local image.

A name that named another image moves; the image it left, if nothing else
names it, shows as ``<none> <none>`` (dangling) in ``pybuild images``.
"""

from __future__ import annotations

import argparse

from ._runtime import image_store, open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SOURCE_IMAGE[:TAG]", help="an image: name, name@digest or ID")
    parser.add_argument("target", metavar="TARGET_IMAGE[:TAG]", help="the new name")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    store = image_store(open_root(args.root))
    store.normalize(args.target)  # a malformed target fails before anything changes
    store.tag(store.resolve_id(args.source), args.target)
    return 0
