"""The fast path of a rootless pybuild: the record is written inside the user namespace,
checked outside it (before the namespace is entered), and still falls through on a change."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

USER = "pybuild-test"  # made by .ci/setup, with subordinate ids
HIT = "pybuild fastpath: hit"


@pytest.fixture
def home(require_root: None) -> Iterator[Path]:
    try:
        account = pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"no user {USER} (.ci/setup makes it)")
    directory = Path(tempfile.mkdtemp(prefix="pybuild-fastpath-"))
    os.chmod(directory, 0o755)
    os.chown(directory, account.pw_uid, account.pw_gid)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def as_user(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    account = pwd.getpwnam(USER)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(home), "XDG_DATA_HOME": str(home / "data"), "PYBUILD_DEBUG_FASTPATH": "1"}
    result = subprocess.run(
        ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", sys.executable, "-m", "pybuild", *args],
        env=env, cwd=home, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"pybuild {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_a_rootless_noop_is_answered_and_a_change_is_not(home: Path, busybox_tar: Path) -> None:
    account = pwd.getpwnam(USER)
    shutil.copy(busybox_tar, home / "busybox.tar")
    context = home / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nCOPY a.txt /a.txt\nRUN --network=none cat /a.txt > /b.txt\n")
    (context / "a.txt").write_text("one\n")
    for path in (home / "busybox.tar", context, context / "Dockerfile", context / "a.txt"):
        os.chown(path, account.pw_uid, account.pw_gid)
    as_user(home, "import", "busybox.tar", "busybox")
    first = as_user(home, "build", "-q", "ctx")
    assert HIT not in first.stderr and "recorded" in first.stderr  # written inside the user namespace
    for _ in range(3):
        again = as_user(home, "build", "-q", "ctx")
        if HIT in again.stderr:
            break
    assert HIT in again.stderr and again.stdout == first.stdout
    (context / "a.txt").write_text("two\n")
    changed = as_user(home, "build", "-q", "ctx")
    assert HIT not in changed.stderr and changed.stdout != first.stdout
