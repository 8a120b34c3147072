"""Layer compression: digests in one pass, determinism, levels, decompression by magic.

gzip(1), zstd(1), xz(1) and bzip2(1) are the independent oracles for the formats.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import hashlib
import io
import lzma
import random
import subprocess
import threading
from pathlib import Path

import pytest
import zstandard

from pybuild.errors import ImageError, UsageError
from pybuild.oci._compression import (
    Compression,
    LayerBlobWriter,
    compress_layer,
    compress_stream,
    detect_compression,
    isal_level,
    layer_media_type,
    open_decompressed,
)
from pybuild.oci._layers import write_layer

from .._peers import require_tool, tool_present
from .layer_trees import build_rich_tree


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def sample() -> bytes:
    """~1.5 MiB of mixed data: compressible text and incompressible noise, so 1 MiB blocks differ."""
    rng = random.Random(5)
    text = b"".join(b"line %d of a layer with words %d\n" % (i, rng.randrange(100)) for i in range(30_000))
    return text + rng.randbytes(300_000) + text[:100_000]


@pytest.fixture
def tree(tmp_path: Path, require_root: None) -> Path:
    return build_rich_tree(tmp_path / "tree")


def tar_of(tree: Path) -> bytes:
    out = io.BytesIO()
    write_layer(tree, out)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_compress_layer_digests_match_the_bytes(tree: Path, kind: str) -> None:
    sink = io.BytesIO()
    blob = compress_layer(tree, kind, None, sink)
    data = sink.getvalue()
    plain = tar_of(tree)
    assert blob.digest == sha(data) and blob.size == len(data)
    assert blob.diff_id == sha(plain) and blob.uncompressed_size == len(plain)
    assert open_decompressed(io.BytesIO(data)).read() == plain
    assert blob.media_type == layer_media_type(Compression(kind))
    assert blob.stats is not None and blob.stats.tar_bytes == len(plain)


def test_external_tools_read_our_blobs(tree: Path) -> None:
    plain = tar_of(tree)
    for kind, command in (("gzip", ["gzip", "-dc"]), ("zstd", ["zstd", "-dc"])):
        if not tool_present(command[0]):
            continue
        sink = io.BytesIO()
        compress_layer(tree, kind, None, sink)
        out = subprocess.run(command, input=sink.getvalue(), capture_output=True, check=True).stdout
        assert out == plain, kind


def test_gzip_header_has_no_name_and_no_time(tree: Path) -> None:
    sink = io.BytesIO()
    compress_layer(tree, "gzip", None, sink)
    header = sink.getvalue()[:10]
    assert header[:3] == b"\x1f\x8b\x08"
    assert header[3] == 0  # no FNAME, FCOMMENT, FEXTRA
    assert header[4:8] == b"\0\0\0\0"  # mtime 0


@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_output_depends_on_bytes_only(sample: bytes, kind: str) -> None:
    """Same bytes → same blob, whatever the write chunking or the number of threads."""
    results = set()
    for threads, seed in ((1, 1), (2, 2), (-1, 3)):
        sink = io.BytesIO()
        writer = LayerBlobWriter(kind, None, sink, threads=threads)
        rng = random.Random(seed)
        position = 0
        while position < len(sample):
            step = rng.choice((1, 100, 4096, 1 << 20, 3 << 20))
            writer.write(sample[position : position + step])
            position += step
        blob = writer.close()
        assert blob.digest == sha(sink.getvalue())
        results.add(sink.getvalue())
    assert len(results) == 1


def test_same_tree_twice_same_blob(tree: Path) -> None:
    for kind in ("gzip", "zstd"):
        a, b = io.BytesIO(), io.BytesIO()
        first = compress_layer(tree, kind, 5 if kind == "gzip" else 7, a)
        second = compress_layer(tree, kind, 5 if kind == "gzip" else 7, b)
        assert first == second and a.getvalue() == b.getvalue()


def test_levels_change_the_output_and_stay_readable(sample: bytes) -> None:
    gzip_blobs = {}
    for level in range(10):
        sink = io.BytesIO()
        writer = LayerBlobWriter("gzip", level, sink)
        writer.write(sample)
        writer.close()
        assert gzip.decompress(sink.getvalue()) == sample
        gzip_blobs[isal_level(level)] = sink.getvalue()
    assert len(set(gzip_blobs.values())) == 4  # isal's four levels are all reachable
    assert len(gzip_blobs[3]) < len(gzip_blobs[0])
    sizes = {}
    for level in (1, 3, 19):
        sink = io.BytesIO()
        writer = LayerBlobWriter("zstd", level, sink)
        writer.write(sample)
        writer.close()
        assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(sink.getvalue())).read() == sample
        sizes[level] = len(sink.getvalue())
    assert sizes[19] < sizes[1]


def test_level_mapping() -> None:
    assert [isal_level(level) for level in range(10)] == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.mark.parametrize(("kind", "level"), [("gzip", 10), ("gzip", -1), ("zstd", 0), ("zstd", 23)])
def test_out_of_range_levels_are_usage_errors(kind: str, level: int) -> None:
    with pytest.raises(UsageError, match="out of range") as info:
        LayerBlobWriter(kind, level, io.BytesIO())
    assert info.value.hint


def test_compression_names() -> None:
    assert Compression.parse("Uncompressed") is Compression.NONE
    assert Compression.parse("zstd") is Compression.ZSTD
    with pytest.raises(UsageError, match="unknown compression"):
        Compression.parse("lz4")
    assert layer_media_type(Compression.GZIP) == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert layer_media_type(Compression.ZSTD) == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert layer_media_type(Compression.NONE) == "application/vnd.oci.image.layer.v1.tar"
    assert layer_media_type(Compression.GZIP, docker=True) == "application/vnd.docker.image.rootfs.diff.tar.gzip"
    assert layer_media_type(Compression.NONE, docker=True) == "application/vnd.docker.image.rootfs.diff.tar"


def test_compress_stream_recompresses(sample: bytes) -> None:
    source = io.BytesIO(gzip.compress(sample))
    sink = io.BytesIO()
    blob = compress_stream(source, "zstd", None, sink)
    assert blob.diff_id == sha(sample)
    assert open_decompressed(io.BytesIO(sink.getvalue())).read() == sample


@pytest.mark.parametrize("kind", ["gzip", "zstd", "none"])
def test_a_known_plain_file_is_compressed_from_a_mapping_to_the_same_blob(sample: bytes, kind: str, tmp_path: Path) -> None:
    data = sample * 3  # several 1 MiB blocks and a partial one
    (tmp_path / "plain.tar").write_bytes(data)
    streamed, mapped = io.BytesIO(), io.BytesIO()
    expected = compress_stream(io.BytesIO(data), kind, None, streamed)
    with open(tmp_path / "plain.tar", "rb") as source:
        blob = compress_stream(source, kind, None, mapped, known_diff_id=sha(data))
    assert mapped.getvalue() == streamed.getvalue()
    assert (blob.digest, blob.size, blob.diff_id, blob.uncompressed_size) == (expected.digest, expected.size, sha(data), len(data))


def test_a_known_file_read_from_the_middle_is_compressed_from_there(sample: bytes, tmp_path: Path) -> None:
    (tmp_path / "prefixed").write_bytes(b"a prefix that is not part of the layer" + sample)
    expected = io.BytesIO()
    compress_stream(io.BytesIO(sample), "zstd", None, expected)
    out = io.BytesIO()
    with open(tmp_path / "prefixed", "rb") as source:
        source.seek(len(b"a prefix that is not part of the layer"))
        blob = compress_stream(source, "zstd", None, out, known_diff_id=sha(sample))
    assert out.getvalue() == expected.getvalue() and blob.uncompressed_size == len(sample)


def test_an_empty_known_file_is_read_not_mapped(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    with open(tmp_path / "empty", "rb") as source:
        blob = compress_stream(source, "zstd", None, io.BytesIO(), known_diff_id=sha(b""))
    assert blob.uncompressed_size == 0 and blob.diff_id == sha(b"")


class Trickle(io.RawIOBase):
    """A stream that returns at most 7 bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._data.read(7 if n is None or n < 0 else min(n, 7))


@functools.cache
def compressed_forms(data: bytes) -> dict[str, bytes]:
    half = len(data) // 2
    zc = zstandard.ZstdCompressor()
    return {
        "plain": data,
        "gzip-multi-member": gzip.compress(data[:half]) + gzip.compress(data[half:]),
        "zstd-multi-frame": zc.compress(data[:half]) + zc.compress(data[half:]),
        "bzip2-multi-stream": bz2.compress(data[:half]) + bz2.compress(data[half:]),
        "xz": lzma.compress(data),
    }


def test_open_decompressed_reads_every_form(sample: bytes) -> None:
    for name, blob in compressed_forms(sample).items():
        assert open_decompressed(io.BytesIO(blob)).read() == sample, name
        reader = open_decompressed(Trickle(blob[: 64 * 1024 * 1024]))
        got = b"".join(iter(lambda reader=reader: reader.read(65536), b""))
        assert got == sample, name


def test_open_decompressed_of_tiny_inputs() -> None:
    assert open_decompressed(io.BytesIO(b"")).read() == b""
    assert open_decompressed(io.BytesIO(b"ab")).read() == b"ab"
    assert open_decompressed(io.BytesIO(b"BZhxyz")).read() == b"BZhxyz"  # not a bzip2 level digit


def test_detect_compression() -> None:
    assert detect_compression(gzip.compress(b"x")) is Compression.GZIP
    assert detect_compression(zstandard.ZstdCompressor().compress(b"x")) is Compression.ZSTD
    assert detect_compression(bz2.compress(b"x")) is Compression.BZIP2
    assert detect_compression(lzma.compress(b"x")) is Compression.XZ
    assert detect_compression(b"ustar") is Compression.NONE


@pytest.mark.parametrize("form", ["gzip-multi-member", "zstd-multi-frame", "bzip2-multi-stream", "xz"])
def test_damaged_streams_raise_image_errors(sample: bytes, form: str) -> None:
    blob = compressed_forms(sample)[form]
    for damaged in (blob[: len(blob) // 3], blob[:20] + bytes(255 - b for b in blob[20:400]) + blob[400:]):
        with pytest.raises(ImageError, match="cannot decompress") as info:
            open_decompressed(io.BytesIO(damaged)).read()
        assert info.value.hint


def test_writer_errors_stop_the_threads(sample: bytes) -> None:
    class Broken:
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    before = set(threading.enumerate())
    with pytest.raises(OSError, match="No space"):
        writer = LayerBlobWriter("gzip", None, Broken())
        try:
            for _ in range(4):
                writer.write(sample)
            writer.close()
        except BaseException:
            writer.abort()
            raise
    assert set(threading.enumerate()) <= before


def test_zstd_truncation_is_caught_at_every_cut() -> None:
    data = b"hello layer " * 5000
    compressor = zstandard.ZstdCompressor(write_checksum=True)
    skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"12345"
    blob = compressor.compress(data[:100]) + skippable + compressor.compress(data[100:])
    assert open_decompressed(io.BytesIO(blob)).read() == data
    for cut in range(4, len(blob)):
        if cut == len(compressor.compress(data[:100])) or cut == len(compressor.compress(data[:100])) + len(skippable):
            continue  # a frame boundary: a shorter but well-formed stream
        with pytest.raises(ImageError, match="truncated|cannot decompress"):
            open_decompressed(io.BytesIO(blob[:cut])).read()


def test_zstd_cli_output_reads(sample: bytes) -> None:
    require_tool("zstd")
    for flags in (["-1"], ["-19", "--no-check"], ["-3", "-T2", "--content-size"]):
        blob = subprocess.run(["zstd", "-c", "-q", *flags], input=sample, capture_output=True, check=True).stdout
        assert open_decompressed(io.BytesIO(blob)).read() == sample, flags
