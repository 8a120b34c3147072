"""``pybuild prune``: free build cache space; safe while builds run."""

from __future__ import annotations

import argparse
import re
from typing import TYPE_CHECKING

from pybuild.errors import UsageError

from ._runtime import image_store, open_root

if TYPE_CHECKING:
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """``10GB``, ``512mb``, ``1.5GiB``, ``1000`` -> bytes (Docker's units)."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise UsageError(f"invalid size {text!r}", hint="e.g. 10GB, 512MB, 1.5GiB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration(text: str) -> float:
    """``24h``, ``30m``, ``7d``, ``1h30m`` -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text.strip():
        raise UsageError(f"invalid duration {text!r}", hint="e.g. 24h, 30m, 7d")
    return sum(float(number) * units[unit] for number, unit in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="remove all unused build cache, not just dangling records")
    parser.add_argument("--keep-storage", metavar="SIZE", help="keep this much cache (least recently used goes first)")
    parser.add_argument("--filter", action="append", default=[], metavar="until=DURATION", help="only cache unused for longer than DURATION")
    parser.add_argument("-f", "--force", action="store_true", help="do not ask (pybuild never asks; accepted for Docker compatibility)")
    parser.add_argument("--repair", action="store_true", help="check the cache index and every blob; rebuild a damaged index, remove damaged blobs, list damaged images")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.cache import prune

    from ._format import human_size

    older_than = None
    for value in args.filter:
        key, _, rest = value.partition("=")
        if key != "until" or not rest:
            raise UsageError(f"unsupported filter {value!r}", hint="pybuild prune supports --filter until=DURATION")
        older_than = parse_duration(rest)
    keep_storage = parse_size(args.keep_storage) if args.keep_storage else None
    from pybuild.executors import snapshots_in_use

    root = open_root(args.root)
    if args.repair:
        root = _repair(root, args.root)
    store = image_store(root)
    # what images and containers (even of removed images) sit on stays
    referenced = lambda: store.referenced() | snapshots_in_use(root)  # noqa: E731
    result = prune(root, all=args.all, keep_storage=keep_storage, older_than=older_than, referenced=referenced)
    print(f"Deleted: {result.records} cache records, {result.snapshots} snapshots, {result.blobs} blobs, {result.cache_mounts} cache mounts")
    print(f"Total reclaimed space: {human_size(result.freed)}")
    if args.repair:
        return _report_damaged(store)
    return 0


def _repair(root: Root, path: str | None) -> Root:
    """Rebuild the index if SQLite finds it damaged; remove blobs that do not match their digest."""
    problem = root.index.quick_check()
    if problem is not None:
        root.index.damage_marker.touch()
        root.close()
        root = open_root(path)  # opening a root whose index is marked damaged rebuilds it
    removed = [digest for digest, size in list(root.blobs.list()) if not root.blob_intact(digest, size)]
    for digest in removed:
        print(f"removed damaged blob {digest}")
    return root


def _report_damaged(store: ImageStore) -> int:
    """Name the images whose data is gone (they must be pulled or built again); 1 if any."""
    from pybuild.oci import parse_reference

    damaged = store.damaged()
    for image, missing in damaged:
        names = ", ".join(parse_reference(t).familiar for t in image.tags) or image.short_id
        print(f"damaged image {names}: {len(missing)} of its blobs are gone ({', '.join(m[:19] for m in missing)}); pull or build it again")
    return 1 if damaged else 0
