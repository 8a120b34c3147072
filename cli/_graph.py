"""``pybuild graph``: the ops a build would run, their inputs and Dockerfile lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from ._io import read_dockerfile

if TYPE_CHECKING:
    from pybuild.dag import BuildPlan, Platform
    from pybuild.oci import ImageStore, ResolvedImage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", default="Dockerfile", help="the Dockerfile (- for stdin)")
    parser.add_argument("--target", help="show what building this stage needs")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V")
    parser.add_argument("--format", default="text", choices=["text", "json", "dot"], help="text, json, or Graphviz dot")
    parser.add_argument("--platform", action="append", default=[], metavar="OS/ARCH,...", help="the graph of a build for these platforms: which ops each needs, which are shared")
    parser.add_argument("--root", help="the pybuild root (base images are looked up there)")


class _AnyImage:
    """Base images as the store knows them, or an unresolved stand-in (the graph needs no pull)."""

    def __init__(self, store: ImageStore | None) -> None:
        self.store = store

    def lookup(self, ref: str, platform: Platform) -> ResolvedImage:
        from pybuild.oci import ResolvedImage

        found = self.store.lookup(ref, platform) if self.store is not None else None
        if found is not None:
            return found
        config = {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": ["unresolved"]}}
        return ResolvedImage(ref, "unresolved", config)


def run(args: argparse.Namespace) -> int:
    from pybuild.dag import BuildOptions, convert, host_platform
    from pybuild.grammar import parse

    from ._build import _pairs, _platforms

    data, name = read_dockerfile(args.file)
    dockerfile = parse(data, name)
    store = None
    try:
        from ._runtime import image_store, open_root

        store = image_store(open_root(args.root))
    except Exception:  # noqa: BLE001 - the graph is useful without a root
        store = None
    # a graph runs nothing, so it needs no entitlement to show an insecure step
    platforms = _platforms(args)
    options = BuildOptions(
        build_args=_pairs(args.build_arg, "--build-arg"), target=args.target, entitlements=frozenset({"security.insecure"}),
        platforms=platforms, platform=platforms[0] if platforms else host_platform(),
    )
    plan = convert(dockerfile, options, _AnyImage(store))
    targets = plan.targets or (plan,)
    definition = plan.definition.needed_by([t.target.op for t in targets if t.target.op])
    used = _platforms_of_ops(targets) if plan.targets else {}
    if args.format == "json":
        document = definition.to_json()
        for op in document["ops"] if used else ():
            op["platforms"] = used.get(op["digest"], [])
        json.dump(document, sys.stdout, indent=2)
        print()
    elif args.format == "dot":
        sys.stdout.write(definition.to_dot())
    else:
        count = len(targets)
        notes = {d: "[shared]" if len(p) == count else f"[{', '.join(p)}]" for d, p in used.items()}
        sys.stdout.write(definition.to_text(notes))
    return 0


def _platforms_of_ops(targets: tuple[BuildPlan, ...]) -> dict[str, list[str]]:
    """Which target platforms need each op (an op all of them need runs once for all)."""
    used: dict[str, list[str]] = {}
    for target in targets:
        if target.target.op:
            for digest in target.definition.needed_by([target.target.op]).ops:
                used.setdefault(digest, []).append(str(target.platform))
    return used
