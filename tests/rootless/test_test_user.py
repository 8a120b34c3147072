"""The fixture that drops to the test user explains a checkout the user cannot reach."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Account, unreachable_reason


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory in /tmp every user can search (pytest's open_dir is under a 0700 one)."""
    path = Path(tempfile.mkdtemp(dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_a_closed_parent_directory_is_named_with_the_fix(test_account: Account, open_dir: Path) -> None:
    closed = open_dir / "closed"
    (closed / "checkout").mkdir(parents=True)
    os.chmod(open_dir, 0o755)
    os.chmod(closed, 0o700)
    reason = unreachable_reason(test_account, (("the checkout", closed / "checkout"),))
    assert reason is not None
    assert f"{closed} is drwx------ owned by uid 0" in reason
    assert f"setfacl -m u:{test_account.name}:x {closed}" in reason


def test_an_open_checkout_is_reachable(test_account: Account, open_dir: Path) -> None:
    (open_dir / "open" / "checkout").mkdir(parents=True)
    for path in (open_dir, open_dir / "open", open_dir / "open" / "checkout"):
        os.chmod(path, 0o755)
    assert unreachable_reason(test_account, (("the checkout", open_dir / "open" / "checkout"),)) is None


def test_this_checkout_is_reachable_by_the_test_user(test_account: Account) -> None:
    assert unreachable_reason(test_account) is None
