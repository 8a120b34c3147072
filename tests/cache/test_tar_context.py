"""A context sent as a tar stream: unpacked safely, hashed like a directory."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest

from pybuild.cache import ContextHasher, DockerIgnore, Root, extract_context_tar, open_tar_context
from pybuild.errors import ContextError


def _tar(entries: list[tuple[str, str, bytes | str]], *, compress: bool = False) -> io.BytesIO:
    """A tar from (name, kind, payload): kind is file | dir | symlink | hardlink | fifo | char."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(payload)
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, str(payload)
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "char":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            tar.addfile(info)
    data = buffer.getvalue()
    return io.BytesIO(gzip.compress(data) if compress else data)


def _extract(tmp_path: Path, entries, **kw) -> Path:
    dest = tmp_path / "out"
    dest.mkdir()
    extract_context_tar(_tar(entries), dest, **kw)
    return dest


def test_tar_context_hashes_like_the_same_directory(root: Root, tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    (directory / "src").mkdir(parents=True)
    (directory / "src" / "main.py").write_text("print(1)\n")
    (directory / "Dockerfile").write_text("FROM scratch\n")
    os.symlink("src/main.py", directory / "link")
    os.chmod(directory / "src" / "main.py", 0o755)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in ("Dockerfile", "src", "link"):
            tar.add(directory / name, arcname=name)
    for compressed in (False, True):
        data = gzip.compress(buffer.getvalue()) if compressed else buffer.getvalue()
        with open_tar_context(root, io.BytesIO(data)) as context:
            assert root.path / "tmp" in context.path.parents
            from_tar = ContextHasher(context.path, DockerIgnore()).select(["src", "link", "Dockerfile"])
            holder = context.path
        assert not holder.exists(), "closing removes the unpacked context"
        from_dir = ContextHasher(directory, DockerIgnore()).select(["src", "link", "Dockerfile"])
        assert from_tar.entries == from_dir.entries


def test_names_are_cleaned_and_absolute_names_are_relative(tmp_path: Path) -> None:
    dest = _extract(tmp_path, [("./a/./b.txt", "file", "b"), ("/abs.txt", "file", "abs"), ("c/../d.txt", "file", "d")])
    assert (dest / "a" / "b.txt").read_text() == "b"
    assert (dest / "abs.txt").read_text() == "abs"
    assert (dest / "d.txt").read_text() == "d"


@pytest.mark.parametrize("name", ["../escape.txt", "a/../../escape.txt", "../../../../tmp/escape.txt"])
def test_names_climbing_out_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ContextError) as info:
        _extract(tmp_path, [(name, "file", "x")])
    assert "outside the context" in str(info.value)
    assert not (tmp_path / "escape.txt").exists()


def test_nothing_is_written_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(ContextError) as info:
        _extract(tmp_path, [("link", "symlink", str(outside)), ("link/owned.txt", "file", "x")])
    assert "not a directory" in str(info.value)
    assert list(outside.iterdir()) == []


def test_a_file_replacing_a_symlink_does_not_write_through_it(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("original")
    dest = _extract(tmp_path, [("f", "symlink", str(target)), ("f", "file", "replaced")])
    assert target.read_text() == "original"
    assert (dest / "f").read_text() == "replaced" and not (dest / "f").is_symlink()


def test_a_directory_replaced_by_a_symlink_is_forgotten(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    with pytest.raises(ContextError):
        _extract(
            tmp_path,
            [("d", "dir", b""), ("d/x", "file", "x"), ("d", "symlink", str(outside)), ("d/y", "file", "y")],
        )
    assert list(outside.iterdir()) == []


def test_hard_links_must_point_at_earlier_files(tmp_path: Path) -> None:
    dest = _extract(tmp_path, [("a.txt", "file", "a"), ("b.txt", "hardlink", "a.txt")])
    assert os.stat(dest / "a.txt").st_ino == os.stat(dest / "b.txt").st_ino


@pytest.mark.parametrize("link", ["/etc/passwd", "../secret", "later.txt", "dir"])
def test_bad_hard_links_are_refused(tmp_path: Path, link: str) -> None:
    (tmp_path / "secret").write_text("s")
    with pytest.raises(ContextError) as info:
        _extract(tmp_path, [("dir", "dir", b""), ("x", "hardlink", link), ("later.txt", "file", "l")])
    assert "x" in str(info.value)


def test_devices_are_skipped_fifos_kept(tmp_path: Path) -> None:
    dest = _extract(tmp_path, [("null", "char", b""), ("pipe", "fifo", b"")])
    assert not (dest / "null").exists()
    assert (dest / "pipe").is_fifo()


def test_size_budget(tmp_path: Path) -> None:
    with pytest.raises(ContextError) as info:
        _extract(tmp_path, [("big", "file", b"x" * 1000)], max_bytes=999)
    assert "999 bytes" in str(info.value)


def test_entry_budget(tmp_path: Path) -> None:
    with pytest.raises(ContextError) as info:
        _extract(tmp_path, [(f"f{i}", "file", b"") for i in range(11)], max_entries=10)
    assert "10 entries" in str(info.value)


def test_damaged_tar_is_a_context_error(root: Root) -> None:
    good = _tar([("a.txt", "file", "x" * 5000)], compress=True).getvalue()
    with pytest.raises(ContextError) as info:
        open_tar_context(root, io.BytesIO(good[: len(good) // 2]))
    assert "damaged" in str(info.value)
    with pytest.raises(ContextError):
        open_tar_context(root, io.BytesIO(b"definitely not a tar" * 100))
    leftovers = [p for p in (root.path / "tmp").rglob("*") if p.is_file() and p.suffix != ".lock"]
    assert leftovers == [], "a failed unpack leaves nothing behind"


def test_directory_modes_apply_after_contents(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("ro")
        info.type, info.mode = tarfile.DIRTYPE, 0o555
        tar.addfile(info)
        f = tarfile.TarInfo("ro/inside")
        f.size = 2
        tar.addfile(f, io.BytesIO(b"ok"))
    dest = tmp_path / "out"
    dest.mkdir()
    buffer.seek(0)
    extract_context_tar(buffer, dest)
    assert (dest / "ro" / "inside").read_text() == "ok"
    assert (os.stat(dest / "ro").st_mode & 0o777) == 0o555
