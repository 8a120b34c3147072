"""Layer chains named by diffID, as snapshots of the worker's own pybuild root.

A step's input arrives as the ordered diffIDs of its layers (bottom first).
Each prefix of that list is a chain (its chain ID, as an image's), and each
chain becomes one snapshot, unpacked once and kept between Actions, exactly
as a pulled image's layers become snapshots: named by the chain ID's hex and
recorded with ``ImageStore.remember_chain``, so a pulled image, a step this
worker ran and a chain an earlier Action brought all serve each other.

A layer tar is downloaded only when its chain has no snapshot here yet, is
checked by digest while it downloads (the remote client refuses a blob that
does not hash to its name), and is applied with ``oci.apply_layer``, the
project's safe layer code, which is checked again against the diffID.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pybuild.errors import BuildError

if TYPE_CHECKING:
    from pybuild.cache import Lease, Root
    from pybuild.oci import ImageStore

# Bring the tar of the layer with this diffID to this path (verified, atomic).
FetchLayer = Callable[[str, Path], None]


class LayerChains:
    """Turns diffID chains into snapshot chains (top first) in one root; thread-safe."""

    def __init__(self, root: Root, store: ImageStore) -> None:
        self.root = root
        self.store = store
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self.downloaded = 0  # layer tars fetched so far (tests and the log read it)

    def snapshots(self, diff_ids: Sequence[str], fetch: FetchLayer, lease: Lease) -> tuple[str, ...]:
        """The snapshots of ``diff_ids`` (bottom first), top first; missing ones unpacked."""
        from pybuild.oci import chain_ids

        ids = chain_ids(list(diff_ids))
        have, below = self._longest(ids, lease)
        if have == len(ids):
            return below
        # only the layers above the longest chain here are unpacked (or found: another step may
        # have made them meanwhile), each on the one below
        chain = list(reversed(below))
        parent = chain[-1] if chain else None
        for diff_id, chain_id in zip(diff_ids[have:], ids[have:]):
            snapshot = self._snapshot(diff_id, chain_id, parent, fetch, lease)
            chain.append(snapshot)
            parent = snapshot
        return tuple(reversed(chain))

    def _longest(self, ids: Sequence[str], lease: Lease) -> tuple[int, tuple[str, ...]]:
        """The longest of the chains ``ids`` (bottom first) this root has: its length and
        snapshots (top first). Walked down from the top, one index lookup per depth until the
        first hit, whose one walk gives the snapshots below it too (checking every depth with
        ``exists``, which walks its parents, cost depth² reads)."""
        for depth in range(len(ids), 0, -1):
            found = self._whole(ids[depth - 1], depth, lease)
            if found is not None:
                return depth, found
        return 0, ()

    def remember(self, diff_ids: Sequence[str], snapshots_top_first: Sequence[str]) -> None:
        """A step's new layer on its input chain: later Actions naming that chain use the snapshot."""
        self.store.remember_chain(list(diff_ids), list(reversed(snapshots_top_first)))

    def _whole(self, chain_id: str, length: int, lease: Lease) -> tuple[str, ...] | None:
        """The chain's snapshots (top first) when its top is here, else None.

        A chain's snapshot has the snapshots of its shorter chains as parents (every
        snapshot is committed on its parent chain's), so one walk down from the top
        finds them all: a step on a long chain costs one walk, not one per layer."""
        from pybuild.errors import StoreError

        top = self.store.snapshot_of_chain(chain_id)
        if top is None:
            return None
        try:
            chain = self.root.snapshots.chain(top)
        except StoreError:  # pruned meanwhile: made again layer by layer
            return None
        if len(chain) != length:
            return None
        lease.add(list(chain))  # leased, then checked again: a prune either kept them or took them
        return chain if self.root.snapshots.exists(top) else None

    def _snapshot(self, diff_id: str, chain_id: str, parent: str | None, fetch: FetchLayer, lease: Lease) -> str:
        with self._guard:
            lock = self._locks.setdefault(chain_id, threading.Lock())
        with lock:  # two steps on one new chain unpack it once
            existing = self.store.snapshot_of_chain(chain_id)
            if existing is not None:
                lease.add([existing])  # leased, then checked again: a prune either kept it or took it
                if self.root.snapshots.exists(existing):
                    return existing
            snapshot = chain_id.split(":", 1)[1]
            lease.add([snapshot])
            self._unpack(diff_id, snapshot, parent, fetch)  # named by the chain ID: found by it next time
            return snapshot

    def _unpack(self, diff_id: str, snapshot: str, parent: str | None, fetch: FetchLayer) -> None:
        from pybuild.oci import apply_layer, unpack_limit

        staging = self.root.tmp_dir("bot-layer-")
        tar = staging / "layer.tar"
        active = self.root.snapshots.new_active()
        try:
            fetch(diff_id, tar)
            self.downloaded += 1
            with open(tar, "rb") as stream:
                stats = apply_layer(stream, Path(active.upper), size_budget=unpack_limit(os.path.getsize(tar)))
            if stats.diff_id and stats.diff_id != diff_id:
                raise BuildError(f"layer {diff_id} unpacks to {stats.diff_id}")
        except BaseException:
            self.root.snapshots.discard(active)
            raise
        finally:
            _remove(staging)
        self.root.snapshots.commit(active, parent, snapshot_id=snapshot)


def _remove(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
