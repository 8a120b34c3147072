"""Files that start their writeback early: same bytes, the hint given every step."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pybuild.cache import _writeback
from pybuild.cache._writeback import open_with_writeback, start_writeback


def test_writeback_is_asked_for_every_step_and_the_bytes_are_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hints: list[int] = []
    monkeypatch.setattr(_writeback, "start_writeback", lambda fd: hints.append(fd))
    chunks = [os.urandom(3000) for _ in range(10)]
    with open_with_writeback(tmp_path / "f", step=10_000) as out:
        for chunk in chunks:
            out.write(chunk)
            out.flush()  # each chunk reaches the raw file, as big writes do
        out.seek(5)
        out.write(b"patched")
    expected = bytearray(b"".join(chunks))
    expected[5:12] = b"patched"
    assert (tmp_path / "f").read_bytes() == bytes(expected)
    assert len(hints) == 2  # 30,000 bytes, a hint per 10,000 written


def test_the_real_hint_works_on_a_file_and_fails_quietly_elsewhere(tmp_path: Path) -> None:
    with open_with_writeback(tmp_path / "f", step=1) as out:
        out.write(b"x" * 4096)
        out.flush()
        start_writeback(out.fileno())
    assert (tmp_path / "f").read_bytes() == b"x" * 4096
    read_end, write_end = os.pipe()
    try:
        start_writeback(write_end)  # ESPIPE: only the hint is lost
    finally:
        os.close(read_end)
        os.close(write_end)
