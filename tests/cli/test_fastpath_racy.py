"""The fast path's racy rule and the context hasher's agree: a file the hasher knows by its
stat alone (so the build reads no content of it) is never racy in the record, which would
leave the fast path nothing to check it by (it then missed until the file was a second old)."""

from __future__ import annotations

import random
from array import array

from pybuild.cache._context import settled_before
from pybuild.cli import _fastpath

SINCE = 1_700_000_000_123_456_789
MS = 1_000_000


def _racy(mtime: int, ctime: int) -> bool:
    sigs = array("q", [1, 2, 3, mtime, ctime, 0o100644])
    return list(_fastpath.racy_indices(sigs, 1, SINCE)) == [0]


def test_a_nanosecond_ctime_settles_after_the_fine_window() -> None:
    fine = SINCE - 60 * MS + 123  # digits below the millisecond: a file system keeping nanoseconds
    assert not _racy(fine, fine)
    assert _racy(SINCE - 10 * MS + 7, SINCE - 10 * MS + 7)


def test_a_whole_millisecond_ctime_needs_a_second() -> None:
    coarse = SINCE - SINCE % MS - 60 * MS
    assert _racy(coarse, coarse)
    old = SINCE - SINCE % MS - 2_000 * MS
    assert not _racy(old, old)


def test_an_mtime_after_the_window_is_racy_whatever_the_ctime() -> None:
    fine = SINCE - 60 * MS + 123
    assert _racy(SINCE + 5_000 * MS, fine)


def test_every_ctime_the_hasher_settles_is_not_racy_and_the_others_are() -> None:
    rng = random.Random(18)
    for _ in range(5_000):
        ctime = SINCE - rng.randrange(0, 3_000 * MS)
        if rng.random() < 0.5:
            ctime -= ctime % MS  # whole milliseconds
        settled = settled_before(ctime, SINCE - 1_000 * MS, SINCE - 50 * MS)
        assert _racy(ctime, ctime) == (not settled), ctime
