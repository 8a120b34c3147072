"""``pybuild ps [-a]``: the containers, in ``docker ps``'s columns.

CONTAINER ID, IMAGE (as it was named, or its short ID once that name
points elsewhere), COMMAND (quoted, cut at 20 characters with ``…``),
CREATED, STATUS (``Up 5 minutes``, ``Exited (0) 2 seconds ago``,
``Created``; ``Dead`` when the container's supervisor was killed), PORTS
(``127.0.0.1:8080->80/tcp``, and exposed ports that are not published,
while running) and NAMES.  Without ``-a`` only running containers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from pybuild.errors import PybuildError
from pybuild.executors import ContainerRecord, ContainerStore

from ._containers import display_command
from ._format import created_since, ellipsis, human_duration, render_rows, rfc3339_local
from ._runtime import image_store, open_root

if TYPE_CHECKING:
    from pybuild.oci import ImageStore

LABELS = {
    "ID": "CONTAINER ID",
    "Image": "IMAGE",
    "Command": "COMMAND",
    "CreatedAt": "CREATED AT",
    "RunningFor": "CREATED",
    "Status": "STATUS",
    "State": "STATE",
    "Ports": "PORTS",
    "Names": "NAMES",
    "Labels": "LABELS",
    "Networks": "NETWORKS",
}
DEFAULT_FORMAT = "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-a", "--all", action="store_true", help="show all containers (default: running ones)")
    parser.add_argument("-l", "--latest", action="store_true", help="show the latest created container")
    parser.add_argument("-q", "--quiet", action="store_true", help="only show container IDs")
    parser.add_argument("--no-trunc", action="store_true", help="don't truncate output")
    parser.add_argument("--format", help="Go template, or 'table ...' for a table with a header")
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    from pybuild.executors import ContainerRuntime

    root = open_root(args.root)
    records = ContainerStore(root).records()
    if args.latest:
        records = records[:1]
    store = image_store(root)
    now = time.time()
    rows = []
    for record in records:
        status = ContainerRuntime.status(str(record.directory))
        if not (args.all or args.latest) and not status.running:
            continue
        rows.append(row(record, status, image_name(store, record), now=now, no_trunc=args.no_trunc))
    fmt = "{{.ID}}" if args.quiet else args.format or DEFAULT_FORMAT
    sys.stdout.write(render_rows(fmt, rows, LABELS))
    return 0


def image_name(store: ImageStore, record: ContainerRecord) -> str:
    """The image as the user named it, while that name still means the container's image."""
    try:
        named = store.resolve_id(record.image_ref)
        index = store.index(named)  # a multi-platform name means each of its platforms' images
        if record.image_id == named or (index is not None and record.image_id in {e.image.id for e in index.manifests}):
            return record.image_ref
    except PybuildError:
        pass
    return record.image_id.split(":", 1)[-1][:12]


def row(record: ContainerRecord, status: Any, image: str, *, now: float, no_trunc: bool) -> dict[str, str]:
    command = display_command(record.args)
    return {
        "ID": record.id if no_trunc else record.short_id,
        "Image": image,
        "Command": json.dumps(command if no_trunc else ellipsis(command, 20), ensure_ascii=False),
        "CreatedAt": rfc3339_local(record.created),
        "RunningFor": created_since(record.created, now),
        "Status": status_text(status, now),
        "State": state_word(status),
        "Ports": ports_text(record) if status.running else "",
        "Names": record.name,
        "Labels": ",".join(f"{k}={v}" for k, v in sorted((record.config.get("Labels") or {}).items())),
        "Networks": {"default": "bridge"}.get(record.network, record.network),
    }


def status_text(status: Any, now: float) -> str:
    state = status.state
    if status.running:
        return "Up " + human_duration(max(0.0, now - state.started_at))
    if status.lost:
        return "Dead"
    if state.status == "exited" and not status.supervised:
        return f"Exited ({state.exit_code}) {human_duration(max(0.0, now - state.finished_at))} ago"
    return "Created"


def state_word(status: Any) -> str:
    if status.running:
        return "running"
    if status.lost:
        return "dead"
    if status.state.status == "exited" and not status.supervised:
        return "exited"
    return "created"


def ports_text(record: ContainerRecord) -> str:
    """Published ports, then exposed ports nobody publishes, as ``docker ps`` lists them."""
    published = {f"{p.container_port}/{p.protocol}" for p in record.ports}
    items = [str(p) for p in sorted(record.ports, key=lambda p: (p.container_port, p.protocol, p.host_port))]
    for exposed in sorted(record.config.get("ExposedPorts") or {}, key=_port_order):
        if exposed not in published:
            items.append(exposed if "/" in exposed else f"{exposed}/tcp")
    return ", ".join(items)


def _port_order(spec: str) -> tuple[int, str]:
    number, _, protocol = spec.partition("/")
    return (int(number) if number.isdigit() else 0, protocol)
