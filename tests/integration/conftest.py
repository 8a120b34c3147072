"""Fixtures for end-to-end tests: a pybuild root, the CLI, and reading built images."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh pybuild root for the test, also set as $PYBUILD_ROOT."""
    path = tmp_path / "pybuild-root"
    monkeypatch.setenv("PYBUILD_ROOT", str(path))
    return path


def pybuild(*args: str, root: Path, cwd: Path | None = None, input: bytes | None = None, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the pybuild command as a user would, in a subprocess."""
    environment = {**os.environ, "PYBUILD_ROOT": str(root), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "pybuild", *args],
        cwd=cwd, env=environment, capture_output=True, input=input,
        text=input is None, timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def cli(root: Path):  # type: ignore[no-untyped-def]
    """``cli("build", ...)`` runs pybuild against the test's root."""

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return pybuild(*args, root=root, **kwargs)

    return run


@pytest.fixture
def busybox_image(root: Path, busybox_tar: Path, require_root: None) -> str:
    """busybox:latest imported into the test's root from the busybox rootfs tarball."""
    pybuild("import", str(busybox_tar), "busybox:latest", root=root)
    return "busybox:latest"


class ImageView:
    """Read a stored image's files through its layers (top first, whiteouts honoured)."""

    def __init__(self, root: Path, ref: str) -> None:
        from pybuild.cache import Root
        from pybuild.oci import ImageStore

        self._root = Root.open(root)
        self.store = ImageStore(self._root)
        self.image = self.store.get(ref)
        self.config: dict[str, Any] = dict(self.image.config)
        self.trees = [self._root.snapshots.tree(s) for s in self.store.snapshots_for(self.image)]

    def close(self) -> None:
        self._root.close()

    def find(self, path: str) -> Path | None:
        parts = [p for p in path.split("/") if p]
        for tree in self.trees:
            candidate = tree.joinpath(*parts) if parts else tree
            hidden = False
            for depth in range(1, len(parts) + 1):
                prefix = tree.joinpath(*parts[:depth])
                if os.path.lexists(prefix):
                    st = os.lstat(prefix)
                    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                        hidden = True
                        break
                    if depth < len(parts) and not stat.S_ISDIR(st.st_mode):
                        break
            if hidden:
                return None
            if os.path.lexists(candidate):
                return candidate
            if self._opaque_above(tree, parts):
                return None
        return None

    @staticmethod
    def _opaque_above(tree: Path, parts: list[str]) -> bool:
        for depth in range(len(parts) - 1, 0, -1):
            directory = tree.joinpath(*parts[:depth])
            try:
                if os.getxattr(directory, "trusted.overlay.opaque") == b"y":
                    return True
            except OSError:
                continue
        return False

    def read(self, path: str) -> str:
        found = self.find(path)
        if found is None:
            raise FileNotFoundError(path)
        return found.read_text()

    def stat(self, path: str) -> os.stat_result:
        found = self.find(path)
        if found is None:
            raise FileNotFoundError(path)
        return os.lstat(found)


@pytest.fixture
def open_image(root: Path):  # type: ignore[no-untyped-def]
    views: list[ImageView] = []

    def opener(ref: str) -> ImageView:
        view = ImageView(root, ref)
        views.append(view)
        return view

    yield opener
    for view in views:
        view.close()
