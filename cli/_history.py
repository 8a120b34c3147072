"""``pybuild history IMAGE``: the image's history, newest first, as ``docker history`` shows it.

Each entry of the config's ``history`` is a row: the newest carries the
image ID, the others ``<missing>`` (pybuild, like BuildKit, keeps no
intermediate images); SIZE is the size of the layer the entry made
(Docker's measure: the files of the layer), ``0B`` for metadata steps;
CREATED BY is cut at 45 characters with ``…`` unless ``--no-trunc``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pybuild.errors import UsageError

from ._format import created_since, ellipsis, human_size, parse_time, render_rows, rfc3339_local
from ._runtime import image_store, open_root

LABELS = {
    "ID": "IMAGE",
    "CreatedSince": "CREATED",
    "CreatedAt": "CREATED AT",
    "CreatedBy": "CREATED BY",
    "Size": "SIZE",
    "Comment": "COMMENT",
}
DEFAULT_FORMAT = "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", metavar="IMAGE", help="name, name@digest, ID or ID prefix")
    parser.add_argument("-H", "--human", default="true", choices=["true", "false"], help="sizes and dates in human-readable form (default true)")
    parser.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show image IDs")
    parser.add_argument("--format", help="Go template, or 'table ...' for a table with a header")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="a multi-platform image's platform to show (default: this machine's)")
    parser.add_argument("--root", help="the pybuild root")


def entries(config: Mapping[str, Any], layer_sizes: Sequence[int]) -> list[dict[str, Any]]:
    """The history entries, oldest first, each with the size of the layer it made."""
    history = list(config.get("history") or [])
    if not history:  # some images carry none: one anonymous entry per layer
        history = [{} for _ in layer_sizes]
    out = []
    layer = 0
    for entry in history:
        if not isinstance(entry, dict):
            raise UsageError("the image's history is malformed")
        size = 0
        if not entry.get("empty_layer"):
            size = layer_sizes[layer] if layer < len(layer_sizes) else 0
            layer += 1
        out.append({
            "created": parse_time(str(entry.get("created") or "")),
            "created_by": str(entry.get("created_by") or ""),
            "comment": str(entry.get("comment") or ""),
            "size": size,
        })
    return out


def rows(image_id: str, history: Sequence[Mapping[str, Any]], *, human: bool, no_trunc: bool, now: float) -> list[dict[str, str]]:
    out = []
    for position, entry in enumerate(reversed(history)):
        if position == 0:
            shown_id = image_id if no_trunc else image_id.split(":", 1)[-1][:12]
        else:
            shown_id = "<missing>"
        created = entry["created"]
        created_by = entry["created_by"].replace("\t", " ")
        out.append({
            "ID": shown_id,
            "CreatedSince": created_since(created, now) if human else (rfc3339_local(created) if created else ""),
            "CreatedAt": rfc3339_local(created) if created else "",
            "CreatedBy": created_by if no_trunc else ellipsis(created_by, 45),
            "Size": human_size(entry["size"]) if human else str(entry["size"]),
            "Comment": entry["comment"],
        })
    return out


def run(args: argparse.Namespace) -> int:
    store = image_store(open_root(args.root))
    image = store.get(args.image, args.platform)
    table = rows(
        image.id, entries(image.config, store.layer_sizes(image)),
        human=args.human == "true", no_trunc=args.no_trunc, now=time.time(),
    )
    fmt = "{{.ID}}" if args.quiet else args.format or DEFAULT_FORMAT
    sys.stdout.write(render_rows(fmt, table, LABELS))
    return 0
