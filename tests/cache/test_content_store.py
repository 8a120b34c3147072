"""The file content store keeps a small blob it already holds instead of replacing it."""

from __future__ import annotations

import os

from pybuild.cache import Root


def test_a_small_blob_stored_again_keeps_its_file(root: Root) -> None:
    """An export writes the image config again at every build: the stored file (its inode, which
    the no-op fast path records) stays, and no temp file is left behind."""
    digest = root.blobs.put(b'{"config": 1}')
    path = root.blobs.path(digest)
    assert path is not None
    before = os.stat(path)
    assert root.blobs.put(b'{"config": 1}') == digest
    after = os.stat(path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert root.blobs.open(digest).read() == b'{"config": 1}'


def test_a_damaged_small_blob_is_replaced_when_stored_again(root: Root) -> None:
    digest = root.blobs.put(b"the right bytes")
    path = root.blobs.path(digest)
    assert path is not None
    path.write_bytes(b"the wrong bytes")
    assert root.blobs.put(b"the right bytes") == digest
    assert path.read_bytes() == b"the right bytes"
    assert root.blobs.verify(digest)


def test_a_symlink_in_a_blobs_place_is_replaced_not_followed(root: Root) -> None:
    digest = root.blobs.put(b"linked")
    path = root.blobs.path(digest)
    assert path is not None
    elsewhere = root.path / "elsewhere"
    elsewhere.write_bytes(b"linked")
    path.unlink()
    path.symlink_to(elsewhere)
    assert root.blobs.put(b"linked") == digest
    assert not path.is_symlink()
    assert path.read_bytes() == b"linked"
