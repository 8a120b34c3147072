"""``write_layer`` hands its chunks to ``out.write`` from a thread of its own after the first
(``_Pipe``): the same bytes in the same order as writing them in turn, the writer's error
raised to the caller, and no thread for a layer of one chunk."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.oci import _layers
from pybuild.oci._layers import CHUNK, write_layer


def _tree(root: Path, files: int, size: int) -> Path:
    for i in range(files):
        directory = root / f"d{i % 7}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i}").write_bytes(os.urandom(size if i % 5 else size * 3))
        os.utime(directory / f"f{i}", ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    (root / "big").write_bytes(os.urandom(3 * CHUNK + 17))  # streamed in pieces
    for path in [root, *root.glob("d*")]:
        os.utime(path, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))
    return root


class Slow:
    """A sink that takes its time and notes which threads wrote to it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.threads: set[str] = set()

    def write(self, data: bytes) -> int:
        self.threads.add(threading.current_thread().name)
        time.sleep(0.001)
        self.data += data
        return len(data)


def _in_turn(tree: Path) -> bytes:
    """The layer as the walk alone writes it (``_Pipe`` replaced by writing in turn)."""
    out = io.BytesIO()
    writer = _layers._Writer(out, None)  # type: ignore[arg-type]  # it only calls write
    writer.run(os.fsencode(tree))
    return out.getvalue()


def test_piped_chunks_are_the_bytes_in_their_order(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", 400, 20_000)
    sink = Slow()
    stats = write_layer(tree, sink)  # type: ignore[arg-type]  # it only writes
    assert "layer-writer" in sink.threads
    assert bytes(sink.data) == _in_turn(tree)
    assert stats.tar_bytes == len(sink.data)
    names = tarfile.open(fileobj=io.BytesIO(bytes(sink.data))).getnames()
    assert names == sorted(names, key=lambda n: n.split("/")) and "big" in names
    assert hashlib.sha256(sink.data).digest() == hashlib.sha256(_in_turn(tree)).digest()


def test_a_small_layer_is_written_without_a_thread(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "tree", 5, 100)
    (tree / "big").unlink()
    sink = Slow()
    write_layer(tree, sink)  # type: ignore[arg-type]  # it only writes
    assert sink.threads == {threading.current_thread().name}
    assert bytes(sink.data) == _in_turn(tree)


class Failing:
    def __init__(self, after: int) -> None:
        self.left = after

    def write(self, data: bytes) -> int:
        self.left -= 1
        if self.left < 0:
            raise StoreError("the blob store is full")
        return len(data)


@pytest.mark.parametrize("after", [0, 1, 3])
def test_the_writers_error_reaches_the_caller_and_no_thread_is_left(tmp_path: Path, after: int) -> None:
    tree = _tree(tmp_path / "tree", 400, 20_000)
    before = threading.active_count()
    with pytest.raises(StoreError, match="full"):
        write_layer(tree, Failing(after))  # type: ignore[arg-type]  # it only writes
    assert threading.active_count() == before
