"""ADD of a decompression bomb stops at the unpack limit and leaves nothing behind.

The bombs are small on disk (compressed zeros); the limit is set low with
PYBUILD_UNPACK_LIMIT so the tests stay fast.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

LIMIT = "10m"
LIMIT_BYTES = 10 << 20


def _tar_of_zeros(size: int) -> Iterator[bytes]:
    """A tar holding one file of ``size`` zero bytes, in pieces (never all in memory)."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    yield info.tobuf(tarfile.PAX_FORMAT)
    block = b"\0" * (1 << 20)
    for _ in range(size // len(block)):
        yield block
    yield b"\0" * (1024 + (-size % 512))


def _zstd() -> object:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compressobj()


COMPRESSORS: dict[str, Callable[[], object]] = {
    "gz": lambda: zlib.compressobj(9, zlib.DEFLATED, 31),
    "bz2": lambda: bz2.BZ2Compressor(9),
    "xz": lambda: lzma.LZMACompressor(preset=1),
    "zst": _zstd,
}


def bomb(kind: str, size: int) -> bytes:
    compressor = COMPRESSORS[kind]()
    parts = [compressor.compress(piece) for piece in _tar_of_zeros(size)]  # type: ignore[attr-defined]
    parts.append(compressor.flush())  # type: ignore[attr-defined]
    return b"".join(parts)


def disk_usage(root: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_an_add_bomb_stops_at_the_unpack_limit_and_leaves_nothing(cli, root: Path, busybox_image: str, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    data = bomb(kind, (200 if kind == "gz" else 64) << 20)
    assert len(data) < 1 << 20
    (ctx / f"bomb.tar.{kind}").write_bytes(data)
    dockerfile = ctx / "Dockerfile"
    dockerfile.write_text(f"FROM busybox\nADD bomb.tar.{kind} /unpacked/\n")
    before = disk_usage(root)
    result = cli("build", "--progress=plain", str(ctx), check=False, env={"PYBUILD_UNPACK_LIMIT": LIMIT})
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {dockerfile}:2: ")
    assert f"bomb.tar.{kind}" in errors[0] and "beyond the 10 MiB unpack limit" in errors[0], errors[0]
    assert "PYBUILD_UNPACK_LIMIT" in result.stderr  # the hint says how to allow more
    assert not [p for p in root.rglob("*") if p.name.startswith("active-")]  # the partial layer is gone
    assert disk_usage(root) - before < LIMIT_BYTES


def test_an_archive_within_the_limit_unpacks(cli, root: Path, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "fine.tar.zst").write_bytes(bomb("zst", 4 << 20))
    (ctx / "Dockerfile").write_text("FROM busybox\nADD fine.tar.zst /unpacked/\n")
    cli("build", "-t", "fine", str(ctx), env={"PYBUILD_UNPACK_LIMIT": LIMIT})
    image = open_image("fine")
    assert image.stat("/unpacked/zeros").st_size == 4 << 20


def test_a_compressed_file_that_is_not_a_tar_is_copied_as_is(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    payload = zlib.compress(b"not a tar\n" * 100)
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = gz.compress(b"just gzip, not a tar\n") + gz.flush()
    (ctx / "notes.txt.gz").write_bytes(data)
    (ctx / "raw.bin").write_bytes(payload)
    (ctx / "Dockerfile").write_text("FROM busybox\nADD notes.txt.gz raw.bin /files/\n")
    cli("build", "-t", "copied", str(ctx))
    image = open_image("copied")
    assert image.find("/files/notes.txt.gz").read_bytes() == data  # as Docker: not a tar, so not unpacked
    assert image.find("/files/raw.bin").read_bytes() == payload


def test_a_malformed_unpack_limit_is_a_clear_error(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with tarfile.open(ctx / "small.tar", "w") as tar:
        tar.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    (ctx / "Dockerfile").write_text("FROM busybox\nADD small.tar /x/\n")
    result = cli("build", str(ctx), check=False, env={"PYBUILD_UNPACK_LIMIT": "lots"})
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "PYBUILD_UNPACK_LIMIT" in result.stderr
