"""``pybuild du``: the space the pybuild root takes, and what prune could free."""

from __future__ import annotations

import argparse

from ._runtime import image_store, open_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.cache import disk_usage, tree_disk_usage

    from ._format import human_size


    from pybuild.executors import snapshots_in_use

    root = open_root(args.root)
    store = image_store(root)
    usage = disk_usage(root, referenced=lambda: store.referenced() | snapshots_in_use(root))
    containers_dir = root.path / "containers"
    containers = tree_disk_usage(containers_dir) if containers_dir.is_dir() else 0
    rows = [
        ("Layer blobs", usage.blobs),
        ("Snapshots", usage.snapshots),
        ("Cache mounts", usage.cache_mounts),
        ("Containers", containers),
    ]
    print(f"{'TYPE':<14}{'SIZE':>10}")
    for name, size in rows:
        print(f"{name:<14}{human_size(size):>10}")
    print(f"{'Total':<14}{human_size(usage.total + containers):>10}")
    print(f"{'Reclaimable':<14}{human_size(usage.reclaimable):>10}")
    print(f"root: {root.path}")
    return 0
