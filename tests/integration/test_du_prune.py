"""``pybuild du`` and ``pybuild prune`` on a real root."""

from __future__ import annotations


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
