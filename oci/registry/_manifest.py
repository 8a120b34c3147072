"""Manifests and indexes as a registry serves them: just enough parsing to
pull, kept apart from the image formats module on purpose.

The registry client needs a manifest's config and layer descriptors and an
index's per-platform entries; it keeps the raw bytes (whose sha256 is the
digest) and reads them with ``json``.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any
from dataclasses import dataclass

from pybuild.errors import NotFound, RegistryError

from .._platforms import key_text, normalize_arch, pick_platform
from .._reference import Reference

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_KNOWN_TYPES = INDEX_TYPES | MANIFEST_TYPES
#: The Accept header for manifest requests, most preferred first.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class LayerDescriptor:
    """A blob a manifest refers to: its digest, size and media type."""

    digest: str
    size: int
    media_type: str


@dataclass(frozen=True)
class ResolvedManifest:
    """An image manifest for one platform, its config, and where it came from.

    ``manifest`` and ``config`` are the bytes the registry sent, verified
    against ``digest`` and ``config_digest``.  ``index_digest`` is the index
    (manifest list) it was chosen from, if the reference named one;
    ``index`` its bytes (with ``index_media_type``) when the manifest was an
    entry of that index itself (not of an index nested in it), so the store
    can keep it under the tag.
    """

    ref: Reference
    digest: str
    media_type: str
    manifest: bytes
    config_digest: str
    config: bytes
    layers: tuple[LayerDescriptor, ...]
    index_digest: str | None = None
    config_media_type: str = "application/vnd.oci.image.config.v1+json"
    index: bytes = b""
    index_media_type: str = ""

    @property
    def config_descriptor(self) -> LayerDescriptor:
        return LayerDescriptor(self.config_digest, len(self.config), self.config_media_type)


@dataclass(frozen=True)
class _PlatformEntry:
    descriptor: LayerDescriptor
    os: str
    architecture: str
    variant: str


@dataclass(frozen=True)
class ParsedManifest:
    config: LayerDescriptor
    layers: tuple[LayerDescriptor, ...]


def _bad(what: str, detail: str) -> RegistryError:
    return RegistryError(f"{what} is not a valid image manifest: {detail}", hint="the registry sent something pybuild cannot read")


def check_digest(digest: object, what: str) -> str:
    if not isinstance(digest, str) or not _SHA256.match(digest):
        if isinstance(digest, str) and ":" in digest and not digest.startswith("sha256:"):
            raise RegistryError(
                f"{what} uses the digest algorithm {digest.split(':', 1)[0]!r}, which pybuild does not support",
                hint="pybuild supports sha256 digests",
            )
        raise _bad(what, f"bad digest {str(digest)[:80]!r}")
    return digest


def _descriptor(value: object, what: str) -> LayerDescriptor:
    if not isinstance(value, dict):
        raise _bad(what, "a descriptor is not an object")
    size = value.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise _bad(what, "a descriptor has no valid size")
    media_type = value.get("mediaType")
    return LayerDescriptor(check_digest(value.get("digest"), what), size, str(media_type or ""))


def _document(data: bytes, what: str) -> dict[str, Any]:  # Any: JSON, checked by the caller
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise _bad(what, "not JSON") from None
    if not isinstance(document, dict):
        raise _bad(what, "not a JSON object")
    return document


def media_type_of(data: bytes, content_type: str | None, what: str) -> str:
    """The manifest's media type, from its ``mediaType`` field, else the
    Content-Type the registry sent, else guessed from its shape.

    A document that could be read two ways is refused, as the distribution
    spec (1.0.1) asks of clients: one with both ``manifests`` and
    ``layers``/``config``, and one whose ``mediaType`` field differs from the
    manifest or index type it was served as.  A generic Content-Type
    (``application/json``, ``application/octet-stream``, as static servers
    send) says nothing about the type, so the field decides, as containerd does.
    """
    document = _document(data, what)
    declared = document.get("mediaType")
    header = (content_type or "").split(";")[0].strip().lower()
    for candidate in (declared, header):
        if candidate in _DOCKER_SCHEMA1 or document.get("schemaVersion") == 1:
            raise RegistryError(
                f"{what} is a Docker schema 1 manifest, which pybuild does not support",
                hint="push the image again with a current tool (Docker 1.10 or later)",
            )
    if declared is not None and not isinstance(declared, str):
        raise _bad(what, "its mediaType is not a string")
    is_index = "manifests" in document
    if is_index and ("layers" in document or "config" in document):
        raise _ambiguous(what, "it has both manifests and layers or config, so it reads as an index and as an image manifest")
    if declared and header in _KNOWN_TYPES and declared != header:
        raise _ambiguous(what, f"its mediaType is {declared[:80]!r} but the registry served it as {header!r}")
    for candidate in (declared, header):
        if candidate in _KNOWN_TYPES:
            if is_index != (candidate in INDEX_TYPES):
                shape = "an index" if is_index else "an image manifest"
                raise _ambiguous(what, f"it is typed {candidate!r} but has the fields of {shape}")
            return str(candidate)
    if is_index and isinstance(document.get("manifests"), list):
        return OCI_INDEX
    if isinstance(document.get("config"), dict) and isinstance(document.get("layers"), list):
        return OCI_MANIFEST
    raise _bad(what, f"unknown media type {str(declared or header)[:80]!r}")


def _ambiguous(what: str, detail: str) -> RegistryError:
    return RegistryError(
        f"{what} is refused: {detail}",
        hint="the registry or the image is inconsistent, or was tampered with; nothing was stored",
    )


def check_entry_type(entry: LayerDescriptor, media_type: str, what: str) -> None:
    """An index entry that names an image manifest must lead to one, and one
    that names an index to an index (containerd checks the same; a Docker
    type for an OCI document, or the reverse, is let through as it does)."""
    if entry.media_type in _KNOWN_TYPES and (entry.media_type in INDEX_TYPES) != (media_type in INDEX_TYPES):
        raise _ambiguous(what, f"the index lists it as {entry.media_type!r} but it is {media_type!r}")


def parse_manifest(data: bytes, what: str) -> ParsedManifest:
    document = _document(data, what)
    layers = document.get("layers")
    if not isinstance(layers, list):
        raise _bad(what, "no layers")
    return ParsedManifest(
        config=_descriptor(document.get("config"), what),
        layers=tuple(_descriptor(layer, what) for layer in layers),
    )


def _index_entries(data: bytes, what: str) -> list[_PlatformEntry]:
    document = _document(data, what)
    manifests = document.get("manifests")
    if not isinstance(manifests, list):
        raise _bad(what, "an index without manifests")
    entries = []
    for value in manifests:
        descriptor = _descriptor(value, what)
        platform = value.get("platform") if isinstance(value, dict) else None
        if not isinstance(platform, dict):
            continue
        architecture, variant = normalize_arch(str(platform.get("architecture", "")), str(platform.get("variant") or ""))
        entries.append(_PlatformEntry(descriptor, str(platform.get("os", "")).lower(), architecture, variant))
    return entries


def parse_platform(text: str) -> tuple[str, str, str]:
    """``"linux/amd64"``, ``"linux/arm/v7"`` -> (os, architecture, variant)."""
    parts = text.strip().lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise RegistryError(f"invalid platform {text!r}", hint="use os/arch[/variant], e.g. linux/amd64")
    architecture, variant = normalize_arch(parts[1], parts[2] if len(parts) == 3 else "")
    return parts[0], architecture, variant


def select_platform(index: bytes, platform: str, what: str) -> LayerDescriptor:
    """The manifest of ``index`` for ``platform``, as containerd would pick it.

    An exact os/architecture/variant match wins; for 32-bit arm an older
    variant runs on a newer CPU (v6 on v7), so the newest one that runs is taken.
    """
    entries = _index_entries(index, what)
    chosen = pick_platform([(e.os, e.architecture, e.variant) for e in entries], parse_platform(platform))
    if chosen is not None:
        return entries[chosen].descriptor
    available = sorted(
        {_platform_text(e) for e in entries if e.os != "unknown" and e.architecture != "unknown"}
    )
    raise NotFound(
        f"no manifest for {platform} in {what}" + (f" (it has {', '.join(available)})" if available else ""),
        hint="pick one of the image's platforms with --platform",
    )


def _platform_text(entry: _PlatformEntry) -> str:
    return key_text((entry.os, entry.architecture, entry.variant))
