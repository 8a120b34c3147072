"""``pybuild save IMAGE...``: images into one archive, as ``docker save`` writes it.

``--format docker`` (the default) writes a docker-archive; ``--format oci``
an OCI image layout tar that ``docker load``, ``skopeo`` and ``umoci`` read.
A name without a tag saves every tag of that repository; an image named
by ID or digest is saved without names.  Without ``-o`` the archive goes
to standard output (not to a terminal).

A multi-platform image (an index) is saved whole in ``--format oci`` (the
index and every platform the store has, as ``docker save`` on the
containerd store); ``--platform`` (``docker save --platform``, Docker 28)
saves that platform's image alone, which a docker-archive needs: it holds
single-platform images only (without ``--platform`` it gets this
machine's, else the first the index has).
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
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="save only this platform's image of a multi-platform image")
    parser.add_argument("--root", help="the pybuild root")


def selections(store: Any, names: list[str], *, platform: str | None = None, whole_indexes: bool = False) -> list[tuple[Any, list[str]]]:
    """(image or index, names to give it) for each argument, one entry per image.

    A name of an index gives the index itself when ``whole_indexes`` (and no
    ``platform``), else its image for ``platform``.
    """
    from pybuild.oci import parse_reference

    chosen: dict[str, tuple[Any, list[str]]] = {}

    def resolve(name: str) -> Any:
        index = store.index(name)
        if index is not None and whole_indexes and platform is None:
            return index
        return store.get(name, platform)

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
                    add(resolve(tag.name), tag.name)
                continue
        image = resolve(text)
        named = ref is not None and ref.tag and not ref.digest and store.root.index.get_tag(str(ref)) in (image.id, store.resolve_id(text))
        add(image, str(ref) if named else None)
    return list(chosen.values())


def run(args: argparse.Namespace) -> int:
    from pybuild.oci import write_images_archive

    if args.output is None and sys.stdout.isatty():
        raise UsageError("cowardly refusing to save to a terminal", hint="use -o FILE or redirect standard output")
    store = image_store(open_root(args.root))
    chosen = selections(store, args.images, platform=args.platform, whole_indexes=args.format == "oci")
    target = Path(args.output) if args.output else sys.stdout.buffer
    write_images_archive(store, chosen, target, format=args.format)
    return 0
