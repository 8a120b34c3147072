"""Snapshots committed without waiting for the disk (``defer_durability``) and written out at the
build's end (``settle``): trusted in the boot that made them, in any boot once settled, and never
after a reboot while unsettled (their files may not have reached the disk)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from pybuild.cache import DirSnapshotter
from pybuild.cache import _snapshots as snapshots_module
from pybuild.errors import StoreError


@pytest.fixture
def snaps(tmp_path: Path) -> DirSnapshotter:
    staging = tmp_path / "staging"
    staging.mkdir()
    return DirSnapshotter(tmp_path / "snapshots", lambda: staging)


def commit(snaps: DirSnapshotter, content: str, parent: str | None = None) -> str:
    active = snaps.new_active()
    (active.upper / "file").write_text(content)
    return snaps.commit(active, parent)


def meta(snaps: DirSnapshotter, snapshot_id: str) -> dict[str, object]:
    data = json.loads((snaps.directory / snapshot_id / "meta.json").read_text())
    assert isinstance(data, dict)
    return data


def reboot(monkeypatch: pytest.MonkeyPatch, snaps: DirSnapshotter) -> None:
    """What a new boot looks like to a new process: another boot id, nothing remembered."""
    monkeypatch.setattr(snapshots_module, "_boot", ["another-boot-0000"])
    snaps._metas.clear()


def test_a_deferred_commit_names_this_boot_and_is_trusted_in_it(snaps: DirSnapshotter) -> None:
    assert snaps.defer_durability() and snaps.durability_deferred()
    snapshot = commit(snaps, "one")
    assert meta(snaps, snapshot)["unsynced"] == snapshots_module.boot_id()
    assert snaps.exists(snapshot) and (snaps.tree(snapshot) / "file").read_text() == "one"


def test_settle_drops_the_mark_and_ends_the_deferral(snaps: DirSnapshotter) -> None:
    snaps.defer_durability()
    settled = commit(snaps, "one")
    assert snaps.settle() is None
    assert "unsynced" not in meta(snaps, settled) and snaps.exists(settled)
    assert not snaps.durability_deferred()
    later = commit(snaps, "two", settled)  # its maker syncs it again, as before
    assert "unsynced" not in meta(snaps, later)
    assert snaps.settle() is None  # nothing to settle: fine


def test_an_unsettled_snapshot_is_not_trusted_after_a_reboot_a_settled_one_is(
    snaps: DirSnapshotter, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled = commit(snaps, "base")  # synced by its maker: no mark
    snaps.defer_durability()
    unsettled = commit(snaps, "top", settled)
    above = commit(snaps, "above", unsettled)
    reboot(monkeypatch, snaps)
    snaps = DirSnapshotter(snaps.directory, lambda: tmp_path / "staging")  # a process of the new boot
    assert snaps.exists(settled)
    assert not snaps.exists(unsettled) and not snaps.exists(above)  # nor anything on top of it
    with pytest.raises(StoreError, match="missing or incomplete"):
        snaps.tree(unsettled)
    assert unsettled not in set(snaps.iter_complete())
    again = snaps.new_active()  # the step built again under the same id replaces the debris
    (again.upper / "file").write_text("top")
    assert snaps.commit(again, settled, unsettled) == unsettled and snaps.exists(unsettled)


def test_settled_snapshots_stay_trusted_after_a_reboot(snaps: DirSnapshotter, monkeypatch: pytest.MonkeyPatch) -> None:
    snaps.defer_durability()
    snapshot = commit(snaps, "kept")
    assert snaps.settle() is None
    reboot(monkeypatch, snaps)
    assert snaps.exists(snapshot) and (snaps.tree(snapshot) / "file").read_text() == "kept"


def test_a_settle_the_disk_refuses_removes_what_it_could_not_write(snaps: DirSnapshotter, monkeypatch: pytest.MonkeyPatch) -> None:
    before = commit(snaps, "before")

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    snaps.defer_durability()
    lost = commit(snaps, "lost", before)
    monkeypatch.setattr(snapshots_module, "syncfs", failing)
    error = snaps.settle()
    assert error is not None and "Input/output error" in error and "removed" in error
    assert not snaps.exists(lost) and lost not in snaps.list()
    assert snaps.exists(before)  # not this build's: left alone


def test_no_boot_id_means_no_deferral(snaps: DirSnapshotter, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(snapshots_module, "_boot", [None])
    assert not snaps.defer_durability() and not snaps.durability_deferred()
    assert "unsynced" not in meta(snaps, commit(snaps, "one"))


def test_commits_without_deferral_carry_no_mark(snaps: DirSnapshotter, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = commit(snaps, "plain")
    assert "unsynced" not in meta(snaps, snapshot)
    reboot(monkeypatch, snaps)
    assert snaps.exists(snapshot)


def test_the_boot_id_is_the_kernels() -> None:
    assert snapshots_module.boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
