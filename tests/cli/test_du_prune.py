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


def test_du_and_prune_keep_what_images_need(cli, busybox_image: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo kept > /kept\n")
    cli("build", "-t", "kept", str(tmp_path))
    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo dropped > /dropped\n")
    cli("build", str(tmp_path))  # an untagged image: still an image, still kept
    du = cli("du").stdout
    assert "Snapshots" in du and "Reclaimable" in du
    pruned = cli("prune", "--all").stdout
    assert "Total reclaimed space:" in pruned
    # everything the stored images need survived: a rebuild is all cached
    rebuilt = cli("build", "--progress=plain", "-t", "kept", str(tmp_path))
    assert "CACHED" in rebuilt.stderr or "#1 DONE" in rebuilt.stderr
    assert cli("build", "-q", str(tmp_path)).returncode == 0
