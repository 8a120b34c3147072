"""``pybuild save IMAGE...``: images into one archive, as ``docker save`` writes it.

``--format docker`` (the default) writes a docker-archive; ``--format oci``
an OCI image layout tar that ``docker load``, ``skopeo`` and ``umoci`` read.
A name without a tag saves every tag of that repository; an image named
by ID or digest is saved without names.  Without ``-o`` the archive goes
to standard output (not to a terminal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pybuild.errors import ImageError, UsageError

from ._runtime import image_store, open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="name[:tag], name@digest, ID or ID prefix")
    parser.add_argument("-o", "--output", help="write to this file instead of standard output")
    parser.add_argument("--format", default="docker", choices=["docker", "oci"], help="docker-archive (default) or OCI layout tar")
    parser.add_argument("--root", help="the pybuild root")


def selections(store: Any, names: list[str]) -> list[tuple[Any, list[str]]]:
    """(image, names to give it) for each argument, one entry per image."""
    from pybuild.oci import parse_reference

    chosen: dict[str, tuple[Any, list[str]]] = {}

    def add(image: Any, name: str | None) -> None:
        entry = chosen.setdefault(image.id, (image, []))
        if name is not None and name not in entry[1]:
            entry[1].append(name)

    for text in names:
        try:
            ref = parse_reference(text, default_tag=False)
        except ImageError:
            ref = None
        if ref is not None and ref.tag is None and ref.digest is None:
            tagged = [t for t in store.root.index.tags() if parse_reference(t.name).name == ref.name]
            if tagged:
                for tag in tagged:
                    add(store.by_id(tag.digest), tag.name)
                continue
        image = store.get(text)
        named = ref is not None and ref.tag and not ref.digest and store.root.index.get_tag(str(ref)) == image.id
        add(image, str(ref) if named else None)
    return list(chosen.values())


def run(args: argparse.Namespace) -> int:
    from pybuild.oci import write_images_archive

    if args.output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal", hint="use -o FILE or redirect standard output")
    store = image_store(open_root(args.root))
    chosen = selections(store, args.images)
    target = Path(args.output) if args.output else sys.stdout.buffer
    write_images_archive(store, chosen, target, format=args.format)
    return 0
