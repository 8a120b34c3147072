"""``pybuild image COMMAND``: the image commands under one name, as ``docker image``.

``ls``/``list`` = ``images``, ``rm``/``remove`` = ``rmi``, and ``tag``,
``history``, ``inspect``, ``save``, ``load``, ``pull``, ``push``,
``import``; plus ``prune``, which removes dangling images (untagged ones),
or with ``-a`` every image, and prints what ``docker image prune`` prints.
Layers that no image uses any more stay in the build cache until
``pybuild prune`` (as BuildKit's cache does beside Docker's images).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time
from typing import TYPE_CHECKING

from pybuild.errors import UsageError

if TYPE_CHECKING:
    from pybuild.oci import StoredImage, StoredIndex

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("pybuild.cli._images", "List images"),
    "list": ("pybuild.cli._images", "List images"),
    "rm": ("pybuild.cli._rmi", "Remove one or more images"),
    "remove": ("pybuild.cli._rmi", "Remove one or more images"),
    "tag": ("pybuild.cli._tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
    "history": ("pybuild.cli._history", "Show the history of an image"),
    "inspect": ("pybuild.cli._inspect", "Display detailed information on one or more images"),
    "save": ("pybuild.cli._save", "Save one or more images to a tar archive"),
    "load": ("pybuild.cli._load", "Load images from a tar archive or STDIN"),
    "pull": ("pybuild.cli._pull", "Download an image from a registry"),
    "push": ("pybuild.cli._push", "Upload an image to a registry"),
    "import": ("pybuild.cli._import", "Create an image from a root filesystem tarball"),
    "prune": ("pybuild.cli._image", "Remove unused images"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    commands = parser.add_subparsers(dest="image_command", metavar="COMMAND", required=True)
    for name, (module_name, summary) in SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        if module_name == __name__:
            add_prune_arguments(sub)
            sub.set_defaults(image_run=run_prune)
        else:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(image_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args.image_run(args))


# --- prune -------------------------------------------------------------------


def add_prune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="remove all images, not just dangling ones")
    parser.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE", help="until=DURATION|TIME, label=K[=V], label!=K[=V]")
    parser.add_argument("--root", help="the pybuild root")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")


def _until(text: str, now: float) -> float:
    """A Go duration (``24h``, ``1h30m``) before now, a Unix time, or an RFC 3339 time."""
    from ._format import parse_time

    if re.fullmatch(r"(?:\d+(?:\.\d+)?(?:h|m|s|ms))+", text):
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
        return now - sum(float(n) * scale[u] for n, u in _DURATION.findall(text))
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    moment = parse_time(text)
    if moment is None:
        raise UsageError(f"invalid until filter {text!r}", hint="e.g. until=24h, until=1700000000 or until=2024-01-01T00:00:00Z")
    return moment


def _keep(image: StoredImage | StoredIndex, filters: list[str], now: float) -> bool:
    """False when the filters select the image for pruning."""
    for value in filters:
        key, _, arg = value.partition("=")
        if key == "until":
            if not image.created_at < _until(arg, now):
                return True
        elif key in ("label", "label!"):
            name, has_value, wanted = arg.partition("=")
            labels = image.labels
            present = name in labels and (not has_value or labels[name] == wanted)
            if present != (key == "label"):
                return True
        else:
            raise UsageError(f"invalid filter {value!r}", hint="prune filters: until=..., label=..., label!=...")
    return False


def _used(image: StoredImage | StoredIndex, in_use: set[str]) -> bool:
    """Whether a container was made from the image (from any platform's image of an index)."""
    from pybuild.oci import StoredIndex

    ids = [entry.image.id for entry in image.manifests] if isinstance(image, StoredIndex) else [image.id]
    return any(i in in_use for i in ids)


def run_prune(args: argparse.Namespace) -> int:
    from ._format import human_size
    from ._images import listed
    from ._runtime import image_store, open_root

    if not args.force:
        what = "all images without at least one container associated to them" if args.all else "all dangling images"
        sys.stdout.write(f"WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            return 0
    from pybuild.executors import images_in_use

    root = open_root(args.root)
    store = image_store(root)
    in_use = images_in_use(root)  # as Docker: an image a container was made from is not unused
    now = time.time()
    # an index is one image here (its platforms' images go with it, never on their own)
    victims = [
        image for image in listed(store)
        if (args.all or image.dangling) and not _used(image, in_use) and not _keep(image, args.filter, now)
    ]
    lines: list[str] = []
    reclaimed = 0
    for image in victims:
        removal = store.delete(image.id, force=True)
        lines += [f"untagged: {ref}" for ref in removal.untagged]
        lines += [f"deleted: {digest}" for digest in removal.deleted]
        reclaimed += removal.reclaimed
    if lines:
        print("Deleted Images:")
        print("\n".join(lines))
        print()
    print(f"Total reclaimed space: {human_size(reclaimed)}")
    return 0
