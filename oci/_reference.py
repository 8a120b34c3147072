"""Image references with Docker's naming rules.

``busybox`` is ``docker.io/library/busybox:latest``; ``user/app`` is
``docker.io/user/app:latest``; ``localhost:5000/app:1@sha256:...`` keeps its
registry, tag and digest.  A first path component is a registry when it
contains a dot or a colon or is ``localhost``.
"""

from __future__ import annotations

import re

from pybuild._frozen import frozen
from pybuild.errors import ImageError


DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-fA-F0-9]{32,}$")
_DOMAIN = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*(?::[0-9]+)?$|^\[[0-9a-fA-F:]+\](?::[0-9]+)?$")


@frozen
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        return f"{self.registry}/{self.repository}"

    def __str__(self) -> str:
        return self._with_tag_and_digest(self.name)

    @property
    def familiar(self) -> str:
        """The short form Docker shows: ``busybox:latest``, ``user/app:1``."""
        return self._with_tag_and_digest(self.familiar_name)

    def _with_tag_and_digest(self, name: str) -> str:
        text = name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def familiar_name(self) -> str:
        if self.registry == DEFAULT_REGISTRY:
            return self.repository.removeprefix("library/")
        return self.name

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)

    def with_digest(self, digest: str | None) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)


def parse_reference(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalize an image reference; ImageError if it is malformed."""
    original = text
    if not text or text != text.strip():
        raise ImageError(f"invalid reference format: {original!r}", hint="e.g. busybox, user/app:1, host:5000/app@sha256:...")
    digest = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST.match(digest):
            raise ImageError(f"invalid reference format: {original!r}: bad digest {digest!r}")
    tag = None
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        text, tag = text.rsplit(":", 1)
        if not _TAG.match(tag):
            raise ImageError(f"invalid reference format: {original!r}: bad tag {tag!r}")
    first, _, rest = text.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, rest
        if not _DOMAIN.match(registry):
            raise ImageError(f"invalid reference format: {original!r}: bad registry {registry!r}")
    else:
        registry, path = DEFAULT_REGISTRY, text
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = f"library/{path}"
    if not _PATH.match(path):
        hint = "repository names must be lowercase" if path.lower() != path else None
        raise ImageError(f"invalid reference format: {original!r}", hint=hint)
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(registry, path, tag, digest)
