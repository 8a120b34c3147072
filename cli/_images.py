"""``pybuild images``: list the local images the way ``docker images`` does.

One row per repository and tag (and, with ``--digests``, per digest); an
untagged image is ``<none> <none>``.  Filters: ``dangling=true|false``,
``label=KEY`` / ``label=KEY=VALUE``, ``before=IMAGE``, ``since=IMAGE``
(by creation time) and ``reference=PATTERN`` (Go's ``path.Match`` on the
short name, with or without the tag; it also limits the names shown).
pybuild keeps no intermediate images, so ``-a`` lists the same images.

A multi-platform image (an index under its tag) is one row, its ID the
index digest, as Docker's containerd image store lists it; its platforms'
images are not rows of their own.  ``--tree`` shows each image with its
platforms under it, as ``docker images --tree`` does (docker/cli
cli/command/image/tree.go: IMAGE, ID, DISK USAGE, CONTENT SIZE).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pybuild.errors import UsageError

from ._format import created_since, go_time_string, human_size, render_rows
from ._runtime import image_store, open_root

if TYPE_CHECKING:
    from pybuild.oci import Reference

LABELS = {
    "Repository": "REPOSITORY",
    "Tag": "TAG",
    "Digest": "DIGEST",
    "ID": "IMAGE ID",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "Size": "SIZE",
    "VirtualSize": "SIZE",
    "SharedSize": "SHARED SIZE",
    "UniqueSize": "UNIQUE SIZE",
    "Containers": "CONTAINERS",
}
DEFAULT_FORMAT = "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
DIGESTS_FORMAT = "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
FILTERS = ("dangling", "label", "before", "since", "reference")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repository", nargs="?", metavar="REPOSITORY[:TAG]", help="only images of this name (a pattern)")
    parser.add_argument("-a", "--all", action="store_true", help="show all images (pybuild has no intermediate ones)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    parser.add_argument("--digests", action="store_true", help="show digests")
    parser.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    parser.add_argument("-f", "--filter", action="append", default=[], metavar="KEY=VALUE", help="filter: " + ", ".join(FILTERS))
    parser.add_argument("--format", help="Go template, or 'table ...' for a table with a header")
    parser.add_argument("--tree", action="store_true", help="list multi-platform images as a tree of their platforms")
    parser.add_argument("--root", help="the pybuild root")


def path_match(pattern: str, name: str) -> bool:
    """Go's ``path.Match``: ``*`` and ``?`` stop at ``/``, ``[...]`` classes."""
    regex = ""
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            regex += "[^/]*"
        elif c == "?":
            regex += "[^/]"
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise UsageError(f"invalid reference filter {pattern!r}: unclosed [", hint="patterns use Go's path.Match syntax")
            body = pattern[i + 1 : end]
            regex += "[" + ("^" + body[1:] if body.startswith("^") else body).replace("\\", "\\\\") + "]"
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            regex += re.escape(pattern[i])
        else:
            regex += re.escape(c)
        i += 1
    return re.fullmatch(regex, name) is not None


@dataclass(frozen=True)
class Filters:
    dangling: bool | None = None
    labels: tuple[tuple[str, str | None], ...] = ()
    before: float | None = None
    since: float | None = None
    references: tuple[str, ...] = ()


def parse_filters(values: Sequence[str], created_of: Callable[[str], float]) -> Filters:
    dangling: bool | None = None
    labels: list[tuple[str, str | None]] = []
    before = since = None
    references: list[str] = []
    for value in values:
        key, eq, arg = value.partition("=")
        key = key.strip().lower()
        if not eq or key not in FILTERS:
            raise UsageError(f"invalid filter {value!r}", hint="filters: " + ", ".join(f"{f}=..." for f in FILTERS))
        if key == "dangling":
            if arg.lower() not in ("true", "false", "1", "0"):
                raise UsageError(f"invalid filter 'dangling={arg}'", hint="use dangling=true or dangling=false")
            dangling = arg.lower() in ("true", "1")
        elif key == "label":
            name, has_value, wanted = arg.partition("=")
            labels.append((name, wanted if has_value else None))
        elif key == "before":
            moment = created_of(arg)
            before = moment if before is None else min(before, moment)
        elif key == "since":
            moment = created_of(arg)
            since = moment if since is None else max(since, moment)
        else:
            references.append(arg)
    return Filters(dangling, tuple(labels), before, since, tuple(references))


def _matches_reference(patterns: Sequence[str], ref: Reference) -> bool:
    return any(path_match(p, ref.familiar) or path_match(p, ref.familiar_name) for p in patterns)


def select(images: Sequence[Any], filters: Filters) -> list[tuple[Any, list[Any], list[Any]]]:
    """The images to list, each with the tags and digests (parsed references) to show."""
    from pybuild.oci import parse_reference

    out = []
    for image in images:
        tags = [parse_reference(t) for t in image.tags]
        digests = [parse_reference(d) for d in image.repo_digests]
        if filters.references:
            tags = [t for t in tags if _matches_reference(filters.references, t)]
            digests = [d for d in digests if _matches_reference(filters.references, d)]
            if not tags and not digests:
                continue
        if filters.dangling is True and image.tags:
            continue
        if filters.dangling is False and not image.tags and not image.repo_digests:
            continue
        labels = image.labels
        if any(name not in labels or (wanted is not None and labels[name] != wanted) for name, wanted in filters.labels):
            continue
        if filters.before is not None and not image.created_at < filters.before:
            continue
        if filters.since is not None and not image.created_at > filters.since:
            continue
        out.append((image, tags, digests))
    return out


def rows(selected: Sequence[tuple[Any, list[Any], list[Any]]], *, digests: bool, no_trunc: bool, now: float) -> list[dict[str, str]]:
    """docker's rows: per repository and tag (and digest), ``<none>`` where there is none."""
    out = []
    for image, tags, repo_digests in selected:
        base = {
            "ID": image.id if no_trunc else image.short_id,
            "CreatedSince": created_since(image.created_at, now),
            "CreatedAt": go_time_string(image.created_at),
            "Size": human_size(image.size),
            "VirtualSize": human_size(image.size),
            "SharedSize": "N/A",
            "UniqueSize": "N/A",
            "Containers": "N/A",
        }
        if not tags and not repo_digests:
            out.append({"Repository": "<none>", "Tag": "<none>", "Digest": "<none>", **base})
            continue
        by_repo: dict[str, list[str]] = {}
        for ref in tags:
            by_repo.setdefault(ref.familiar_name, []).append(ref.tag)
        digest_repo: dict[str, list[str]] = {}
        for ref in repo_digests:
            digest_repo.setdefault(ref.familiar_name, []).append(ref.digest)
        for repo in sorted(by_repo):
            repo_digest_list = digest_repo.pop(repo, []) if digests else []
            digest_repo.pop(repo, None)
            for tag in sorted(by_repo[repo]):
                for digest in repo_digest_list or ["<none>"]:
                    out.append({"Repository": repo, "Tag": tag, "Digest": digest, **base})
        for repo in sorted(digest_repo):
            for digest in sorted(digest_repo[repo]) if digests else [""]:
                out.append({"Repository": repo, "Tag": "<none>", "Digest": digest or "<none>", **base})
    return out


def listed(store: Any) -> list[Any]:
    """The images and indexes ``images`` shows, newest first: an image only its
    indexes name is shown through them."""
    images = [image for image in store.images() if image.tags or not image.indexes]
    both = [*images, *store.indexes()]
    return sorted(both, key=lambda item: (item.created_at, item.created, item.id), reverse=True)


def tree_rows(selected: Sequence[tuple[Any, list[Any], list[Any]]]) -> list[dict[str, str]]:
    """``docker images --tree``: each name, its platforms under it."""
    out = []
    for item, tags, _digests in selected:
        names = [t.familiar for t in tags] or ["<untagged>"]
        out.append({"Image": names[0], "ID": item.short_id, "DiskUsage": human_size(item.size), "ContentSize": human_size(_content_size(item))})
        out += [{"Image": name, "ID": "", "DiskUsage": "", "ContentSize": ""} for name in names[1:]]
        entries = list(getattr(item, "manifests", ()))
        for n, entry in enumerate(entries):
            branch = "└─ " if n == len(entries) - 1 else "├─ "
            out.append({"Image": branch + entry.platform, "ID": entry.image.short_id,
                        "DiskUsage": human_size(entry.image.size), "ContentSize": human_size(_content_size(entry.image))})
    return out


def _content_size(item: Any) -> int:
    """The bytes of its blobs (compressed layers), as a registry would hold them."""
    images = [entry.image for entry in item.manifests] if hasattr(item, "manifests") else [item]
    return sum(layer.size for image in images for layer in image.layers)


TREE_FORMAT = "table {{.Image}}\t{{.ID}}\t{{.DiskUsage}}\t{{.ContentSize}}"
TREE_LABELS = {"Image": "IMAGE", "ID": "ID", "DiskUsage": "DISK USAGE", "ContentSize": "CONTENT SIZE"}


def run(args: argparse.Namespace) -> int:
    if args.tree:
        for flag, given in (("--quiet", args.quiet), ("--no-trunc", args.no_trunc), ("--digests", args.digests), ("--format", args.format)):
            if given:
                raise UsageError(f"{flag} is not supported with --tree", hint="docker images --tree takes neither")
    store = image_store(open_root(args.root))
    filter_values = list(args.filter)
    if args.repository:
        filter_values.append(f"reference={args.repository}")
    filters = parse_filters(filter_values, lambda name: _created(store, name))
    selected = select(listed(store), filters)
    if args.tree:
        sys.stdout.write(render_rows(TREE_FORMAT, tree_rows(selected), TREE_LABELS))
        return 0
    table = rows(selected, digests=args.digests, no_trunc=args.no_trunc, now=time.time())
    if args.quiet:
        fmt = "{{.ID}}"
    elif args.format:
        fmt = args.format
    else:
        fmt = DIGESTS_FORMAT if args.digests else DEFAULT_FORMAT
    sys.stdout.write(render_rows(fmt, table, LABELS))
    return 0


def _created(store: Any, name: str) -> float:
    """When the image (or index) ``before=``/``since=`` names was made."""
    index = store.index(name)
    return float(index.created_at if index is not None else store.get(name).created_at)
