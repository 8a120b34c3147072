"""Ops: the nodes of the build graph, plain frozen data (BuildKit's LLB, in Python).

An op's digest is the sha256 of its canonical JSON, which includes the
digests of its inputs, so identical subgraphs have identical digests and run
once.  Descriptions, Dockerfile spans and progress names are ``OpMeta``,
kept beside the op and never hashed.  Fields marked ``cache_neutral`` are
part of the op (the step needs them) but not of its cache key (proxy
variables, for instance).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Union

from .._frozen import frozen
from ._canonical import digest_of

# The field helpers return Any, as dataclasses.field does: it stands for the field's value.


def cache_neutral(default: Any = None) -> Any:
    """A field that is hashed into the op digest but left out of its cache key."""
    return field(default=default, metadata={"cache_neutral": True})


def added_later(default: Any) -> Any:
    """A field added after digests and cache keys were published: hashed only when it
    differs from its default, so every op that leaves it alone keeps its digest and key."""
    return field(default=default, metadata={"omit_when_default": True})


def credentials() -> Any:
    """A secret the op needs to run (a URL's userinfo): never hashed, keyed, or shown in its repr."""
    return field(default=None, repr=False, metadata={"hashed": False, "cache_neutral": True})


# ---------------------------------------------------------------- sources


@frozen
class ImageSource:
    """A base image, pinned to its manifest digest for one platform."""

    ref: str  # normalized reference, e.g. docker.io/library/busybox:latest
    manifest_digest: str
    platform: str

    def inputs(self) -> tuple[str, ...]:
        return ()


@frozen
class LocalSource:
    """The build context (or another named local directory)."""

    name: str = "context"

    def inputs(self) -> tuple[str, ...]:
        return ()


@frozen
class HttpSource:
    """A file to download; ``url`` has no userinfo (see ``oci.split_userinfo``), ``userinfo`` holds it."""

    url: str
    filename: str
    checksum: str | None = None
    userinfo: str | None = credentials()

    def inputs(self) -> tuple[str, ...]:
        return ()


@frozen
class GitSource:
    remote: str  # without userinfo, as HttpSource.url
    ref: str | None = None
    subdir: str | None = None
    keep_git_dir: bool = False
    userinfo: str | None = credentials()
    checksum: str | None = added_later(None)  # ADD --checksum: the commit id or a prefix of it

    def inputs(self) -> tuple[str, ...]:
        return ()


# ---------------------------------------------------------------- exec


@frozen
class RunMount:
    """One ``RUN --mount``; ``source`` is the digest of the op it mounts, if any."""

    kind: str  # bind | cache | tmpfs | secret | ssh
    target: str
    source: str | None = None
    source_path: str = "/"
    readonly: bool = True
    cache_id: str | None = None
    sharing: str = "shared"
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    secret_id: str | None = None
    env: str | None = None  # a secret exposed as an environment variable
    required: bool = False


@frozen
class CdiDevice:
    """A CDI device a RUN step asks for (``vendor.com/class=name``); an unregistered one
    fails the step when ``required``, else it is skipped (BuildKit's ``CDIDevice.optional``)."""

    name: str
    required: bool = False


@frozen
class ExecOp:
    rootfs: str | None  # digest of the op whose result is the root filesystem
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str
    user: str
    network: str = "default"
    mounts: tuple[RunMount, ...] = ()
    # "sandbox" or "insecure" (RUN --security=insecure: every capability, no syscall
    # filter); part of the key, so neither mode's result stands in for the other's
    security: str = added_later("sandbox")
    # the platform the step runs for ("linux/arm64"), set only when it is not the
    # host's: host steps keep their keys, and an arm64 run never stands in for an amd64 one
    platform: str = added_later("")
    # RUN --device: the CDI devices asked for, as written (resolved against the host's CDI
    # specs when the step runs); part of the key, as in BuildKit's ExecOp.cdiDevices
    devices: tuple[CdiDevice, ...] = added_later(())
    proxy_env: tuple[str, ...] = cache_neutral(())
    ignore_cache: bool = cache_neutral(False)

    def inputs(self) -> tuple[str, ...]:
        own = (self.rootfs,) if self.rootfs else ()
        return own + tuple(m.source for m in self.mounts if m.source)


# ---------------------------------------------------------------- files


@frozen
class Chown:
    user: str  # a name or a number, resolved against the destination rootfs
    group: str | None = None


@frozen
class CopyAction:
    """Copy ``src`` (a path or wildcard pattern in ``source``) to ``dest``."""

    source: str | None  # digest of the source op; None for scratch
    src: str
    dest: str
    chown: Chown | None = None
    chmod: str | None = None  # octal or symbolic
    dir_contents_only: bool = True
    follow_symlinks: bool = True
    allow_wildcard: bool = True
    allow_empty_wildcard: bool = True
    create_dest_path: bool = True
    attempt_unpack: bool = False
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    required_paths: tuple[str, ...] = ()
    mtime: int | None = None
    # "patternmatcher" with --exclude: how the patterns read (moby/patternmatcher since
    # issue 15), so a result made under the older fnmatch reading is never reused
    exclude_syntax: str = added_later("")


@frozen
class MkdirAction:
    path: str
    mode: int = 0o755
    parents: bool = True
    chown: Chown | None = None
    mtime: int | None = None


@frozen
class MkfileAction:
    path: str
    data: str
    mode: int = 0o644
    chown: Chown | None = None
    mtime: int | None = None


@frozen
class RmAction:
    path: str
    allow_not_found: bool = True


FileAction = Union[CopyAction, MkdirAction, MkfileAction, RmAction]


@frozen
class FileOp:
    base: str | None  # digest of the op whose result is changed; None for scratch
    actions: tuple[FileAction, ...]
    ignore_cache: bool = cache_neutral(False)

    def inputs(self) -> tuple[str, ...]:
        own = (self.base,) if self.base else ()
        return own + tuple(a.source for a in self.actions if isinstance(a, CopyAction) and a.source)


@frozen
class MergeOp:
    """Layers stacked on each other (COPY --link): ``layers`` bottom first."""

    layers: tuple[str, ...]

    def inputs(self) -> tuple[str, ...]:
        return self.layers


Op = Union[ImageSource, LocalSource, HttpSource, GitSource, ExecOp, FileOp, MergeOp]


def op_digest(op: Op) -> str:
    return digest_of(op)


@frozen
class OpMeta:
    """What is shown about an op; never part of its digest."""

    description: str
    stage: str | None = None
    span: tuple[int, int] | None = None
    step: tuple[int, int] | None = None  # (index, total) within its stage, as BuildKit's [2/4]
    internal: bool = False  # e.g. "load build context"
    args: frozenset[str] = frozenset()  # ARG names in scope (to explain cache misses)
