"""What dag asks of "the layer of a snapshot", and a fake of it.

``oci.SnapshotLayers`` satisfies ``SnapshotLayerStore``; the records behind
it stay private to ``oci``.  ``MemorySnapshotLayers`` is the fake for tests
that have no image store, and ``check_snapshot_layers`` is the behaviour
both must have.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pybuild.oci import Layer


@runtime_checkable
class SnapshotLayerStore(Protocol):
    def diff_id(self, snapshot: str) -> str | None:
        """The diffID of the snapshot's layer, if its tar was ever written or adopted."""
        ...

    def adopt(self, snapshot: str, layer: Layer) -> None:
        """Make ``layer`` (its blob stored and checked) the snapshot's layer."""
        ...

    def layer(self, snapshot: str, compression: str | None, level: int | None = None, *, mtime: int | None = None) -> Layer:
        """The snapshot's layer in ``compression`` (None: by reference); a remote one as it is."""
        ...

    def leave_remote(self, snapshot: str, layer: Layer, repository: str) -> None:
        """The snapshot's layer stays in the registry repository ``repository``."""
        ...

    def remote_only(self) -> Mapping[str, Layer]:
        """The layers left in a registry, by snapshot."""
        ...


_MEDIA_TYPES = {None: "application/vnd.oci.image.layer.v1.tar", "none": "application/vnd.oci.image.layer.v1.tar",
                "gzip": "application/vnd.oci.image.layer.v1.tar+gzip", "zstd": "application/vnd.oci.image.layer.v1.tar+zstd"}


class MemorySnapshotLayers:
    """The fake: a snapshot's layer tar is its name's bytes (``add`` says which exist)."""

    def __init__(self) -> None:
        self._snapshots: set[str] = set()
        self._diff_ids: dict[str, str] = {}
        self._adopted: dict[str, Layer] = {}
        self._remote: dict[str, Layer] = {}
        self.origins: dict[str, str] = {}  # blob digest -> repository

    def add(self, snapshot: str) -> None:
        self._snapshots.add(snapshot)

    def diff_id(self, snapshot: str) -> str | None:
        return self._diff_ids.get(snapshot)

    def adopt(self, snapshot: str, layer: Layer) -> None:
        self._adopted[snapshot] = layer
        self._diff_ids[snapshot] = layer.diff_id
        self._remote.pop(snapshot, None)

    def layer(self, snapshot: str, compression: str | None, level: int | None = None, *, mtime: int | None = None) -> Layer:
        from pybuild.oci import Layer

        if snapshot in self._remote:
            return self._remote[snapshot]
        if snapshot in self._adopted:
            return self._adopted[snapshot]
        if snapshot not in self._snapshots:
            from pybuild.errors import NotFound

            raise NotFound(f"no snapshot {snapshot}")
        tar = f"{snapshot}|{mtime}".encode()
        diff_id = _digest(tar)
        self._diff_ids.setdefault(snapshot, diff_id)
        if compression in (None, "none"):
            return Layer(diff_id, diff_id, len(tar), _MEDIA_TYPES[None])
        blob = f"{compression}:{level}:".encode() + tar
        return Layer(diff_id, _digest(blob), len(blob), _MEDIA_TYPES[compression])

    def leave_remote(self, snapshot: str, layer: Layer, repository: str) -> None:
        self.origins[layer.digest] = repository
        self._remote[snapshot] = layer

    def remote_only(self) -> Mapping[str, Layer]:
        return MappingProxyType(dict(self._remote))


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_snapshot_layers(make: Callable[[], tuple[SnapshotLayerStore, str, Layer]]) -> None:
    """Behaviour every ``SnapshotLayerStore`` must have.

    ``make()`` gives a fresh store, the id of a snapshot that exists (with
    some files), and a gzip layer whose blob is stored but which no snapshot
    has yet.
    """
    layers, snapshot, fetched = make()
    _expect(isinstance(layers, SnapshotLayerStore), "implements the SnapshotLayerStore protocol")
    _expect(layers.diff_id(snapshot) is None, "a snapshot whose tar was never written has no diffID yet")
    plain = layers.layer(snapshot, None)
    _expect(plain.digest == plain.diff_id and plain.media_type.endswith(".tar"), "a layer by reference is its plain tar")
    _expect(layers.diff_id(snapshot) == plain.diff_id, "writing the tar records its diffID")
    gzip = layers.layer(snapshot, "gzip")
    _expect(gzip.diff_id == plain.diff_id and gzip.digest != plain.digest, "a compressed layer keeps the diffID")
    _expect(gzip.media_type.endswith("+gzip"), "a gzip layer says so")
    _expect(layers.layer(snapshot, "gzip") == gzip, "a layer asked for twice is the same value")

    adopted = "f" * 64
    layers.adopt(adopted, fetched)
    _expect(layers.diff_id(adopted) == fetched.diff_id, "an adopted blob gives the snapshot its diffID")
    _expect(layers.layer(adopted, "gzip") == fetched, "an adopted blob is the snapshot's layer, as is")

    remote = "e" * 64
    _expect(dict(layers.remote_only()) == {}, "no layer is remote before one is left there")
    layers.leave_remote(remote, fetched, "registry.test/cache")
    left = layers.remote_only()
    _expect(dict(left) == {remote: fetched}, "a layer left in a registry is remote only")
    _expect(layers.layer(remote, "gzip") == fetched, "a remote layer is given as it is")
    try:
        left[remote] = gzip  # type: ignore[index]  # the check: the mapping refuses assignment
        raise AssertionError("remote_only() is a frozen view")
    except TypeError:
        pass
    layers.adopt(remote, fetched)
    _expect(dict(layers.remote_only()) == {}, "an adopted layer is no longer remote only")


def _expect(condition: object, what: str) -> None:
    if not condition:
        raise AssertionError(what)
