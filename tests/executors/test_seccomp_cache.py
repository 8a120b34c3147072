"""Compiled seccomp programs kept between processes: used only when nothing they depend on changed."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.executors import _seccomp
from pybuild.executors import _seccomp_cache as cache
from pybuild.executors._caps import DOCKER_DEFAULT_MASK

pytestmark = pytest.mark.root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_root: None) -> Iterator[Path]:
    directory = tmp_path / "seccomp"
    monkeypatch.setattr(cache, "CACHE_DIR", str(directory))
    tmp_path.chmod(0o755)
    _seccomp._compiled.cache_clear()
    yield directory
    _seccomp._compiled.cache_clear()


def default_text() -> str:
    return _seccomp._default_text()


def records(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if not p.name.startswith(".")] if directory.exists() else []


def test_a_compiled_program_is_kept_and_used_without_compiling(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK)
    assert fresh is not None and len(records(cache_dir)) == 1
    _seccomp._compiled.cache_clear()

    def refuse(*args: object) -> bytes:
        raise AssertionError("compiled again although the program was kept")

    monkeypatch.setattr(_seccomp, "_compile", refuse)
    assert _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK) == fresh


def test_other_capabilities_or_profiles_are_other_programs(cache_dir: Path) -> None:
    program = _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK)
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) == program
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK | 1 << 21) is None  # CAP_SYS_ADMIN's rules differ
    assert cache.load(default_text() + " ", DOCKER_DEFAULT_MASK) is None


def test_a_program_of_another_libseccomp_is_not_used(cache_dir: Path) -> None:
    program = _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK)
    [record] = records(cache_dir)
    header, _, body = record.read_bytes().partition(b"\n")
    meta = json.loads(header)
    assert os.path.basename(meta["library"]).startswith("libseccomp.so")
    assert body == program
    meta["signature"][3] -= 1  # the library file changed since (an upgrade)
    record.write_bytes(json.dumps(meta).encode() + b"\n" + body)
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None


def test_a_malformed_record_is_not_used(cache_dir: Path) -> None:
    _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK)
    [record] = records(cache_dir)
    data = record.read_bytes()
    record.write_bytes(data[:-3])  # not whole BPF instructions
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None
    record.write_bytes(b"not json\n" + data.partition(b"\n")[2])
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None


def test_a_directory_others_may_write_is_not_trusted(cache_dir: Path) -> None:
    program = _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK)
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) == program
    cache_dir.chmod(0o777)
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None
    cache_dir.chmod(0o700)
    cache_dir.parent.chmod(0o777)
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None
    cache_dir.parent.chmod(0o755)
    os.chown(cache_dir, 1, 1)
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None


def test_a_symlinked_directory_is_not_trusted(cache_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    cache_dir.symlink_to(elsewhere)
    _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK)
    assert list(elsewhere.iterdir()) == []
    assert cache.load(default_text(), DOCKER_DEFAULT_MASK) is None


def test_nothing_is_kept_without_root(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert _seccomp.compile_filter(_seccomp.DEFAULT, DOCKER_DEFAULT_MASK) is not None
    assert not cache_dir.exists()
