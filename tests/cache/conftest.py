"""Fixtures for the cache tests: a fresh pybuild root per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.cache import Root


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    opened = Root.open(tmp_path / "root")
    try:
        yield opened
    finally:
        opened.close()


def run_child(code: str, *args: str, **kwargs) -> subprocess.Popen:
    """Start a Python child running ``code`` with pybuild importable."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **kwargs)
