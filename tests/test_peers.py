"""The suite's own helpers for what lives outside the repo (tests/_peers.py).

A missing peer tool fails the run under CI (PYBUILD_TEST_STRICT) and is a skip naming the Debian
package elsewhere; missing ../shared conformance files are a skip naming the directory, at
collection time as well as in a test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from . import _peers
from ._peers import (
    STRICT_VARIABLE,
    conformance_cases,
    mounts_under,
    require_conformance,
    require_tool,
    tool_present,
    unmount_under,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def empty_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH is one empty directory: no tool is installed."""
    directory = tmp_path / "bin"
    directory.mkdir()
    monkeypatch.setenv("PATH", str(directory))
    return directory


def outcome(call: Callable[[], object]) -> tuple[str, str]:
    """("skip" or "fail", message) of a call that skips or fails the test it runs in.

    Caught here rather than with pytest.raises, so that a skip where a failure is expected
    fails this test instead of skipping it."""
    try:
        call()
    except pytest.skip.Exception as skipped:
        return "skip", str(skipped)
    except pytest.fail.Exception as failed:
        return "fail", str(failed)
    raise AssertionError("the call neither skipped nor failed")


def test_a_missing_tool_is_a_skip_naming_its_package_outside_ci(empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STRICT_VARIABLE, raising=False)
    assert outcome(lambda: require_tool("skopeo")) == ("skip", "skopeo is not installed (apt-get install skopeo)")
    assert outcome(lambda: require_tool("dockerd")) == ("skip", "dockerd is not installed (apt-get install docker.io)")
    assert tool_present("zstd") is False


@pytest.mark.parametrize("value", ["1", "true"])
def test_a_missing_tool_is_a_failure_under_ci(empty_path: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(STRICT_VARIABLE, value)
    assert outcome(lambda: require_tool("skopeo")) == (
        "fail", "skopeo is not installed (PYBUILD_TEST_STRICT is set; .ci/setup installs skopeo)"
    )  # fmt: skip
    assert outcome(lambda: tool_present("zstd"))[0] == "fail"


def test_strict_mode_is_off_when_the_variable_is_empty_or_zero(empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "0"):
        monkeypatch.setenv(STRICT_VARIABLE, value)
        assert outcome(lambda: require_tool("umoci"))[0] == "skip"


def test_a_tool_is_found_on_path(empty_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(STRICT_VARIABLE, "1")
    tool = empty_path / "umoci"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert require_tool("umoci") == str(tool)
    assert tool_present("umoci") is True


def test_missing_conformance_files_give_one_skipped_case_naming_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absent = tmp_path / "shared" / "conformance"
    monkeypatch.setattr(_peers, "CONFORMANCE", absent)
    (case,) = conformance_cases("buildkit-shell", lambda directory: pytest.fail("read although absent"), width=3)
    assert case.values == (None, None, None)
    (mark,) = case.marks
    assert mark.name == "skip" and mark.kwargs["reason"] == f"the conformance files are not here: {absent} (the ../shared checkout beside the repository)"
    assert outcome(lambda: require_conformance("buildkit-shell")) == ("skip", mark.kwargs["reason"])


def test_present_conformance_files_give_their_cases(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_peers, "CONFORMANCE", tmp_path)
    (tmp_path / "suite").mkdir()
    assert conformance_cases("suite", lambda directory: [directory.name, "b"]) == ["suite", "b"]
    assert require_conformance("suite") == tmp_path / "suite"


def test_only_the_mounts_under_a_directory_are_listed(tmp_path: Path) -> None:
    assert mounts_under(tmp_path) == []
    assert "/proc" in mounts_under(Path("/proc"))


def _path_without(tmp_path: Path, missing: str) -> str:
    """A PATH of symlinks to every program of the usual directories except `missing`."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for source in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(source):
            continue
        for name in os.listdir(source):
            link = directory / name
            if name != missing and not link.exists() and not link.is_symlink():
                link.symlink_to(os.path.join(source, name))
    return str(directory)


@pytest.mark.tool("skopeo")
def test_a_test_marked_with_a_tool_runs_when_it_is_installed() -> None:
    assert shutil.which("skopeo") is not None


@pytest.mark.parametrize(("strict", "outcome"), [("1", "1 error"), ("", "1 skipped")])
def test_a_run_without_skopeo_fails_under_ci_and_skips_elsewhere(tmp_path: Path, strict: str, outcome: str) -> None:
    env = {**os.environ, "PATH": _path_without(tmp_path, "skopeo"), STRICT_VARIABLE: strict}
    test = "tests/test_peers.py::test_a_test_marked_with_a_tool_runs_when_it_is_installed"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert outcome in result.stdout, result.stdout + result.stderr
    assert "skopeo is not installed" in result.stdout
    assert result.returncode == (1 if strict else 0)
    if not strict:
        assert "apt-get install skopeo" in result.stdout


def test_what_a_daemon_left_mounted_is_unmounted(tmp_path: Path, require_root: None) -> None:
    """As dockerd leaves exec/netns/default bound to a network namespace, which pytest cannot remove."""
    exec_root = tmp_path / "exec"
    exec_root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(exec_root)], check=True)
    netns = exec_root / "netns" / "default"
    netns.parent.mkdir()
    netns.touch()
    subprocess.run(["mount", "--bind", "/proc/self/ns/net", str(netns)], check=True)
    assert mounts_under(tmp_path) == [str(netns), str(exec_root)]
    unmount_under(tmp_path)
    assert mounts_under(tmp_path) == []
