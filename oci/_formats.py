"""OCI and Docker image documents: descriptors, image config, manifest, index.

Values are frozen dataclasses with ``to_json()`` and ``from_json()``.
Mappings (annotations, labels) are held as sorted tuples of pairs so the
values stay hashable; constructors also accept a dict.

Encoding: ``canonical_json`` -- UTF-8, object keys sorted, no whitespace,
non-ASCII characters written as themselves, integers only.  So equal values
give equal bytes and equal digests.  Empty optional fields are left out, as
Go's ``omitempty`` does in the documents BuildKit writes.

Parsing validates what pybuild relies on (JSON shape, schemaVersion,
mediaType, digests, sizes) and raises ``ImageError`` naming the document and
the field.  Unknown fields are dropped (Docker's ``container_config``, ...).
Docker schema 2 manifests and manifest lists read into the same classes with
their Docker media types; schema 1 is refused.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field, replace
from typing import Any, Union

from pybuild._frozen import frozen
from pybuild.errors import ImageError

from ._platforms import platform_json

MEDIA_TYPE_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_TYPE_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MEDIA_TYPE_OCI_LAYOUT = "application/vnd.oci.layout.header.v1+json"
MEDIA_TYPE_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_TYPE_DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MEDIA_TYPE_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MEDIA_TYPE_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MEDIA_TYPE_DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
_DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

MANIFEST_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_MANIFEST, MEDIA_TYPE_DOCKER_MANIFEST})
INDEX_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
CONFIG_MEDIA_TYPES = frozenset({MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_DOCKER_CONFIG})
LAYER_MEDIA_TYPES = frozenset(
    {
        MEDIA_TYPE_OCI_LAYER,
        MEDIA_TYPE_OCI_LAYER_GZIP,
        MEDIA_TYPE_OCI_LAYER_ZSTD,
        MEDIA_TYPE_DOCKER_LAYER,
        MEDIA_TYPE_DOCKER_LAYER_GZIP,
        MEDIA_TYPE_DOCKER_FOREIGN_LAYER_GZIP,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    }
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

_DIGEST = re.compile(r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s]*$")
_DIGEST_HEX = {"sha256": re.compile(r"^[a-f0-9]{64}$"), "sha512": re.compile(r"^[a-f0-9]{128}$")}

Pairs = tuple[tuple[str, str], ...]


# --- bytes and digests -----------------------------------------------------


def canonical_json(value: Any) -> bytes:
    """The encoding of every document pybuild writes (see the module docstring)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(value: object, what: str = "digest") -> str:
    """``value`` if it is a well-formed digest (strict hex for sha256/sha512)."""
    if not isinstance(value, str) or not _DIGEST.match(value):
        raise ImageError(f"{what}: {value!r} is not a digest", hint="digests look like sha256:<64 hex digits>")
    algorithm, _, encoded = value.partition(":")
    pattern = _DIGEST_HEX.get(algorithm)
    if pattern is not None and not pattern.match(encoded):
        raise ImageError(
            f"{what}: {value!r} is not a valid {algorithm} digest",
            hint=f"{algorithm} digests are lowercase hex of the right length",
        )
    return value


def digest_hex(digest: str) -> str:
    """The hex part of a sha256 digest (checked), e.g. for ``blobs/sha256/<hex>``."""
    check_digest(digest)
    algorithm, _, encoded = digest.partition(":")
    if algorithm != "sha256":
        raise ImageError(f"unsupported digest algorithm {algorithm!r} in {digest}", hint="pybuild stores sha256 only")
    return encoded


def rfc3339(seconds: int | float) -> str:
    """A UTC timestamp as image configs write it: ``2024-05-01T12:00:00Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    text = moment.isoformat().replace("+00:00", "Z")
    return text


def _pairs(value: Mapping[str, str] | Pairs | None) -> Pairs:
    if not value:
        return ()
    items = value.items() if isinstance(value, Mapping) else value
    return tuple(sorted((str(k), str(v)) for k, v in items))


def _freeze_pairs(obj: object, name: str) -> None:
    object.__setattr__(obj, name, _pairs(getattr(obj, name)))


def _freeze_tuple(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if value is not None and not isinstance(value, tuple):
        object.__setattr__(obj, name, tuple(value))


# --- parsing helpers -------------------------------------------------------


def _load(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ImageError(f"{what} is not valid JSON: {e}", hint="the image or archive is damaged") from None
    if not isinstance(value, dict):
        raise ImageError(f"{what} is not a JSON object", hint="the image or archive is damaged")
    return value


def _bad(what: str, key: str, expected: str) -> ImageError:
    return ImageError(f"{what}: {key!r} must be {expected}", hint="the image document is malformed")


def _opt_str(doc: Mapping[str, Any], key: str, what: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(what, key, "a string")
    return value


def _str_list(doc: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(what, key, "a list of strings")
    return tuple(value)


def _str_map(doc: Mapping[str, Any], key: str, what: str) -> Pairs:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _bad(what, key, "an object of strings")
    return _pairs(value)


def _key_set(doc: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise _bad(what, key, "an object")
    return tuple(sorted(value))


def _int(doc: Mapping[str, Any], key: str, what: str, *, required: bool = False) -> int:
    value = doc.get(key)
    if value is None and not required:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(what, key, "an integer")
    return value


def _object(doc: Mapping[str, Any], key: str, what: str) -> dict[str, Any] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(what, key, "an object")
    return value


def _put(out: dict[str, Any], key: str, value: Any) -> None:
    if value:
        out[key] = value


# --- descriptors -----------------------------------------------------------


@frozen
class ImagePlatform:
    """A descriptor's platform: what an index entry runs on."""

    architecture: str
    os: str
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _freeze_tuple(self, "os_features")

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        _put(out, "os.version", self.os_version)
        _put(out, "os.features", list(self.os_features))
        _put(out, "variant", self.variant)
        return out

    @classmethod
    def parse(cls, text: str) -> ImagePlatform:
        """``linux/arm/v7`` as an index entry's platform (arm64's default v8 left out, as BuildKit writes it)."""
        fields = platform_json(text)
        return cls(architecture=fields["architecture"], os=fields["os"], variant=fields.get("variant", ""))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], what: str) -> ImagePlatform:
        for key in ("architecture", "os"):
            if not isinstance(doc.get(key), str):
                raise _bad(what, f"platform.{key}", "a string")
        return cls(
            architecture=doc["architecture"],
            os=doc["os"],
            variant=_opt_str(doc, "variant", what),
            os_version=_opt_str(doc, "os.version", what),
            os_features=_str_list(doc, "os.features", what),
        )


@frozen
class Descriptor:
    """A typed pointer to content: media type, digest, size (OCI content descriptor)."""

    media_type: str
    digest: str
    size: int
    annotations: Pairs = ()
    platform: ImagePlatform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str = ""
    data: str = ""  # base64 of embedded content

    def __post_init__(self) -> None:
        _freeze_pairs(self, "annotations")
        _freeze_tuple(self, "urls")

    @classmethod
    def of(cls, media_type: str, content: bytes, **kwargs: Any) -> Descriptor:
        """The descriptor of ``content``."""
        return cls(media_type, sha256_digest(content), len(content), **kwargs)

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        _put(out, "urls", list(self.urls))
        _put(out, "annotations", dict(self.annotations))
        _put(out, "data", self.data)
        if self.platform is not None:
            out["platform"] = self.platform.to_dict()
        _put(out, "artifactType", self.artifact_type)
        return out

    @classmethod
    def from_dict(cls, doc: object, what: str) -> Descriptor:
        if not isinstance(doc, dict):
            raise ImageError(f"{what} is not a JSON object", hint="the image document is malformed")
        media_type = doc.get("mediaType")
        if not isinstance(media_type, str) or not media_type:
            raise _bad(what, "mediaType", "a non-empty string")
        size = _int(doc, "size", what, required=True)
        if size < 0:
            raise _bad(what, "size", "zero or more")
        platform = _object(doc, "platform", what)
        urls = _str_list(doc, "urls", what)
        if not all(_URL.match(url) for url in urls):
            raise _bad(what, "urls", "a list of absolute URLs")
        data = _opt_str(doc, "data", what)
        if data:
            try:
                base64.b64decode(data, validate=True)
            except (binascii.Error, ValueError):
                raise _bad(what, "data", "base64 with padding") from None
        return cls(
            media_type=media_type,
            digest=check_digest(doc.get("digest"), f"{what} digest"),
            size=size,
            annotations=_str_map(doc, "annotations", what),
            platform=ImagePlatform.from_dict(platform, what) if platform is not None else None,
            urls=urls,
            artifact_type=_opt_str(doc, "artifactType", what),
            data=data,
        )


# --- image config ----------------------------------------------------------


@frozen
class Healthcheck:
    """HEALTHCHECK: the test command and durations in nanoseconds (Docker's keys)."""

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    def __post_init__(self) -> None:
        _freeze_tuple(self, "test")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        _put(out, "Interval", self.interval)
        _put(out, "Timeout", self.timeout)
        _put(out, "StartPeriod", self.start_period)
        _put(out, "StartInterval", self.start_interval)
        _put(out, "Retries", self.retries)
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], what: str) -> Healthcheck:
        return cls(
            test=_str_list(doc, "Test", what),
            interval=_int(doc, "Interval", what),
            timeout=_int(doc, "Timeout", what),
            start_period=_int(doc, "StartPeriod", what),
            start_interval=_int(doc, "StartInterval", what),
            retries=_int(doc, "Retries", what),
        )


@frozen
class ContainerConfig:
    """The image config's ``config``: how a container of the image runs.

    OCI's fields plus Docker's extensions (Healthcheck, OnBuild, Shell,
    ArgsEscaped) under the key names Docker writes.  ``exposed_ports`` and
    ``volumes`` are the keys of Docker's set-like objects.
    """

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    labels: Pairs = ()
    stop_signal: str = ""
    args_escaped: bool = False
    healthcheck: Healthcheck | None = None
    on_build: tuple[str, ...] = ()
    shell: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("exposed_ports", "volumes"):
            object.__setattr__(self, name, tuple(sorted(set(getattr(self, name)))))
        for name in ("env", "entrypoint", "cmd", "on_build", "shell"):
            _freeze_tuple(self, name)
        _freeze_pairs(self, "labels")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _put(out, "User", self.user)
        _put(out, "ExposedPorts", {port: {} for port in self.exposed_ports})
        _put(out, "Env", list(self.env))
        _put(out, "Entrypoint", list(self.entrypoint))
        _put(out, "Cmd", list(self.cmd))
        _put(out, "Volumes", {path: {} for path in self.volumes})
        _put(out, "WorkingDir", self.working_dir)
        _put(out, "Labels", dict(self.labels))
        _put(out, "StopSignal", self.stop_signal)
        _put(out, "ArgsEscaped", self.args_escaped)
        if self.healthcheck is not None:
            out["Healthcheck"] = self.healthcheck.to_dict()
        _put(out, "OnBuild", list(self.on_build))
        _put(out, "Shell", list(self.shell))
        return out

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], what: str) -> ContainerConfig:
        health = _object(doc, "Healthcheck", what)
        escaped = doc.get("ArgsEscaped", False)
        if not isinstance(escaped, bool):
            raise _bad(what, "ArgsEscaped", "true or false")
        return cls(
            user=_opt_str(doc, "User", what),
            exposed_ports=_key_set(doc, "ExposedPorts", what),
            env=_str_list(doc, "Env", what),
            entrypoint=_str_list(doc, "Entrypoint", what),
            cmd=_str_list(doc, "Cmd", what),
            volumes=_key_set(doc, "Volumes", what),
            working_dir=_opt_str(doc, "WorkingDir", what),
            labels=_str_map(doc, "Labels", what),
            stop_signal=_opt_str(doc, "StopSignal", what),
            args_escaped=escaped,
            healthcheck=Healthcheck.from_dict(health, what + " Healthcheck") if health is not None else None,
            on_build=_str_list(doc, "OnBuild", what),
            shell=_str_list(doc, "Shell", what),
        )


@frozen
class HistoryEntry:
    created: str = ""
    created_by: str = ""
    author: str = ""
    comment: str = ""
    empty_layer: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        _put(out, "created", self.created)
        _put(out, "created_by", self.created_by)
        _put(out, "author", self.author)
        _put(out, "comment", self.comment)
        _put(out, "empty_layer", self.empty_layer)
        return out

    @classmethod
    def from_dict(cls, doc: object, what: str) -> HistoryEntry:
        if not isinstance(doc, dict):
            raise ImageError(f"{what} is not a JSON object", hint="the image config is malformed")
        empty = doc.get("empty_layer", False)
        if not isinstance(empty, bool):
            raise _bad(what, "empty_layer", "true or false")
        return cls(
            created=_opt_str(doc, "created", what),
            created_by=_opt_str(doc, "created_by", what),
            author=_opt_str(doc, "author", what),
            comment=_opt_str(doc, "comment", what),
            empty_layer=empty,
        )


@frozen
class ImageConfig:
    """The image config (``application/vnd.oci.image.config.v1+json``)."""

    architecture: str
    os: str
    diff_ids: tuple[str, ...] = ()
    config: ContainerConfig = field(default_factory=ContainerConfig)
    history: tuple[HistoryEntry, ...] = ()
    created: str = ""
    author: str = ""
    variant: str = ""
    os_version: str = ""
    os_features: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("diff_ids", "history", "os_features"):
            _freeze_tuple(self, name)

    @property
    def platform(self) -> ImagePlatform:
        return ImagePlatform(self.architecture, self.os, self.variant, self.os_version, self.os_features)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        _put(out, "created", self.created)
        _put(out, "author", self.author)
        _put(out, "variant", self.variant)
        _put(out, "os.version", self.os_version)
        _put(out, "os.features", list(self.os_features))
        out["config"] = self.config.to_dict()
        out["rootfs"] = {"type": "layers", "diff_ids": list(self.diff_ids)}
        _put(out, "history", [h.to_dict() for h in self.history])
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    def descriptor(self, media_type: str = MEDIA_TYPE_OCI_CONFIG) -> Descriptor:
        return Descriptor.of(media_type, self.to_json())

    @classmethod
    def from_json(cls, data: bytes, what: str = "image config") -> ImageConfig:
        return cls.from_dict(_load(data, what), what)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], what: str = "image config") -> ImageConfig:
        for key in ("architecture", "os"):
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise _bad(what, key, "a non-empty string")
        rootfs = _object(doc, "rootfs", what)
        if rootfs is None or rootfs.get("type") != "layers":
            raise _bad(what, "rootfs", 'an object with "type": "layers"')
        diff_ids = rootfs.get("diff_ids")
        if not isinstance(diff_ids, list):
            raise _bad(what, "rootfs.diff_ids", "a list")
        history = doc.get("history") or []
        if not isinstance(history, list):
            raise _bad(what, "history", "a list")
        container = _object(doc, "config", what) or {}
        return cls(
            architecture=doc["architecture"],
            os=doc["os"],
            diff_ids=tuple(check_digest(d, f"{what} rootfs.diff_ids") for d in diff_ids),
            config=ContainerConfig.from_dict(container, what + " config"),
            history=tuple(HistoryEntry.from_dict(h, f"{what} history[{i}]") for i, h in enumerate(history)),
            created=_opt_str(doc, "created", what),
            author=_opt_str(doc, "author", what),
            variant=_opt_str(doc, "variant", what),
            os_version=_opt_str(doc, "os.version", what),
            os_features=_str_list(doc, "os.features", what),
        )


# --- manifests and indexes -------------------------------------------------


def _check_document(doc: Mapping[str, Any], expected: frozenset[str], media_type: str | None, what: str) -> str:
    if doc.get("schemaVersion") != 2:
        if doc.get("schemaVersion") == 1 or media_type in _DOCKER_SCHEMA1:
            raise ImageError(
                f"{what} is a Docker schema 1 manifest",
                hint="schema 1 is deprecated and not supported; re-push the image with a current docker or buildx",
            )
        raise _bad(what, "schemaVersion", "2")
    if "manifests" in doc and ("layers" in doc or "config" in doc):
        # It would read as an index and as an image manifest (distribution spec 1.0.1).
        raise ImageError(
            f"{what} has both manifests and layers or config, so it could be read two ways",
            hint="the registry or archive is inconsistent, or was tampered with",
        )
    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise _bad(what, "mediaType", "a string")
    if declared and media_type and declared != media_type:
        raise ImageError(
            f"{what} says mediaType {declared!r} but was served as {media_type!r}",
            hint="the registry or archive is inconsistent",
        )
    kind = declared or media_type
    if kind is None:
        kind = MEDIA_TYPE_OCI_INDEX if "manifests" in doc else MEDIA_TYPE_OCI_MANIFEST
    if kind not in expected:
        raise ImageError(
            f"{what} has unexpected mediaType {kind!r}",
            hint="expected one of " + ", ".join(sorted(expected)),
        )
    return kind


def _descriptors(doc: Mapping[str, Any], key: str, what: str) -> Iterator[Descriptor]:
    """The descriptors listed under ``key``: that it is a list is checked now, each entry as it is read."""
    items = doc.get(key)
    if not isinstance(items, list):
        raise _bad(what, key, "a list")
    return (Descriptor.from_dict(d, f"{what} {key}[{i}]") for i, d in enumerate(items))


def _references(doc: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The fields a manifest and an index share besides their descriptors, as constructor arguments."""
    subject = doc.get("subject")
    return {
        "annotations": _str_map(doc, "annotations", what),
        "subject": Descriptor.from_dict(subject, f"{what} subject") if subject is not None else None,
        "artifact_type": _opt_str(doc, "artifactType", what),
    }


class _Document:
    """What a manifest and an index share: the fields after their descriptors, and how they are named."""

    media_type: str
    annotations: Pairs
    subject: Descriptor | None
    artifact_type: str

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _put_references(self, out: dict[str, Any]) -> dict[str, Any]:
        _put(out, "artifactType", self.artifact_type)
        if self.subject is not None:
            out["subject"] = self.subject.to_dict()
        _put(out, "annotations", dict(self.annotations))
        return out

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    def descriptor(self, **kwargs: Any) -> Descriptor:
        return Descriptor.of(self.media_type, self.to_json(), **kwargs)


@frozen
class Manifest(_Document):
    """An image manifest: config and layer descriptors (OCI, or Docker schema 2)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MEDIA_TYPE_OCI_MANIFEST
    annotations: Pairs = ()
    subject: Descriptor | None = None
    artifact_type: str = ""

    def __post_init__(self) -> None:
        _freeze_tuple(self, "layers")
        _freeze_pairs(self, "annotations")

    def to_dict(self) -> dict[str, Any]:
        return self._put_references({
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        })

    @classmethod
    def from_json(cls, data: bytes, media_type: str | None = None, what: str = "manifest") -> Manifest:
        return cls.from_dict(_load(data, what), media_type, what)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], media_type: str | None = None, what: str = "manifest") -> Manifest:
        kind = _check_document(doc, MANIFEST_MEDIA_TYPES, media_type, what)
        layers = _descriptors(doc, "layers", what)
        return cls(
            config=Descriptor.from_dict(doc.get("config"), f"{what} config"),
            layers=tuple(layers),
            media_type=kind,
            **_references(doc, what),
        )


@frozen
class Index(_Document):
    """An image index (OCI) or manifest list (Docker): manifests per platform."""

    manifests: tuple[Descriptor, ...]
    media_type: str = MEDIA_TYPE_OCI_INDEX
    annotations: Pairs = ()
    subject: Descriptor | None = None
    artifact_type: str = ""

    def __post_init__(self) -> None:
        _freeze_tuple(self, "manifests")
        _freeze_pairs(self, "annotations")

    def to_dict(self) -> dict[str, Any]:
        return self._put_references({
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_dict() for m in self.manifests],
        })

    @classmethod
    def from_json(cls, data: bytes, media_type: str | None = None, what: str = "image index") -> Index:
        return cls.from_dict(_load(data, what), media_type, what)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], media_type: str | None = None, what: str = "image index") -> Index:
        kind = _check_document(doc, INDEX_MEDIA_TYPES, media_type, what)
        return cls(manifests=tuple(_descriptors(doc, "manifests", what)), media_type=kind, **_references(doc, what))


ImageDocument = Union[Manifest, Index]


def index_document(manifests: Sequence[tuple[str, Descriptor]]) -> bytes:
    """An OCI image index of (platform, manifest descriptor), in that order: the
    same bytes ``ImageStore.add_index`` stores for the stored manifests."""
    entries = tuple(replace(descriptor, platform=ImagePlatform.parse(platform)) for platform, descriptor in manifests)
    return Index(manifests=entries, media_type=MEDIA_TYPE_OCI_INDEX).to_json()


def parse_image_document(data: bytes, media_type: str | None = None, what: str = "manifest") -> ImageDocument:
    """A manifest or an index, by its mediaType (or the one it was served with)."""
    doc = _load(data, what)
    declared = doc.get("mediaType") or media_type
    if declared in INDEX_MEDIA_TYPES or (declared is None and "manifests" in doc):
        return Index.from_dict(doc, media_type, what)
    return Manifest.from_dict(doc, media_type, what)
