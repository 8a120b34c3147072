"""``pybuild inspect IMAGE...``: Docker's image JSON (an array), or ``--format`` per image.

The document has ``docker image inspect``'s keys: Id, RepoTags,
RepoDigests (short names, as Docker shows them), Parent, Comment, Created,
Container, ContainerConfig, DockerVersion, Author, Config (with Docker's
null fields), Architecture, Variant, Os, Size, VirtualSize, GraphDriver,
RootFS and Metadata.  A name that is not found is reported after the
others; the exit code is then 1.

A multi-platform image (an index) shows its index digest as ``Id``, as
Docker's containerd store does, and the rest from its image for
``--platform`` (default: this machine's, else the first it has).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from pybuild.errors import PybuildError, UsageError

from ._format import render_values
from ._runtime import image_store, open_root

_NIL_SLICES = ("Env", "Cmd", "Entrypoint", "OnBuild", "Shell", "RepoTags", "RepoDigests", "Layers")
_NIL_MAPS = ("Volumes", "Labels", "ExposedPorts", "Data")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="IMAGE", help="name, name@digest, ID or ID prefix")
    parser.add_argument("-f", "--format", help="Go template applied to each image")
    parser.add_argument("--type", default="image", help="only 'image' (pybuild has no containers)")
    parser.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="a multi-platform image's platform to show (default: this machine's)")
    parser.add_argument("-s", "--size", action="store_true", help="accepted for docker compatibility (sizes are always shown)")
    parser.add_argument("--root", help="the pybuild root")


def docker_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """An image's ``config`` with the keys Docker's ``container.Config`` always prints."""
    config = dict(config or {})
    out: dict[str, Any] = {
        "Hostname": "", "Domainname": "", "User": config.get("User", ""),
        "AttachStdin": False, "AttachStdout": False, "AttachStderr": False,
    }
    if "ExposedPorts" in config:
        out["ExposedPorts"] = config["ExposedPorts"]
    out.update({"Tty": False, "OpenStdin": False, "StdinOnce": False, "Env": config.get("Env"), "Cmd": config.get("Cmd")})
    if "Healthcheck" in config:
        out["Healthcheck"] = config["Healthcheck"]
    if config.get("ArgsEscaped"):
        out["ArgsEscaped"] = True
    out.update({
        "Image": config.get("Image", ""),
        "Volumes": config.get("Volumes"),
        "WorkingDir": config.get("WorkingDir", ""),
        "Entrypoint": config.get("Entrypoint"),
        "OnBuild": config.get("OnBuild"),
        "Labels": config.get("Labels"),
    })
    for key in ("StopSignal", "Shell"):
        if config.get(key):
            out[key] = config[key]
    return out


def document(store: Any, image: Any) -> dict[str, Any]:
    from pybuild.oci import parse_reference

    from ._format import rfc3339_local

    config = dict(image.config)
    out: dict[str, Any] = {
        "Id": image.id,
        "RepoTags": [parse_reference(t).familiar for t in image.tags],
        "RepoDigests": [parse_reference(d).familiar for d in image.repo_digests],
        "Parent": "",
        "Comment": config.get("comment", ""),
        "Created": config.get("created", ""),
        "Container": config.get("container", ""),
        "ContainerConfig": docker_config(config.get("container_config")),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": docker_config(config.get("config")),
        "Architecture": config.get("architecture", ""),
    }
    if config.get("variant"):
        out["Variant"] = config["variant"]
    out.update({
        "Os": config.get("os", ""),
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Data": None, "Name": "pybuild"},
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
        "Metadata": {"LastTagTime": rfc3339_local(image.last_tag_time) if image.last_tag_time else "0001-01-01T00:00:00Z"},
    })
    return out


def document_of(store: Any, name: str, platform: str | None) -> dict[str, Any]:
    """``name``'s document; an index's is its platform's image under the index's ID and names."""
    out = document(store, store.get(name, platform))
    index = store.index(name)
    if index is not None:
        from pybuild.oci import parse_reference

        out["Id"] = index.digest
        out["RepoTags"] = [parse_reference(t).familiar for t in index.tags]
        digests = [parse_reference(d).familiar for d in index.repo_digests]
        out["RepoDigests"] = digests + [d for d in out["RepoDigests"] if d not in digests]
    return out


def template_view(value: Any, key: str = "") -> Any:
    """The document as Go's template sees the struct: a null list prints ``[]``, a null map ``map[]``."""
    from ._format import NIL_MAP, NIL_SLICE

    if value is None:
        return NIL_SLICE if key in _NIL_SLICES else NIL_MAP if key in _NIL_MAPS else None
    if isinstance(value, dict):
        return {k: template_view(v, k) for k, v in value.items()}
    return value


def run(args: argparse.Namespace) -> int:
    if args.type not in ("image", ""):
        raise UsageError(f"--type {args.type}: pybuild only has images")
    store = image_store(open_root(args.root))
    found = []
    errors: list[PybuildError] = []
    for name in args.names:
        try:
            found.append(document_of(store, name, args.platform))
        except PybuildError as error:
            errors.append(error)
    if args.format:
        sys.stdout.write(render_values(args.format, [template_view(d) for d in found]))
    else:
        sys.stdout.write(json.dumps(found, indent=4, ensure_ascii=False) + "\n")
    for failure in errors:
        print(failure.render(), file=sys.stderr)
    return 1 if errors else 0
