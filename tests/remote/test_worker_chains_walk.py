"""``LayerChains.snapshots`` (dag/bot/_chains.py) when the top chain is not here: the longest
chain the root has is found walking down from the top (one index lookup per depth, stopping at
the first hit, one parent walk), and only the layers above it are unpacked. Counted on a fake
root whose ``exists`` walks the parent chain as the real one does; the snapshots are those the
layer-by-layer answer (every chain looked up and checked) gives."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pybuild.dag.bot._chains import LayerChains
from pybuild.errors import StoreError
from pybuild.oci import chain_ids


class Snapshots:
    def __init__(self) -> None:
        self.parents: dict[str, str | None] = {}
        self.reads = 0  # parent records read

    def parent(self, snapshot: str) -> str | None:
        self.reads += 1
        if snapshot not in self.parents:
            raise StoreError(f"no snapshot {snapshot}")
        return self.parents[snapshot]

    def chain(self, snapshot: str) -> tuple[str, ...]:
        ids: list[str] = []
        current: str | None = snapshot
        while current is not None:
            ids.append(current)
            current = self.parent(current)
        return tuple(ids)

    def exists(self, snapshot: str) -> bool:
        try:
            self.chain(snapshot)
        except StoreError:
            return False
        return True


class Root:
    def __init__(self) -> None:
        self.snapshots = Snapshots()


class Store:
    def __init__(self) -> None:
        self.by_chain: dict[str, str] = {}
        self.lookups = 0

    def snapshot_of_chain(self, chain_id: str) -> str | None:
        self.lookups += 1
        return self.by_chain.get(chain_id)


class Lease:
    def add(self, snapshots: list[str]) -> None:
        pass


def _diff_ids(count: int) -> list[str]:
    return ["sha256:" + hashlib.sha256(f"layer {n}".encode()).hexdigest() for n in range(count)]


def _chains(have: int, depth: int) -> tuple[LayerChains, Store, Root, list[str], list[str]]:
    """A root holding the lowest ``have`` chains of ``depth`` layers (snapshots named "s<n>")."""
    root, store = Root(), Store()
    diff_ids = _diff_ids(depth)
    ids = chain_ids(diff_ids)
    for n in range(have):
        root.snapshots.parents[f"s{n}"] = f"s{n - 1}" if n else None
        store.by_chain[ids[n]] = f"s{n}"
    chains = LayerChains(root, store)  # type: ignore[arg-type]
    unpacked: list[str] = []

    def unpack(diff_id: str, snapshot: str, parent: str | None, fetch: object) -> None:
        unpacked.append(diff_id)
        root.snapshots.parents[snapshot] = parent

    chains._unpack = unpack  # type: ignore[method-assign]
    return chains, store, root, diff_ids, unpacked


def _layer_by_layer(store: Store, root: Root, diff_ids: list[str]) -> tuple[str, ...]:
    """The answer before: each chain's recorded snapshot if it exists, else one named by the chain ID."""
    chain = []
    for chain_id in chain_ids(diff_ids):
        existing = store.by_chain.get(chain_id)
        chain.append(existing if existing is not None and root.snapshots.exists(existing) else chain_id.split(":", 1)[1])
    return tuple(reversed(chain))


@pytest.mark.parametrize(("have", "depth"), [(0, 5), (1, 5), (20, 30), (39, 40), (40, 40)])
def test_the_snapshots_are_the_layer_by_layer_ones(have: int, depth: int) -> None:
    chains, store, root, diff_ids, unpacked = _chains(have, depth)
    expected = _layer_by_layer(store, root, diff_ids)
    got = chains.snapshots(diff_ids, lambda d, p: None, Lease())  # type: ignore[arg-type]
    assert got == expected
    assert unpacked == diff_ids[have:]  # only the layers above the longest chain here
    assert root.snapshots.chain(got[0]) == got  # each on the one below


def test_one_lookup_per_depth_down_to_the_longest_chain_and_one_walk() -> None:
    chains, store, root, diff_ids, unpacked = _chains(30, 40)
    chains.snapshots(diff_ids, lambda d, p: None, Lease())  # type: ignore[arg-type]
    # 11 lookups walking down from depth 40 to 30, then one per new layer (made meanwhile by another step?)
    assert store.lookups == 11 + 10
    # one walk of the 30 found and one check of their top: not one walk per depth (30·31/2 reads)
    assert root.snapshots.reads == 2 * 30
    assert len(unpacked) == 10


def test_a_pruned_lower_snapshot_is_skipped_for_a_shorter_chain() -> None:
    chains, store, root, diff_ids, unpacked = _chains(10, 12)
    del root.snapshots.parents["s7"]  # chains 8..10 are recorded but broken
    expected = _layer_by_layer(store, root, diff_ids)
    got = chains.snapshots(diff_ids, lambda d, p: None, Lease())  # type: ignore[arg-type]
    assert got == expected and unpacked == diff_ids[7:]
