"""``pybuild rmi IMAGE...``: untag and remove images, printing what ``docker rmi`` prints.

``Untagged: NAME`` for each reference removed, then ``Deleted: sha256:...``
for the image and for each layer (chain ID) that no other image uses.
An image is named by tag, ``name@digest``, ID or unique ID prefix; an ID
of an image with tags in several repositories needs ``-f``, and so does an
image a stopped container uses (one a running container uses stays).  Every image
is tried; the exit code is 1 if any failed.  ``--platform`` (Docker 28's) removes
one platform's image of a multi-platform image, leaving the others.
"""

from __future__ import annotations

import argparse
import sys

from pybuild.errors import PybuildError

from ._runtime import image_store, open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="name, name@digest, ID or ID prefix")
    parser.add_argument("-f", "--force", action="store_true", help="remove the image even if several names refer to it")
    parser.add_argument("--no-prune", action="store_true", help="accepted for docker compatibility (pybuild has no parent images)")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="remove only this platform's image of a multi-platform image")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import image_users

    root = open_root(args.root)
    store = image_store(root)
    users = image_users(root)
    failed = False
    for name in args.images:
        try:
            if args.platform:
                removal = store.delete_platform(name, args.platform, force=args.force, users=users)
            else:
                removal = store.delete(name, force=args.force, users=users)
        except PybuildError as error:
            print(error.render(), file=sys.stderr)
            failed = True
            continue
        for ref in removal.untagged:
            print(f"Untagged: {ref}")
        for digest in removal.deleted:
            print(f"Deleted: {digest}")
    return 1 if failed else 0
