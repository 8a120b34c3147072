"""``pybuild compare IMAGE IMAGE``: two images layer by layer, and the bytes each wastes.

For each image: a header line (name, short ID, size, layer count, the size
of its final filesystem and of its wasted bytes), then its layers bottom
first -- SIZE as ``docker history`` measures it, FILES as ``+added ~changed
-deleted``, WASTED the bytes of the layer a later layer deletes or
overwrites, CREATED BY the history step (``=`` marks a layer both images
share).  Then where each image's wasted bytes go (which later step throws
away which layer's files, the largest paths first), a line saying which
image is smaller and by how much, and a hint naming the step to fix when an
image wastes a lot.  ``--format json`` gives the same as one JSON document.
The analysis is ``oci/_compare.py``; this module only prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pybuild.errors import UsageError

from ._format import ellipsis, human_size
from ._runtime import image_store, open_root

if TYPE_CHECKING:  # the analysis is imported only when the command runs
    from pybuild.oci import Comparison, ImageReport, LayerReport, Waste

WIDTH = 100  # the text output fits a terminal this wide
SHARED_MARK = "="
# A waste group earns a hint when it is at least this big, in bytes and as
# a share of its image: small leftovers are not worth restructuring a Dockerfile.
HINT_MIN_BYTES = 1_000_000
HINT_MIN_SHARE = 0.05


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", metavar="IMAGE", nargs=2, help="name, name@digest, ID or ID prefix")
    parser.add_argument("--top", type=_count, default=5, metavar="N", help="wasted paths to list per layer and step (default 5)")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="how to print the comparison")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="the platform's image of a multi-platform image (default: this machine's)")
    parser.add_argument("--root", help="the pybuild root")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"--top: expected a number, got {text!r}", hint="see 'pybuild compare --help'") from None
    if value < 0:
        raise UsageError(f"--top: expected a number of at least 0, got {value}", hint="see 'pybuild compare --help'")
    return value


def run(args: argparse.Namespace) -> int:
    from pybuild.oci import compare_images

    store = image_store(open_root(args.root))
    left_name, right_name = args.images
    left, right = store.get(left_name, args.platform), store.get(right_name, args.platform)
    comparison = compare_images(store, left, right, left_name=left_name, right_name=right_name)
    if args.format == "json":
        json.dump(as_json(comparison, args.top), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_text(comparison, args.top))
    return 0


# --- text ----------------------------------------------------------------------


def render_text(comparison: Comparison, top: int) -> str:
    reports = _distinct(comparison)
    lines: list[str] = []
    widths = _column_widths(reports)
    # Against itself every layer is shared: marking them all would say nothing.
    mark_shared = not comparison.same_image
    for report in reports:
        lines += [_image_heading(report), *_layer_table(report, widths, mark_shared), ""]
    legend = "FILES: +added ~changed -deleted"
    if mark_shared and any(layer.shared for report in reports for layer in report.layers):
        legend += f"; {SHARED_MARK} a layer both images share"
    lines += [legend, ""]
    for report in reports:
        lines += _waste_section(report, top)
    lines += ["", _summary(comparison)]
    for report in reports:
        worst = _worst_waste(report)
        if worst is not None:
            lines.append(_hint(report, worst, name_it=len(reports) > 1))
    return "\n".join(lines) + "\n"


def _distinct(comparison: Comparison) -> list[ImageReport]:
    # An image compared with itself is shown once.
    return [comparison.left] if comparison.same_image else [comparison.left, comparison.right]


def _image_heading(report: ImageReport) -> str:
    count = len(report.layers)
    return (
        f"{_printable(report.name)} ({report.short_id}): {human_size(report.size)} in {count} "
        f"layer{'s' if count != 1 else ''}, final filesystem {human_size(report.final_size)}, "
        f"wasted {human_size(report.wasted_size)}"
    )


_HEADERS = ("LAYER", "SIZE", "FILES", "WASTED")


def _layer_cells(report: ImageReport, mark_shared: bool) -> list[tuple[str, ...]]:
    return [
        (
            f"{layer.index + 1}{' ' + SHARED_MARK if mark_shared and layer.shared else ''}",
            human_size(layer.size),
            _files(layer),
            human_size(layer.bytes_wasted),
        )
        for layer in report.layers
    ]


def _column_widths(reports: Sequence[ImageReport]) -> list[int]:
    """Columns as docker's tabwriter sizes them (at least 10, 3 apart), the same for every image."""
    rows = [_HEADERS] + [cells for report in reports for cells in _layer_cells(report, True)]
    return [max(10, max(len(row[column]) for row in rows) + 3) for column in range(len(_HEADERS))]


def _layer_table(report: ImageReport, widths: Sequence[int], mark_shared: bool) -> list[str]:
    room = max(20, WIDTH - sum(widths))
    out = ["".join(h.ljust(w) for h, w in zip(_HEADERS, widths)) + "CREATED BY"]
    for layer, cells in zip(report.layers, _layer_cells(report, mark_shared)):
        out.append("".join(c.ljust(w) for c, w in zip(cells, widths)) + ellipsis(step_text(layer), room))
    return out


def _files(layer: LayerReport) -> str:
    counts = (("+", layer.files_added), ("~", layer.files_changed), ("-", layer.files_deleted))
    return " ".join(f"{sign}{count}" for sign, count in counts if count) or "+0"


def step_text(layer: LayerReport) -> str:
    """The layer's history step, shortened for a table: BuildKit's ``# buildkit``
    marker and the ``/bin/sh -c`` every shell-form RUN carries say nothing here."""
    text = layer.created_by or layer.comment
    text = " ".join(text.split())  # heredocs and tabs on one line
    text = text.removesuffix(" # buildkit")
    if text.startswith("RUN /bin/sh -c "):
        text = "RUN " + text[len("RUN /bin/sh -c ") :]
    return _printable(text) or "(no history)"


def _waste_section(report: ImageReport, top: int) -> list[str]:
    name = _printable(report.name)
    if not report.wasted:
        return [f"Wasted in {name}: nothing (every byte of its layers reaches its final filesystem)"]
    out = [f"Wasted in {name}: {human_size(report.wasted_size)} ({_percent(report.wasted_size, report.size)} of the image)"]
    for waste in report.waste_by_step():
        added, removed = report.layers[waste.added_in], report.layers[waste.removed_by]
        frame = f"  layer {waste.added_in + 1} ({{}}): {human_size(waste.size)} {_verb(waste)} by layer {waste.removed_by + 1} ({{}})"
        adder, remover = _fit_two(step_text(added), step_text(removed), WIDTH - len(frame.format("", "")))
        out.append(frame.format(adder, remover))
        for wasted in waste.files[:top]:
            out.append(f"    {human_size(wasted.size).ljust(9)} {_printable(wasted.path)}")
        rest = waste.files[top:]
        if rest:
            out.append(f"    … and {len(rest)} more file{'s' if len(rest) != 1 else ''} ({human_size(sum(f.size for f in rest))})")
    return out


def _fit_two(first: str, second: str, room: int) -> tuple[str, str]:
    """Cut two texts to share ``room`` columns; the second (usually short: ``RUN rm ...``)
    keeps up to half, or more when the first leaves it room."""
    room = max(room, 20)
    second_width = min(len(second), max(room // 2, room - len(first)))
    return ellipsis(first, room - second_width), ellipsis(second, second_width)


def _verb(waste: Waste) -> str:
    overwritten = waste.overwritten_size
    if overwritten == 0:
        return "deleted"
    if overwritten == waste.size:
        return "overwritten"
    return "deleted or overwritten"


def _summary(comparison: Comparison) -> str:
    left, right = comparison.left, comparison.right
    if comparison.same_image:
        return f"{_printable(left.name)} and {_printable(right.name)} are the same image ({left.short_id}, {human_size(left.size)})"
    if left.size == right.size:
        return f"{_printable(left.name)} and {_printable(right.name)} are the same size ({human_size(left.size)})"
    small, big = sorted((left, right), key=lambda r: r.size)
    saved = big.size - small.size
    return f"{_printable(small.name)} is {human_size(saved)} ({_percent(saved, big.size)}) smaller than {_printable(big.name)}"


def _worst_waste(report: ImageReport) -> Waste | None:
    """The largest group of wasted bytes, if it is big enough to be worth a hint."""
    groups = report.waste_by_step()
    if not groups:
        return None
    worst = groups[0]
    if worst.size < HINT_MIN_BYTES or worst.size < HINT_MIN_SHARE * report.size:
        return None
    return worst


def _hint(report: ImageReport, worst: Waste, *, name_it: bool) -> str:
    adder = ellipsis(step_text(report.layers[worst.added_in]), 32)
    remover = ellipsis(step_text(report.layers[worst.removed_by]), 24)
    prefix = f"hint: {_printable(report.name)}: " if name_it else "hint: "
    size = human_size(worst.size)
    if worst.overwritten_size * 2 > worst.size:
        return (f"{prefix}{remover} rewrites {size} that {adder} added, so the image holds them twice: "
                "change them in the step that adds them (COPY --chmod/--chown), or use a multi-stage build")
    return (f"{prefix}{adder} leaves {size} that {remover} deletes in a later layer: "
            "do both in one RUN, or use a multi-stage build")


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "0.0%"


def _printable(text: str) -> str:
    """Paths may hold bytes that are not UTF-8 (kept as surrogates) or control characters: escape them."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# --- json ----------------------------------------------------------------------


def as_json(comparison: Comparison, top: int) -> dict[str, Any]:
    """The comparison as one JSON document; layers are numbered from 1 as in the text."""
    left, right = comparison.left, comparison.right
    small, big = sorted((left, right), key=lambda r: r.size)
    return {
        "images": [_image_json(left, top), _image_json(right, top)],
        "same_image": comparison.same_image,
        "difference": {
            "smaller": None if small.size == big.size else small.name,
            "larger": None if small.size == big.size else big.name,
            "bytes": big.size - small.size,
            "percent": round(100.0 * (big.size - small.size) / big.size, 1) if big.size else 0.0,
        },
    }


def _image_json(report: ImageReport, top: int) -> dict[str, Any]:
    return {
        "name": report.name,
        "id": report.image_id,
        "size": report.size,
        "final_size": report.final_size,
        "wasted": report.wasted_size,
        "layers": [
            {
                "layer": layer.index + 1,
                "diff_id": layer.diff_id,
                "chain_id": layer.chain_id,
                "size": layer.size,
                "files_added": layer.files_added,
                "files_changed": layer.files_changed,
                "files_deleted": layer.files_deleted,
                "bytes_added": layer.bytes_added,
                "bytes_removed": layer.bytes_removed,
                "wasted": layer.bytes_wasted,
                "shared": layer.shared,
                "created_by": layer.created_by,
                "comment": layer.comment,
            }
            for layer in report.layers
        ],
        "waste": [
            {
                "added_in": waste.added_in + 1,
                "removed_by": waste.removed_by + 1,
                "bytes": waste.size,
                "overwritten_bytes": waste.overwritten_size,
                "files": len(waste.files),
                "paths": [
                    {"path": f.path, "size": f.size, "how": "overwritten" if f.overwritten else "deleted"}
                    for f in waste.files[:top]
                ],
            }
            for waste in report.waste_by_step()
        ],
    }
