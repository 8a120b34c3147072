"""Several processes on one root, and processes killed at random points."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

from pybuild.cache import CacheIndex, Root

from .conftest import run_child

_SAME_BLOB = """
import sys, os, time
from pybuild.cache import Root
root = Root.open(sys.argv[1])
data = bytes(range(256)) * 4096 * 4          # 4 MiB, the same in every writer
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
with root.blobs.writer(expected_size=len(data)) as w:
    for i in range(0, len(data), 65536):
        w.write(data[i:i + 65536])
    print(w.commit(), flush=True)
"""


def test_processes_writing_the_same_blob(tmp_path: Path) -> None:
    path = tmp_path / "r"
    Root.open(path).close()
    start = time.time() + 1.0
    children = [run_child(_SAME_BLOB, str(path), str(start), stdout=-1, text=True) for _ in range(4)]
    outputs = [c.communicate(timeout=60)[0].strip() for c in children]
    assert [c.returncode for c in children] == [0, 0, 0, 0]
    expected = "sha256:" + hashlib.sha256(bytes(range(256)) * 4096 * 4).hexdigest()
    assert outputs == [expected] * 4
    with Root.open(path) as root:
        assert [d for d, _ in root.blobs.list()] == [expected]
        assert root.blobs.verify(expected)
    assert Root.temp_contents(path) == []


_SAME_SNAPSHOT = """
import sys, time
from pybuild.cache import Root
root = Root.open(sys.argv[1])
active = root.snapshots.new_active()
for i in range(200):
    (active.upper / f"file{i}").write_text(sys.argv[3])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
print(root.snapshots.commit(active, None, "shared-id"), flush=True)
"""


def test_processes_committing_the_same_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "r"
    Root.open(path).close()
    start = time.time() + 1.0
    children = [run_child(_SAME_SNAPSHOT, str(path), str(start), f"writer{n}", stdout=-1, text=True) for n in range(4)]
    outputs = [c.communicate(timeout=60)[0].strip() for c in children]
    assert [c.returncode for c in children] == [0, 0, 0, 0]
    assert outputs == ["shared-id"] * 4
    with Root.open(path) as root:
        assert root.snapshots.list() == ["shared-id"]
        tree = root.snapshots.tree("shared-id")
        contents = {(tree / f"file{i}").read_text() for i in range(200)}
        assert len(contents) == 1, "one writer's tree, whole, not a mix"
    assert Root.temp_contents(path) == []


_BUSY = """
import os, random, sys
from pybuild.cache import BlobRef, CacheRecord, Root
root = Root.open(sys.argv[1])
rng = random.Random(int(sys.argv[2]))
n = 0
while True:
    n += 1
    size = rng.choice([0, 10, 70_000, 1_500_000])
    with root.blobs.writer() as w:
        for _ in range(0, size, 65536):
            w.write(os.urandom(min(65536, size)))
        digest = w.commit()
    active = root.snapshots.new_active()
    for i in range(rng.randrange(1, 40)):
        (active.upper / f"f{i}").write_bytes(os.urandom(rng.randrange(1, 5000)))
    snap = root.snapshots.commit(active, None)
    root.index.record(f"key-{sys.argv[2]}-{n}", CacheRecord(snap, None, {"gzip": BlobRef(digest, size, "gz")}))
    root.index.put_stat_digests([((1, n, 1, 1, 1), digest)])
"""


def test_kill_9_at_random_points_leaves_a_trustworthy_root(tmp_path: Path) -> None:
    path = tmp_path / "r"
    Root.open(path).close()
    rng = random.Random(1234)
    for round_number in range(6):
        child = run_child(_BUSY, str(path), str(round_number))
        time.sleep(0.3 + rng.random() * 0.7)
        child.send_signal(signal.SIGKILL)
        child.wait()

        with Root.open(path) as root:
            # no temp debris of the dead process
            assert Root.temp_contents(path) == [], f"round {round_number}: stale temp state"
            # every blob there is whole
            blobs = list(root.blobs.list())
            for digest, _ in blobs:
                assert root.blobs.verify(digest), f"round {round_number}: corrupt blob {digest}"
            # every snapshot there is complete
            for snapshot_id in root.snapshots.list():
                assert root.snapshots.exists(snapshot_id), f"round {round_number}: half snapshot {snapshot_id}"
            # every record points at things that are there
            for key, rec in root.index.records():
                assert rec.snapshot_id is not None and root.snapshots.exists(rec.snapshot_id), key
                assert all(root.blobs.has(b.digest) for b in rec.blobs.values()), key
    conn = sqlite3.connect(path / "index.db")
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert conn.execute("SELECT count(*) FROM cache_records").fetchone()[0] > 0, "the children made progress"
    conn.close()


_LEASE_AND_WAIT = """
import sys, time
from pybuild.cache import CacheIndex
index = CacheIndex(sys.argv[1])
lease = index.new_lease(["snap-held", "sha256:" + "a" * 64])
print("leased", flush=True)
time.sleep(60)
"""


def test_leases_of_dead_processes_expire(tmp_path: Path) -> None:
    db = tmp_path / "index.db"
    CacheIndex(db).close()
    child = run_child(_LEASE_AND_WAIT, str(db), stdout=-1, text=True)
    try:
        assert child.stdout.readline().strip() == "leased"
        index = CacheIndex(db)
        with index.lease(["mine"]):
            assert index.leased() == {"snap-held", "sha256:" + "a" * 64, "mine"}
            child.send_signal(signal.SIGKILL)
            child.wait()
            assert index.leased() == {"mine"}, "the dead process's lease expired, ours did not"
        index.close()
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
