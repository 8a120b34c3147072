"""Fixtures for end-to-end tests: a pybuild root, the CLI, and reading built images."""

from __future__ import annotations

import http.server
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from .._peers import require_tool


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



def read_image_file(root: Path, ref: str, path: str) -> str:
    """The text of ``path`` in the image ``ref`` stored under ``root``."""
    view = ImageView(root, ref)
    try:
        return view.read(path)
    finally:
        view.close()


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


@pytest.fixture
def http_files(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A directory served over HTTP on 127.0.0.1: yields (directory, base URL)."""
    served = tmp_path / "served"
    served.mkdir()

    def handler(*args, **kwargs):  # type: ignore[no-untyped-def]
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(served), **kwargs)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def git_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``git_server({path: text}, symlinks={path: target})`` commits the files on branch main
    and serves the repo with ``git daemon`` on 127.0.0.1; returns its git:// URL."""
    require_tool("git")
    daemons: list[subprocess.Popen[bytes]] = []

    def serve(files: dict[str, str], symlinks: dict[str, str] | None = None) -> str:
        repo = tmp_path / f"repo{len(daemons)}"
        git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        for name, text in files.items():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).write_text(text)
        for name, target in (symlinks or {}).items():
            (repo / name).symlink_to(target)
        subprocess.run([*git, "add", "."], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "files"], check=True)
        served = tmp_path / f"served-git{len(daemons)}"
        subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(served / "repo.git")], check=True)
        port = _free_port()
        daemons.append(subprocess.Popen(
            ["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={served}", "--listen=127.0.0.1", f"--port={port}", str(served)],
            stderr=subprocess.DEVNULL,
        ))
        _wait_listening(port)
        return f"git://127.0.0.1:{port}/repo.git"

    yield serve
    for daemon in daemons:
        daemon.terminate()
        daemon.wait()
