"""Resolving mount points inside a root: image symlinks never lead out of it."""

from __future__ import annotations

import errno
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


@pytest.fixture(params=["openat2", "walk"])
def open_in(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, root: Path):  # type: ignore[no-untyped-def]
    """``open_in(path)``: the real path of what ``open_in_root`` opened, with openat2 and without."""
    from pybuild.executors import _paths

    monkeypatch.setattr(_paths, "_openat2_works", request.param == "openat2")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)

    def opened(path: str) -> str:
        fd = _paths.open_in_root(root_fd, path)
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)

    yield opened
    os.close(root_fd)


def test_open_in_root_follows_links_inside_the_root(root: Path, open_in) -> None:  # type: ignore[no-untyped-def]
    (root / "run" / "hosts").write_text("h")
    (root / "tmp").mkdir()
    assert open_in("/etc/hosts") == str(root / "run" / "hosts")
    assert open_in("/abs/../run") == str(root / "run")
    assert open_in("/escape") == str(root / "tmp")
    assert open_in("/../../..") == str(root)
    assert open_in("/") == str(root) and open_in("") == str(root)


def test_open_in_root_never_leaves_the_root(root: Path, tmp_path: Path, open_in) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "outside").write_text("host file")
    (root / "tmp").mkdir()
    (root / "to-root").symlink_to("/")
    (root / "up").symlink_to("../..")
    (root / "proc-link").symlink_to(f"/proc/self/root{tmp_path}")
    for path in ("/to-root/outside", "/up/outside", "/escape/../outside", "/../outside"):
        with pytest.raises(FileNotFoundError):
            open_in(path)
    for path in ("/to-root", "/up", "/escape/../.."):
        assert open_in(path) == str(root)
    with pytest.raises(FileNotFoundError):  # /proc is the root's, and it has none
        open_in("/proc-link/outside")


def test_open_in_root_errors(root: Path, open_in) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OSError) as loop:
        open_in("/loop/x")
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(NotADirectoryError):
        open_in("/file/x")
