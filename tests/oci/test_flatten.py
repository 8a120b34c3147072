"""flatten_into: the merged filesystem of a chain of layer trees, as overlayfs would show it.

The oracle is the kernel: the same chain mounted as an overlay (lower dirs)
and described with the same function.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.oci._tar_flatten import flatten_into

from .layer_trees import build_rich_tree, describe


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, 0)


def opaque(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.setxattr(path, "trusted.overlay.opaque", b"y")


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def chain(tmp_path: Path, require_root: None) -> list[Path]:
    """Three layers, bottom first, exercising every merge rule."""
    base, middle, top = (tmp_path / name for name in ("base", "middle", "top"))
    for layer in (base, middle, top):
        layer.mkdir()
    write(base / "etc" / "passwd", "root\n")
    write(base / "etc" / "motd", "base motd\n")
    write(base / "var" / "cache" / "old", "stale\n")
    write(base / "opt" / "tool" / "bin", "v1\n")
    write(base / "replaced-by-file" / "inner", "x\n")
    write(base / "dir-then-gone" / "f", "x\n")
    write(base / "gone", "x\n")
    os.symlink("etc/passwd", base / "link")
    os.chmod(base / "etc", 0o700)
    # middle: deletes, opaque dir, overrides
    whiteout(middle / "gone")
    whiteout(middle / "dir-then-gone")
    opaque(middle / "var" / "cache")
    write(middle / "var" / "cache" / "fresh", "middle\n")
    write(middle / "etc" / "motd", "middle motd\n")
    write(middle / "replaced-by-file", "now a file\n")
    os.chmod(middle / "etc", 0o755)
    # top: a whiteout of something only in the middle, a dir over a file, a new file
    whiteout(top / "nothing-below")
    write(top / "etc" / "hosts", "127.0.0.1 localhost\n")
    (top / "opt").mkdir()
    os.chmod(top / "opt", 0o711)
    whiteout(top / "link")
    os.symlink("etc/hosts", top / "newlink")
    return [top, middle, base]


def overlay_view(lowers_top_first: list[Path], mountpoint: Path) -> dict:
    mountpoint.mkdir()
    lowerdir = ":".join(str(p) for p in lowers_top_first)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowerdir}", str(mountpoint)], check=True)
    try:
        return describe(mountpoint)
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_merge_rules(chain: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "flat"
    flatten_into(chain, dest)
    assert (dest / "etc" / "motd").read_text() == "middle motd\n"
    assert (dest / "etc" / "passwd").read_text() == "root\n"
    assert (dest / "etc" / "hosts").exists()
    assert stat.S_IMODE((dest / "etc").stat().st_mode) == 0o755  # the highest layer's directory wins
    assert stat.S_IMODE((dest / "opt").stat().st_mode) == 0o711
    assert (dest / "opt" / "tool" / "bin").read_text() == "v1\n"  # directories merge
    assert sorted(os.listdir(dest / "var" / "cache")) == ["fresh"]  # opaque hides the base's files
    assert (dest / "replaced-by-file").read_text() == "now a file\n"
    for name in ("gone", "dir-then-gone", "link", "nothing-below"):
        assert not os.path.lexists(dest / name), name
    assert os.readlink(dest / "newlink") == "etc/hosts"
    # No whiteouts and no overlay xattrs in the result.
    for path in dest.rglob("*"):
        st = os.lstat(path)
        assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0), path
        assert not any(k.startswith("trusted.overlay.") for k in os.listxattr(path, follow_symlinks=False))


def test_matches_the_kernel_overlay(chain: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "flat"
    flatten_into(chain, dest)
    assert describe(dest) == overlay_view(chain, tmp_path / "mnt")


def test_matches_the_kernel_overlay_for_a_rich_layer_on_top(chain: list[Path], tmp_path: Path) -> None:
    rich = build_rich_tree(tmp_path / "rich")
    layers = [rich, *chain]
    dest = tmp_path / "flat"
    stats = flatten_into(layers, dest)
    expected = overlay_view(layers, tmp_path / "mnt")
    assert describe(dest) == expected
    assert stats.entries == len(expected)


def test_hardlink_mode_shares_inodes_with_the_sources(chain: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "flat"
    flatten_into(chain, dest, hardlink_files=True)
    assert os.stat(dest / "etc" / "motd").st_ino == os.stat(chain[1] / "etc" / "motd").st_ino
    copied = tmp_path / "copied"
    flatten_into(chain, copied)

    def without_links(description: dict) -> dict:
        return {path: {k: v for k, v in record.items() if k != "links"} for path, record in description.items()}

    assert without_links(describe(dest)) == without_links(describe(copied))
    assert "links" not in describe(copied)["etc/motd"]


def test_dest_must_be_empty(chain: list[Path], tmp_path: Path) -> None:
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "file").write_text("x")
    with pytest.raises(StoreError, match="not empty"):
        flatten_into(chain, dest)
    assert (dest / "file").read_text() == "x"


def test_missing_layer_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot flatten"):
        flatten_into([tmp_path / "nope"], tmp_path / "out")
