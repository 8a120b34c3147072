"""Where temp areas are made: fixed slots, and the zones a prune freed kept away from for a while."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path

import pytest

from pybuild.cache import Root, prune
from pybuild.cache import _tmp


def _slot_of(area: Path, tmp_root: Path) -> str:
    assert area.parent.parent == tmp_root
    return area.parent.name


def test_areas_are_made_in_slots_that_outlive_them(tmp_path: Path) -> None:
    with Root.open(tmp_path / "r") as root:
        area = root.tmp_dir().parent
        assert _slot_of(area, root.path / "tmp").startswith("slot-")
    slots = sorted(p.name for p in (tmp_path / "r" / "tmp").iterdir())
    assert slots == sorted(f"slot-{n}" for n in range(_tmp._SLOTS))
    # this process's area lives until it exits (test_root: removed at exit)
    assert Root.temp_contents(tmp_path / "r") == [area, area.with_name(area.name + ".lock")]


@pytest.fixture
def every_inode_a_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each inode its own zone and one inode enough: slots differ on any file system."""
    monkeypatch.setattr(_tmp, "_ZONE_SHIFT", 0)
    monkeypatch.setattr(_tmp, "_FREED_ENOUGH", 1)


def _new_area_slot(tmp_root: Path) -> str:
    area = _tmp.ProcessArea(tmp_root)
    try:
        return _slot_of(area.path, tmp_root)
    finally:
        area.close()


@pytest.mark.usefixtures("every_inode_a_zone")
def test_a_new_area_keeps_away_from_a_slot_freed_lately(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Root.open(tmp_path / "r").close()
    tmp_root = tmp_path / "r" / "tmp"
    assert _new_area_slot(tmp_root) == "slot-0"
    _tmp.note_freed(tmp_root, [tmp_root / "slot-0"])
    assert _new_area_slot(tmp_root) == "slot-1"
    _tmp.note_freed(tmp_root, [tmp_root / "slot-1"])
    assert _new_area_slot(tmp_root) == "slot-2"
    # minutes later ext4 reuses those inodes freely again: back to the first slot
    later = time.time() + _tmp._FREED_MEMORY + 5
    monkeypatch.setattr(_tmp.time, "time", lambda: later)
    assert _new_area_slot(tmp_root) == "slot-0"


@pytest.mark.usefixtures("every_inode_a_zone")
def test_when_every_slot_was_freed_lately_the_longest_ago_is_taken(tmp_path: Path) -> None:
    Root.open(tmp_path / "r").close()
    tmp_root = tmp_path / "r" / "tmp"
    now = int(time.time())
    zones = [os.lstat(tmp_root / f"slot-{n}").st_ino for n in range(_tmp._SLOTS)]
    # every slot's zone and the one after it freed lately, slot 3's longest ago (its line last,
    # so that a zone it shares with another slot's counts as freed then)
    lines = [f"{now - 50} {zone} {zone + 1}\n" for n, zone in enumerate(zones) if n != 3]
    lines.append(f"{now - 100} {zones[3]} {zones[3] + 1}\n")
    (tmp_root / "freed-zones").write_text("".join(lines))
    assert _new_area_slot(tmp_root) == "slot-3"


@pytest.mark.usefixtures("every_inode_a_zone")
def test_a_slot_whose_next_zone_was_freed_lately_is_passed_over(tmp_path: Path) -> None:
    """A slot's builds spill into the flex group after its own: that one must be clear too."""
    Root.open(tmp_path / "r").close()
    tmp_root = tmp_path / "r" / "tmp"
    next_to_first = os.lstat(tmp_root / "slot-0").st_ino + 1
    (tmp_root / "freed-zones").write_text(f"{int(time.time())} {next_to_first}\n")
    chosen = _new_area_slot(tmp_root)
    assert chosen != "slot-0"
    zone = os.lstat(tmp_root / chosen).st_ino
    assert next_to_first not in (zone, zone + 1)


@pytest.mark.usefixtures("every_inode_a_zone")
def test_a_damaged_freed_log_loses_only_hints(tmp_path: Path) -> None:
    Root.open(tmp_path / "r").close()
    tmp_root = tmp_path / "r" / "tmp"
    slot0 = os.lstat(tmp_root / "slot-0").st_ino
    (tmp_root / "freed-zones").write_bytes(b"\x00garbage\n12x 5\n\n" + f"{int(time.time())} {slot0} zz\n".encode() + b"99")
    assert _new_area_slot(tmp_root) == "slot-0"  # the torn line names slot-0 but says nothing usable
    (tmp_root / "freed-zones").write_bytes(b"\x00garbage\n" + f"{int(time.time())} {slot0}\n".encode())
    assert _new_area_slot(tmp_root) == "slot-1"
    Root.open(tmp_path / "r").close()  # the log is not debris
    assert (tmp_root / "freed-zones").exists()


def test_prune_notes_the_zones_it_freed(tmp_path: Path) -> None:
    with Root.open(tmp_path / "r") as root:
        active = root.snapshots.new_active()
        for i in range(1000):
            (active.upper / f"f{i}").write_bytes(b"x")
        snapshot = root.snapshots.commit(active, None)
        tree = root.snapshots.tree(snapshot)
        counts = collections.Counter(os.lstat(tree / f"f{i}").st_ino >> _tmp._ZONE_SHIFT for i in range(1000))
        expected = {zone for zone, count in counts.items() if count >= _tmp._FREED_ENOUGH}
        assert expected, "1,000 files made together share a zone"
        assert _tmp.recently_freed_zones(root.path / "tmp") == {}
        result = prune(root, all=True, orphan_grace=0)
        assert result.snapshots == 1
        assert set(_tmp.recently_freed_zones(root.path / "tmp")) == expected


def test_stale_areas_in_slots_are_removed(tmp_path: Path) -> None:
    Root.open(tmp_path / "r").close()
    orphan = tmp_path / "r" / "tmp" / "slot-5" / "p1-orphan"
    orphan.mkdir()
    (orphan / "x").write_text("x")
    assert Root.temp_contents(tmp_path / "r") == [orphan]
    Root.open(tmp_path / "r").close()
    assert not orphan.exists()
    assert (tmp_path / "r" / "tmp" / "slot-5").is_dir()
