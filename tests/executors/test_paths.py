"""Resolving mount points inside a root: image symlinks never lead out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.executors._paths import PathError, ensure_mount_point, resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "run").mkdir()
    (r / "etc" / "hosts").symlink_to("/run/hosts")
    (r / "escape").symlink_to("../../../../../../../tmp")
    (r / "abs").symlink_to("/etc")
    (r / "loop").symlink_to("loop")
    (r / "file").write_text("x")
    return r


def test_symlinks_resolve_inside_the_root(root: Path) -> None:
    assert resolve_in_root(str(root), "/etc/hosts") == "/run/hosts"
    assert resolve_in_root(str(root), "/escape/x") == "/tmp/x"
    assert resolve_in_root(str(root), "/abs/passwd") == "/etc/passwd"
    assert resolve_in_root(str(root), "/../../etc/./x/../y") == "/etc/y"


def test_symlink_loops_are_an_error(root: Path) -> None:
    with pytest.raises(PathError, match="symbolic links"):
        resolve_in_root(str(root), "/loop/x")


def test_stubs_are_created_inside_and_recorded(root: Path) -> None:
    stubs: list = []
    parents: dict = {}
    unique = f"pybuild-paths-{os.getpid()}-{id(stubs)}"
    inside = ensure_mount_point(str(root), f"/escape/{unique}/deep", directory=True, stubs=stubs, parents=parents)
    assert inside == f"/tmp/{unique}/deep"
    assert (root / "tmp" / unique / "deep").is_dir()
    assert stubs == [("dir", "/tmp"), ("dir", f"/tmp/{unique}"), ("dir", f"/tmp/{unique}/deep")]
    assert list(parents) == ["/"]
    assert not os.path.exists(f"/tmp/{unique}")  # nothing was made outside the root


def test_file_stub_through_a_symlink(root: Path) -> None:
    stubs: list = []
    parents: dict = {}
    inside = ensure_mount_point(str(root), "/etc/hosts", directory=False, stubs=stubs, parents=parents)
    assert inside == "/run/hosts" and (root / "run" / "hosts").is_file()
    assert stubs == [("file", "/run/hosts")] and list(parents) == ["/run"]


def test_existing_targets_create_nothing(root: Path) -> None:
    stubs: list = []
    assert ensure_mount_point(str(root), "/etc", directory=True, stubs=stubs, parents={}) == "/etc"
    assert stubs == []


@pytest.mark.parametrize(
    ("target", "directory", "message"),
    [("/file", True, "not a directory"), ("/etc", False, "is a directory"), ("/file/x", True, "not a directory")],
)
def test_type_mismatches_are_errors(root: Path, target: str, directory: bool, message: str) -> None:
    with pytest.raises(PathError, match=message):
        ensure_mount_point(str(root), target, directory=directory, stubs=[], parents={})
