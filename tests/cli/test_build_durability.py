"""``pybuild build`` commits its steps without waiting for the disk and writes them out once at its
end (cache ``defer_durability``/``settle``): what it leaves is settled, and a root whose snapshots
were never settled before a reboot rebuilds them instead of trusting them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pybuild.cache import DirSnapshotter
from pybuild.cli.main import main
from pybuild.executors import _overlay as overlay

pytestmark = pytest.mark.root


def _context(tmp_path: Path) -> Path:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nRUN echo ran > /ran\nCOPY a /a\n")
    (context / "a").write_text("a\n")
    return context


def _build(root: Path, context: Path) -> int:
    return main(["build", "--progress=plain", "--network=none", "--root", str(root), "-t", "durable:1", str(context)])


def _snapshots(root: Path) -> set[str]:
    return {p.name for p in (root / "snapshots").iterdir() if not p.name.startswith(".")}


def _meta(root: Path, snapshot: str) -> dict[str, object]:
    data = json.loads((root / "snapshots" / snapshot / "meta.json").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def imported(require_root: None, tmp_path: Path, busybox_tar: Path) -> Path:
    root = tmp_path / "root"
    assert main(["import", "--root", str(root), str(busybox_tar), "busybox:latest"]) == 0
    return root


def test_a_build_settles_the_snapshots_it_committed_before_it_returns(
    imported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settled: list[int] = []
    settle = DirSnapshotter.settle

    def spy(self: DirSnapshotter) -> str | None:
        settled.append(len(self._unsettled))
        return settle(self)

    monkeypatch.setattr(DirSnapshotter, "settle", spy)
    base = _snapshots(imported)
    assert _build(imported, _context(tmp_path)) == 0
    made = _snapshots(imported) - base
    assert len(made) == 2 and settled[0] == 2  # the RUN's and the COPY's, left to the end
    assert all("unsynced" not in _meta(imported, snapshot) for snapshot in made)
    assert not overlay.step_syncs_deferred()  # the process's later overlays sync as before


def test_the_fast_path_record_is_written_after_the_settle(
    imported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record names snapshots the next build trusts without looking: only settled ones."""
    from pybuild.cli import _fastpath_record

    order: list[str] = []
    settle, save = DirSnapshotter.settle, _fastpath_record.save

    def settle_spy(self: DirSnapshotter) -> str | None:
        order.append(f"settle {len(self._unsettled)}")
        return settle(self)

    def save_spy(finished: _fastpath_record.Finished) -> None:
        order.append("record")
        save(finished)

    monkeypatch.setattr(DirSnapshotter, "settle", settle_spy)
    monkeypatch.setattr(_fastpath_record, "save", save_spy)
    assert _build(imported, _context(tmp_path)) == 0
    assert order[:2] == ["settle 2", "record"]


def test_snapshots_never_settled_before_a_reboot_are_built_again(
    imported: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYBUILD_FASTPATH", "0")  # no record answers: (never written for unsettled ones)
    context = _context(tmp_path)
    base = _snapshots(imported)
    assert _build(imported, context) == 0
    assert _build(imported, context) == 0
    assert capfd.readouterr().err.count("CACHED") == 2  # settled: trusted
    for snapshot in _snapshots(imported) - base:  # as a power loss right after the build would leave them
        path = imported / "snapshots" / snapshot / "meta.json"
        path.write_text(json.dumps({**_meta(imported, snapshot), "unsynced": "an-earlier-boot"}))
    assert _build(imported, context) == 0
    err = capfd.readouterr().err
    assert "CACHED" not in err and "RUN echo ran" in err  # both steps ran again
    assert main(["run", "--rm", "--root", str(imported), "--network=none", "durable:1", "cat", "/ran", "/a"]) == 0
    assert capfd.readouterr().out == "ran\na\n"
