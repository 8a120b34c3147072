"""The zygote starts at every build: it loads only what a step needs (modules run as top-level ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pybuild.executors

EXECUTORS = Path(pybuild.executors.__file__).resolve().parent
# Loaded where they serve a rare path (fuse-overlayfs, chains deeper than the kernel's stack,
# the bridge's iptables, the overlay probe): 10-30 ms of every build's first step otherwise.
NOT_AT_START = ("platform", "hashlib", "shutil", "subprocess", "tempfile", "typing")
# dataclasses (with inspect, ast, dis): ~10 ms of every zygote's start; executors/_values instead.
NOT_AT_ALL = ("dataclasses", "inspect")


def zygote_modules(*env: str) -> set[str]:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import _zygote, _overlay; _overlay.ask_once(); "
        "print(' '.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        ["env", "-i", *env, sys.executable, "-I", "-S", "-c", code, str(EXECUTORS)], capture_output=True, text=True, check=True
    )
    return set(done.stdout.split())


def test_the_zygote_does_not_load_what_only_rare_paths_use() -> None:
    loaded = zygote_modules()
    assert {"_sandbox", "_overlay", "_linux", "_wire", "_bridge"} <= loaded  # what it does load
    assert loaded.isdisjoint(NOT_AT_START), sorted(loaded & set(NOT_AT_START))
    assert loaded.isdisjoint(NOT_AT_ALL), sorted(loaded & set(NOT_AT_ALL))


def test_with_fuse_overlayfs_the_zygote_loads_subprocess_once_for_its_steps() -> None:
    loaded = zygote_modules("PYBUILD_OVERLAY_DRIVER=fuse-overlayfs")
    assert "subprocess" in loaded
    assert loaded.isdisjoint(NOT_AT_ALL), sorted(loaded & set(NOT_AT_ALL))
