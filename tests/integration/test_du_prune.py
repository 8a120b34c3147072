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


def test_prune_keeps_the_layers_of_a_container_whose_image_was_removed(cli, root, busybox_image: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pybuild.cache import Root
    from pybuild.executors import snapshots_in_use

    (tmp_path / "Dockerfile").write_text("FROM busybox\nRUN echo base-of-container > /marker\n")
    cli("build", "-t", "short-lived", str(tmp_path))
    cli("run", "--name", "keeper", "short-lived", "sh", "-c", "echo mine > /mine")
    cli("rmi", "-f", "short-lived")
    cli("prune", "--all")
    assert "Containers" in cli("du").stdout
    opened = Root.open(root)
    try:
        kept = snapshots_in_use(opened)
        assert len(kept) == 2  # busybox and the RUN layer under the container
        assert all(opened.snapshots.exists(snapshot) for snapshot in kept)
    finally:
        opened.close()
    assert cli("diff", "keeper").stdout.splitlines() == ["A /mine"]
