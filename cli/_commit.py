"""``pybuild commit [-a AUTHOR] [-m MESSAGE] [-c CHANGE] CONTAINER [REPO[:TAG]]``: a container's changes as an image.

As ``docker commit``: the container's layer becomes one more layer on its
image, the new image's config is the container's (the image's with
``run``'s flags) with the ``--change`` instructions applied (CMD,
ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME,
WORKDIR), and a history entry records the container's command, the
message and the author.  A container that changed nothing adds an empty
history entry and no layer.  Prints the new image's ID.

The layer is a copy of the container's upper directory (whiteouts and
opaque markers included) committed as a snapshot on the image's top one,
so building or running the new image reuses it without unpacking.  A
running container is committed as it is at that moment (pybuild does not
pause it).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import posixpath
import subprocess
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pybuild.errors import DockerfileError, ImageError, PybuildError, UsageError

if TYPE_CHECKING:
    from pybuild.cache import Lease, Root
    from pybuild.oci import ImageStore, Layer
from pybuild.executors import ContainerRecord, ContainerStore

from ._runtime import image_store, open_root

# Docker's commit accepts these instructions in --change (moby's validCommitCommands).
CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
# Settings of the container that describe one run, not the image.
_RUN_ONLY = ("Hostname", "Image", "AttachStdin", "AttachStdout", "AttachStderr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("container", metavar="CONTAINER", help="name, ID or ID prefix")
    parser.add_argument("reference", nargs="?", metavar="REPOSITORY[:TAG]", help="name the new image")
    parser.add_argument("-a", "--author", default="", help='author (e.g. "Jane Doe <jane@example.com>")')
    parser.add_argument("-m", "--message", default="", help="commit message (the history entry's comment)")
    parser.add_argument("-c", "--change", action="append", default=[], help="apply a Dockerfile instruction to the image's config")
    parser.add_argument(
        "-p", "--pause", default="true", choices=["true", "false"], help="accepted for docker compatibility (pybuild does not pause)"
    )
    parser.add_argument("--root", help="the pybuild root")


def run(args: argparse.Namespace) -> int:
    root = open_root(args.root)
    store = image_store(root)
    tags = [store.normalize(args.reference)] if args.reference else []  # a bad name fails before any work
    record = ContainerStore(root).get(args.container)
    try:
        image = store.by_id(record.image_id)
    except PybuildError:
        raise ImageError(
            f"the image of container {record.name} ({record.image_id[:19]}) is gone", hint="pybuild cannot commit on a removed image"
        ) from None
    config = apply_changes(container_image_config(record), args.change)
    with root.index.lease() as lease:  # the new layer stays until the image that names it is registered
        layer = commit_layer(root, store, record, [layer.diff_id for layer in image.layers], lease)
        new_config = child_config(
            image.config, record, config, author=args.author, message=args.message, diff_id=layer.diff_id if layer else None
        )
        committed = store.add_image(new_config, [*image.layers, *([layer] if layer else [])], tags=tags)
    print(committed.id)
    return 0


def container_image_config(record: ContainerRecord) -> dict[str, Any]:
    config = copy.deepcopy(dict(record.config))
    for key in _RUN_ONLY:
        config.pop(key, None)
    return config


def commit_layer(root: Root, store: ImageStore, record: ContainerRecord, diff_ids: Sequence[str], lease: Lease) -> Layer | None:
    """The container's layer as a snapshot on its image's top one, and its compressed layer (None if empty)."""
    if not any(os.scandir(record.upper)):
        return None
    active = root.snapshots.new_active()
    try:
        # cp -a keeps owners, modes, times, hard links, device nodes (whiteouts) and trusted.* xattrs (opaque dirs).
        copied = subprocess.run(
            ["cp", "-a", "--", f"{record.upper}/.", str(active.upper)], stdin=subprocess.DEVNULL, capture_output=True, text=True
        )
        if copied.returncode != 0:
            raise PybuildError(f"cannot copy the container's layer: {copied.stderr.strip()}", hint="is the pybuild root full?")
        snapshot = store.commit_leased(active, record.snapshots[0] if record.snapshots else None, lease)
    except BaseException:
        root.snapshots.discard(active)
        raise
    layer = store.layer_for_snapshot(snapshot, sized_as_unpacked=True)  # docker commit registers (ApplyDiff) the layer
    # Running or building on the new image then finds this snapshot instead of unpacking the layer.
    store.remember_chain([*diff_ids, layer.diff_id], [*reversed(record.snapshots), snapshot])
    return layer


def child_config(
    image_config: Mapping[str, Any], record: ContainerRecord, config: Mapping[str, Any], *, author: str, message: str, diff_id: str | None
) -> dict[str, Any]:
    """The new image's config, as Docker's ``NewChildImage`` makes it."""
    created = _rfc3339_nano(time.time_ns())
    kept = ("architecture", "os", "variant", "os.version", "os.features")
    new: dict[str, Any] = {key: copy.deepcopy(image_config[key]) for key in kept if key in image_config}
    new["config"] = dict(config)
    new["container"] = record.id
    new["created"] = created
    if author:
        new["author"] = author
    entry: dict[str, Any] = {"created": created, "created_by": " ".join(record.config.get("Cmd") or [])}
    if author:
        entry["author"] = author
    if message:
        entry["comment"] = message
    if diff_id is None:
        entry["empty_layer"] = True
    new["history"] = [*copy.deepcopy(list(image_config.get("history") or [])), entry]
    diff_ids = list((image_config.get("rootfs") or {}).get("diff_ids") or [])
    new["rootfs"] = {"type": "layers", "diff_ids": [*diff_ids, *([diff_id] if diff_id else [])]}
    return new


def apply_changes(config: Mapping[str, Any], texts: Sequence[str]) -> dict[str, Any]:
    """The ``--change`` instructions applied in order to a container config."""
    cmd_given = False
    for text in texts:
        config, is_cmd = _apply_change(config, text, cmd_given)
        cmd_given = cmd_given or is_cmd
    return dict(config)


def _apply_change(config: Mapping[str, Any], text: str, cmd_given: bool) -> tuple[dict[str, Any], bool]:
    from pybuild import grammar

    try:
        parsed = grammar.parse(f"FROM scratch\n{text}\n", file="--change")
    except DockerfileError as error:
        raise UsageError(f"--change {text!r}: {error.message}", hint=error.hint or "give one Dockerfile instruction") from None
    instructions = parsed.stages[0].instructions
    if len(instructions) != 1 or instructions[0].keyword not in CHANGE_INSTRUCTIONS:
        raise UsageError(f"--change {text!r}: not one of {', '.join(CHANGE_INSTRUCTIONS)}", hint="e.g. --change 'CMD [\"httpd\", \"-f\"]'")
    instruction = instructions[0]
    new = copy.deepcopy(dict(config))
    env = dict(entry.partition("=")[::2] for entry in new.get("Env") or [])
    lex = grammar.ShellLex(parsed.escape)

    def expand(word: str) -> str:
        return lex.process_word(word, env)

    if isinstance(instruction, (grammar.Cmd, grammar.Entrypoint)):
        command = instruction.command
        args = list(command.args) if command.json else [*(new.get("Shell") or ["/bin/sh", "-c"]), " ".join(command.args)]
        if isinstance(instruction, grammar.Cmd):
            new["Cmd"] = args
            return new, True
        new["Entrypoint"] = args if command.args else None
        if not cmd_given:
            new["Cmd"] = None  # Docker: a new ENTRYPOINT drops the cmd, unless a CMD came with it
    elif isinstance(instruction, grammar.Env):
        entries = list(new.get("Env") or [])
        for pair in instruction.pairs:
            key, value = expand(pair.key), expand(pair.value)
            entries = [e for e in entries if e.partition("=")[0] != key] + [f"{key}={value}"]
            env[key] = value
        new["Env"] = entries
    elif isinstance(instruction, grammar.Label):
        labels = dict(new.get("Labels") or {})
        labels.update({expand(p.key): expand(p.value) for p in instruction.pairs})
        new["Labels"] = labels
    elif isinstance(instruction, grammar.Expose):
        exposed = dict(new.get("ExposedPorts") or {})
        for word in instruction.ports:
            for port in _port_specs(lex.process_words(word, env)):
                exposed[port] = {}
        new["ExposedPorts"] = exposed
    elif isinstance(instruction, grammar.Workdir):
        path = expand(instruction.path)
        new["WorkingDir"] = posixpath.normpath(posixpath.join(new.get("WorkingDir") or "/", path))
    elif isinstance(instruction, grammar.User):
        new["User"] = expand(instruction.user)
    elif isinstance(instruction, grammar.Volume):
        volumes = dict(new.get("Volumes") or {})
        volumes.update({expand(v): {} for v in instruction.volumes})
        new["Volumes"] = volumes
    elif isinstance(instruction, grammar.StopSignal):
        new["StopSignal"] = expand(instruction.signal)
    elif isinstance(instruction, grammar.Onbuild):
        new["OnBuild"] = [*(new.get("OnBuild") or []), instruction.expression]
    return new, False


def _port_specs(words: Sequence[str]) -> list[str]:
    out: list[str] = []
    for word in words:
        port, _, protocol = word.partition("/")
        protocol = (protocol or "tcp").lower()
        start, dash, end = port.partition("-")
        if protocol not in ("tcp", "udp", "sctp") or not start.isdigit() or (dash and not end.isdigit()):
            raise UsageError(f"invalid port {word!r} in --change EXPOSE", hint="e.g. EXPOSE 80 or EXPOSE 53/udp")
        out.extend(f"{p}/{protocol}" for p in range(int(start), int(end or start) + 1))
    return out


def _rfc3339_nano(time_ns: int) -> str:
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{nanoseconds:09d}Z"

