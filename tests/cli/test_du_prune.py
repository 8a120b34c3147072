"""``pybuild du`` and ``pybuild prune`` on a real root."""

from __future__ import annotations

import pytest

from pybuild.cli._prune import parse_duration, parse_size
from pybuild.errors import UsageError


@pytest.mark.parametrize(("text", "size"), [("1000", 1000), ("10GB", 10 * 10**9), ("512mb", 512 * 10**6), ("1.5GiB", int(1.5 * 2**30))])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86400), ("30m", 1800), ("1h30m", 5400), ("7d", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "5x", "1h 5"])
def test_bad_values(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)
