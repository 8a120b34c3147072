"""``finish_copy``'s copies in parts run at once (``spread``): the very tree copying them
in turn makes, and a failure in any part is a ``ReuseFailed`` (everything copied again)."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pybuild.dag import _copy_reuse
from pybuild.dag._fileops import CopyReport

from .test_copy_reuse import diff_id

pytestmark = pytest.mark.usefixtures("require_root")

MTIME = 1_600_000_000_123_456_789
EPOCH = 1_700_000_000


def _context(context: Path, count: int) -> CopyReport:
    """``count`` files in nested directories and the report of a copy of them into ``/app``."""
    files, dirs = {}, [("/app", 0o755, 0, 0, MTIME)]
    for i in range(count):
        origin = f"d{i % 3}/e{i % 5}/f{i}.bin"
        path = context / origin
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(i * 37 % 3000))
        files[origin] = (f"/app/{origin}", 0o640 if i % 2 else 0o755, i % 4, 0, MTIME + i, path.stat().st_size)
    for origin in sorted({os.path.dirname(o) for o in files} | {o.split("/")[0] for o in files}):
        dirs.append((f"/app/{origin}", 0o750, 0, 0, MTIME - 7))
    return CopyReport(files, (), tuple(dirs), tuple(files))


class Threads:
    """A spread that runs each job in a thread of its own, and counts them."""

    def __init__(self) -> None:
        self.jobs = 0

    def __call__(self, jobs: list[Callable[[], None]]) -> None:
        self.jobs += len(jobs)
        threads = [threading.Thread(target=job) for job in jobs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def test_spread_copies_make_the_tree_copies_in_turn_make(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    report = _context(context, 300)
    for name in ("turn", "spread"):
        (tmp_path / name).mkdir()
    _copy_reuse.finish_copy(None, tmp_path / "turn", context, report, durable=False)
    spread = Threads()
    _copy_reuse.finish_copy(None, tmp_path / "spread", context, report, durable=False, spread=spread)
    assert spread.jobs == _copy_reuse.PARTS
    assert diff_id(tmp_path / "spread") == diff_id(tmp_path / "turn")
    st = os.stat(tmp_path / "spread" / "app" / "d1" / "e1" / "f1.bin")
    assert (st.st_mode & 0o7777, st.st_uid, st.st_mtime_ns) == (0o640, 1, MTIME + 1)


def test_few_copies_are_not_spread(tmp_path: Path) -> None:
    report = _context(tmp_path / "ctx", 10)
    (tmp_path / "upper").mkdir()
    spread = Threads()
    _copy_reuse.finish_copy(None, tmp_path / "upper", tmp_path / "ctx", report, durable=False, spread=spread)
    assert spread.jobs == 0
    assert len(list((tmp_path / "upper").rglob("*.bin"))) == 10


def test_a_part_that_fails_fails_the_reuse(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    report = _context(context, 200)
    last = sorted(report.copies)[-1]
    (context / last).unlink()
    os.mkfifo(context / last)  # no longer a regular file: that part fails
    (tmp_path / "upper").mkdir()
    with pytest.raises(_copy_reuse.ReuseFailed, match="no longer a regular file"):
        _copy_reuse.finish_copy(None, tmp_path / "upper", context, report, durable=False, spread=Threads())


def test_parts_cover_every_copy_once_in_order() -> None:
    copies = [(f"d/f{i}", (f"/x/f{i}", 0o644, 0, 0, 0, (i * 7919) % 100_000)) for i in range(1_000)]
    parts = _copy_reuse._split(copies, 4)
    assert len(parts) == 4
    assert [copy for part in parts for copy in part] == copies
    costs = [sum(facts[5] + _copy_reuse._FILE_WEIGHT for _, facts in part) for part in parts]
    assert max(costs) < 1.2 * min(costs)
    assert _copy_reuse._split(copies[:1], 4) == [copies[:1]]
    assert _copy_reuse._split([], 4) == []


async def test_a_worker_spreads_a_big_copy_over_the_cpu_limiter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.dag import _worker

    from .test_copy_reuse import Builder

    context = tmp_path / "ctx"
    for i in range(150):
        (context / "src" / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (context / "src" / f"d{i % 4}" / f"f{i}.txt").write_bytes(os.urandom(i * 13))
    spread_jobs: list[int] = []
    original = _worker._spread_from_thread

    def counted(jobs: list[Callable[[], None]]) -> None:
        spread_jobs.append(len(jobs))
        original(jobs)

    monkeypatch.setattr(_worker, "_spread_from_thread", counted)
    dockerfile = "FROM scratch\nCOPY src/ /app/\n"
    builder = Builder(tmp_path / "root", context)
    try:
        await builder.build(dockerfile)
        for path in (context / "src").rglob("*.txt"):
            os.utime(path, ns=(2_000_000_000, 2_000_000_000))  # nothing can be linked: every file copied again
        (context / "src" / "d0" / "f0.txt").write_bytes(b"changed")  # else the step is cached
        os.utime(context / "src" / "d0" / "f0.txt", ns=(2_000_000_000, 2_000_000_000))
        tree = builder.tree((await builder.build(dockerfile))[-1])
    finally:
        builder.close()
    assert spread_jobs == [_copy_reuse.PARTS, _copy_reuse.PARTS]
    assert os.stat(tree / "app" / "d1" / "f5.txt").st_nlink == 1  # copied, not linked
    classic = Builder(tmp_path / "classic" / "root", context, classic=True)
    try:
        full = classic.tree((await classic.build(dockerfile))[-1])
        # the directory a copy makes has the time of its last entry: only a clamp makes two copies equal
        assert diff_id(tree, EPOCH) == diff_id(full, EPOCH)
    finally:
        classic.close()


def test_a_safe_target_is_what_splitting_it_says() -> None:
    def by_split(target: str) -> bool:
        parts = target.split("/")
        return len(parts) > 1 and parts[0] == "" and all(p not in ("", ".", "..") and "\0" not in p for p in parts[1:])

    pieces = ["", "/", "//", ".", "..", "...", "a", ".a", "a.", "..a", "\0", "a\0b", "b c"]
    for count in range(1, 5):
        for combination in itertools.product(pieces, repeat=count):
            target = "".join(combination)
            assert _copy_reuse._safe_target(target) == by_split(target), repr(target)


def test_a_copy_chowns_unless_the_directory_gives_the_owner_itself(tmp_path: Path) -> None:
    """A new file takes the creator's uid and the directory's gid (set-group-ID) or the
    creator's: the chown is left out only when both are the ones the file must have."""
    plain, shared = tmp_path / "plain", tmp_path / "shared"
    plain.mkdir()
    shared.mkdir()
    os.chown(shared, 0, 5)
    os.chmod(shared, 0o2775)  # its files get gid 5
    ids = (os.geteuid(), os.getegid())
    fds = [os.open(path, os.O_RDONLY | os.O_DIRECTORY) for path in (plain, shared)]
    try:
        assert _copy_reuse._new_file_ids(fds[0], ids) == ids
        assert _copy_reuse._new_file_ids(fds[1], ids) is None
    finally:
        for fd in fds:
            os.close(fd)
    context = tmp_path / "ctx"
    report = _context(context, 100)
    upper = tmp_path / "upper"
    (upper / "app").mkdir(parents=True)
    os.chown(upper / "app", 0, 5)
    os.chmod(upper / "app", 0o2755)  # made dirs below inherit the bit and gid 5
    report = CopyReport(report.files, (), report.dirs[1:], report.copies)  # /app is there already
    _copy_reuse.finish_copy(None, upper, context, report, durable=False, spread=Threads())
    for origin, (target, _, uid, gid, _, _) in report.files.items():
        st = os.stat(upper / target.lstrip("/"))
        assert (st.st_uid, st.st_gid) == (uid, gid), origin


def test_a_file_at_the_top_of_the_context_is_copied(tmp_path: Path) -> None:
    """``COPY . /app/``: a file's origin has no directory (it was looked up as "/" before: a full copy every time)."""
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "top.txt").write_bytes(b"top")
    report = CopyReport({"top.txt": ("/app/top.txt", 0o644, 0, 0, MTIME, 3)}, (), (("/app", 0o755, 0, 0, MTIME),), ("top.txt",))
    (tmp_path / "upper").mkdir()
    _copy_reuse.finish_copy(None, tmp_path / "upper", context, report, durable=False)
    assert (tmp_path / "upper" / "app" / "top.txt").read_bytes() == b"top"
    assert os.stat(tmp_path / "upper" / "app" / "top.txt").st_mtime_ns == MTIME
