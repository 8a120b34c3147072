"""pybuild run by an ordinary user reads and writes on the host only what that user may,
although it is root inside its user namespace: a root-owned file appears owned by the
overflow id there, so no capability of the namespace overrides its mode (the kernel's
capable_wrt_inode_uidgid; BuildKit rootless relies on the same, docs/rootless.md, and the
Docker CLI reports an unreadable --secret src or -f before sending anything,
moby/buildkit session/secrets/secretsprovider/files.go reads the file as the caller).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import AsUser

MARKER = "root-only-content-7c1e"


@pytest.fixture
def roots_dir() -> Iterator[Path]:
    """A directory of root's, open for listing (0755), holding a 0600 file of root's."""
    path = Path(tempfile.mkdtemp(prefix="pybuild-roots-", dir="/tmp"))
    os.chmod(path, 0o755)
    private = path / "private"
    private.write_text(MARKER + "\n")
    os.chmod(private, 0o600)
    yield path
    shutil.rmtree(path)


def assert_refused(done, *names: str) -> None:  # type: ignore[no-untyped-def]
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert MARKER not in done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and any(name in errors[0] for name in names), done.stderr


def test_a_secret_source_the_user_cannot_read_is_refused(user: AsUser, user_busybox: str, roots_dir: Path) -> None:
    user.write("ctx/Dockerfile", "FROM busybox\nRUN --mount=type=secret,id=s cat /run/secrets/s > /leak || true\n")
    done = user.pybuild(
        "build", "-q", "--network=none", "--secret", f"id=s,src={roots_dir / 'private'}", "-t", "leak:1", str(user.dir / "ctx"),
        check=False,
    )  # fmt: skip
    assert_refused(done, str(roots_dir / "private"), "secret")
    assert user.pybuild("images", "-q", "leak:1").stdout == ""


def test_a_dockerfile_the_user_cannot_read_is_refused(user: AsUser, user_busybox: str, roots_dir: Path) -> None:
    user.write("ctx/placeholder", "")
    done = user.pybuild("build", "-q", "-f", str(roots_dir / "private"), str(user.dir / "ctx"), check=False)
    assert_refused(done, str(roots_dir / "private"), "Dockerfile")


def test_an_output_directory_the_user_cannot_write_is_refused(user: AsUser, user_busybox: str, roots_dir: Path) -> None:
    user.write("ctx/Dockerfile", "FROM busybox\nRUN echo out > /out\n")
    dest = roots_dir / "out"
    done = user.pybuild(
        "build", "-q", "--network=none", "--output", f"type=local,dest={dest}", str(user.dir / "ctx"), check=False
    )  # fmt: skip
    assert_refused(done, str(dest), str(roots_dir))
    assert sorted(os.listdir(roots_dir)) == ["private"]  # nothing half-written


def test_an_archive_the_user_cannot_read_is_refused(user: AsUser, roots_dir: Path) -> None:
    done = user.pybuild("import", str(roots_dir / "private"), "stolen:1", check=False)
    assert_refused(done, str(roots_dir / "private"))
