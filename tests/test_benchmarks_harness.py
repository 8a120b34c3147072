"""The benchmark harness's own logic (benchmarks/rss.py, run_all.py's report): no engine runs.

What a benchmark measures is checked by running it; these check that the peak RSS of a
process tree sees every process of the tree, and that the report's verdicts follow the
targets, so a run cannot report a target met that was missed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
_saved_path = list(sys.path)
sys.path.insert(0, str(BENCHMARKS))
try:
    import rss
    import run_all
finally:  # benchmarks/ holds modules named parse, graph, export: not for the rest of the suite
    sys.path[:] = _saved_path

MIB = 2**20
# Allocate and touch a block, say so with a file in DIR, wait (up to 30 s) until both
# processes have, and hold the block a while: the two blocks are resident at once.
ALLOCATE = (
    "import os, time; block = bytearray({size}); block[::4096] = b'x' * len(block[::4096]); "
    "open(os.path.join({where!r}, str(os.getpid())), 'w').close(); deadline = time.time() + 30\n"
    "while len(os.listdir({where!r})) < 2 and time.time() < deadline: time.sleep(0.01)\n"
    "time.sleep(0.5)"
)


def python_holding(megabytes: int, where: Path) -> str:
    return f"{sys.executable} -c \"{ALLOCATE.format(size=megabytes * MIB, where=str(where))}\""


def test_peak_rss_sums_every_process_of_the_tree(tmp_path: Path) -> None:
    # two grandchildren at once (through a shell): the peak holds both blocks
    result = rss.measure(["sh", "-c", f"{python_holding(120, tmp_path)} & {python_holding(80, tmp_path)} & wait"])
    assert result.returncode == 0
    assert result.peak.rss >= 200 * MIB
    assert result.peak.rss < 400 * MIB
    assert result.peak.anon >= 200 * MIB  # the blocks are anonymous memory


def test_file_pages_mapped_count_in_rss_but_not_in_anon(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_bytes(b"x" * (100 * MIB))
    code = f"import mmap, time; f = open({str(data)!r}, 'rb'); m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ); m[::4096]; time.sleep(0.5)"
    result = rss.measure([sys.executable, "-c", code])
    assert result.peak.rss >= 100 * MIB
    assert result.peak.anon < 60 * MIB


def test_peak_rss_of_one_process_is_its_own_not_its_parents() -> None:
    # held for 0.3 s, many samples long; the measuring process's own size (large late in a test
    # run) must not leak in, as it would through ru_maxrss (an exec keeps the pre-exec mm's mark)
    ballast = bytearray(300 * MIB)
    ballast[::4096] = b"x" * len(ballast[::4096])
    result = rss.measure([sys.executable, "-c", f"import time; b = bytearray({150 * MIB}); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.3)"])
    assert 150 * MIB <= result.peak.rss < 300 * MIB
    del ballast


def test_measure_returns_the_exit_status_and_output() -> None:
    result = rss.measure(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert result.seconds > 0


class FakeDriver:
    """What run_table reads of a Driver."""

    def __init__(self, runs: dict[str, list[float | None]], rss: list[rss.Peak | None], target: float, rss_target: int | None = None) -> None:
        self.run_times = {"row": runs}
        self.rss = {"row": rss}
        self.targets = {"row": target}
        self.rss_targets = {"row": rss_target} if rss_target is not None else {}


def verdicts(table: str) -> list[str]:
    """The `met` cell of each line of the table, the header left out."""
    return [line.split("|")[-3].strip() for line in table.splitlines()[2:]]


@pytest.mark.parametrize(
    ("pybuild", "buildkit", "target", "expected"),
    [
        ([1.0, 2.0, 0.4], [2.0, 1.0, 1.0], 1.0, ["yes", "**no**", "yes", "yes"]),  # median 1.0 / 1.0
        ([0.2, 0.2, 0.2], [0.5, 0.3, 0.4], 0.5, ["yes", "**no**", "yes", "yes"]),
    ],
)
def test_each_run_is_judged_by_its_own_ratio(pybuild: list[float], buildkit: list[float], target: float, expected: list[str]) -> None:
    driver = FakeDriver({"pybuild": pybuild, "buildkit": buildkit}, [None] * 3, target)
    medians = {"pybuild": sorted(pybuild)[1], "buildkit": sorted(buildkit)[1]}
    table, missed = run_all.run_table([("row", medians)], driver, ["pybuild", "buildkit"])
    assert verdicts(table) == expected
    assert missed == ["row (1 of 3 runs)"]


def test_a_peak_rss_over_its_target_misses_it() -> None:
    driver = FakeDriver({"pybuild": [1.0, 1.0], "buildkit": [2.0, 2.0]}, [rss.Peak(150 * MIB, 90 * MIB), rss.Peak(250 * MIB, 80 * MIB)], 1.0, 200 * MIB)
    table, missed = run_all.run_table([("row", {"pybuild": 1.0, "buildkit": 2.0})], driver, ["pybuild", "buildkit"])
    assert verdicts(table) == ["yes", "**no**", "**no**"]
    assert "| 250 MiB (anon 80 MiB) |" in table and "| highest 250 MiB (anon 90 MiB) |" in table
    assert missed == ["row (1 of 2 runs)"]


def test_without_buildkit_nothing_is_judged() -> None:
    driver = FakeDriver({"pybuild": [1.0]}, [None], 1.0)
    table, missed = run_all.run_table([("row", {"pybuild": 1.0})], driver, ["pybuild"])
    assert verdicts(table) == ["—", "—"]
    assert missed == []


def test_targets_are_issue_18s() -> None:
    assert run_all.DEFAULT_TARGET == 1.0
    assert {k: v for k, v in run_all.TARGETS.items()} == {
        "context.noop": 0.5, "context.touch": 0.5, "context.change": 0.5, "context.touch_change": 0.5,
    }
    assert run_all.RSS_TARGETS == {"context.cold": 200 * MIB}


def test_a_failed_run_keeps_the_others_paired_by_round() -> None:
    # BuildKit's second run failed: its third run still pairs with pybuild's third
    driver = FakeDriver({"pybuild": [1.0, 1.0, 1.0], "buildkit": [2.0, None, 0.5]}, [None] * 3, 1.0)
    table, missed = run_all.run_table([("row", {"pybuild": 1.0, "buildkit": 1.25})], driver, ["pybuild", "buildkit"])
    lines = table.splitlines()[2:]
    assert [line.split("|")[5].strip() for line in lines[:3]] == ["0.50", "—", "2.00"]
    assert verdicts(table) == ["yes", "—", "**no**", "yes"]
    assert missed == ["row (1 of 3 runs)"]


def test_summarize_leaves_failed_runs_out_of_the_median(capsys: pytest.CaptureFixture[str]) -> None:
    driver = run_all.Driver.__new__(run_all.Driver)
    driver.spreads, driver.run_times = {}, {}
    name, medians = driver.summarize("row", {"pybuild": [1.0, None, 3.0], "buildkit": [None, None, None]})
    assert (name, medians) == ("row", {"pybuild": 2.0})
    assert driver.run_times == {"row": {"pybuild": [1.0, None, 3.0]}}
    assert "failed" in capsys.readouterr().err


def test_a_row_buildkit_never_finished_is_reported_as_not_judged() -> None:
    driver = FakeDriver({"pybuild": [1.0, 1.0]}, [None, None], 0.5)
    table, missed = run_all.run_table([("row", {"pybuild": 1.0})], driver, ["pybuild", "buildkit"])
    assert verdicts(table) == ["—", "—", "—"]
    assert missed == ["row (not judged: no run of both engines)"]


def test_qemu_handlers_seen_during_the_run_are_a_warning_at_the_top() -> None:
    driver = run_all.Driver.__new__(run_all.Driver)
    driver.qemu_seen, driver.qemu_builds = set(), 0
    assert run_all.qemu_warning(driver) == []
    driver.qemu_seen, driver.qemu_builds = {"qemu-aarch64", "qemu-arm"}, 2
    warning = run_all.qemu_warning(driver)[0]
    assert "2 of the builds" in warning and "qemu-aarch64, qemu-arm" in warning
