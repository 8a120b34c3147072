"""Layer tree → tar (write_layer) and back (apply_layer): format, determinism, round trips.

Python's tarfile and GNU tar read our tars as independent oracles.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.errors import StoreError
from pybuild.oci._layers import write_layer
from pybuild.oci._tar_apply import apply_layer

from .._peers import tool_present
from .layer_trees import BIG_ID, FAR_FUTURE, build_rich_tree, describe


@pytest.fixture
def rich_tree(tmp_path: Path, require_root: None) -> Path:
    return build_rich_tree(tmp_path / "rich")


def layer_bytes(tree: Path, **kwargs) -> bytes:
    out = io.BytesIO()
    stats = write_layer(tree, out, **kwargs)
    data = out.getvalue()
    assert stats.tar_bytes == len(data)
    return data


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as tar:
        return tar.getmembers()


def test_tarfile_reads_every_entry_with_its_metadata(rich_tree: Path) -> None:
    data = layer_bytes(rich_tree)
    by_name = {m.name: m for m in members(data)}
    hostname = by_name["etc/hostname"]
    assert hostname.isreg() and hostname.size == 4 and hostname.uid == 0
    assert hostname.pax_headers["SCHILY.xattr.user.comment"].encode("utf-8", "surrogateescape") == b"binary\xff\x00value"
    assert by_name["usr/bin/tool"].mode == 0o4755
    assert by_name["owned"].uid == BIG_ID and by_name["owned"].gid == BIG_ID + 1
    assert by_name["owned"].mtime == FAR_FUTURE
    assert by_name["empty"].mtime == 0
    assert by_name["dev/null"].ischr() and (by_name["dev/null"].devmajor, by_name["dev/null"].devminor) == (1, 3)
    assert by_name["dev/loop0"].isblk() and by_name["dev/loop0"].devmajor == 7
    assert by_name["dev/fifo"].isfifo()
    assert by_name["links/relative"].issym() and by_name["links/relative"].linkname == "../etc/hostname"
    assert by_name["links/relative"].uid == 1000
    assert by_name["long-target"].linkname == "t" * 150
    assert by_name["d" * 120 + "/" + "f" * 200].size == len("long name\n")
    assert os.fsdecode(b"latin1-\xe9") in by_name
    assert "unicode-\u00e9\u4e2d" in by_name
    # uname/gname are empty, ids numeric.
    assert all(m.uname == "" and m.gname == "" for m in by_name.values())


def test_whiteouts_and_opaque_dirs_follow_the_image_spec(rich_tree: Path) -> None:
    entries = members(layer_bytes(rich_tree))
    names = [m.name for m in entries]
    assert ".wh.deleted" in names and "deleted" not in names
    assert "etc/.wh.deleted-dir" in names
    for name in (".wh.deleted", "etc/.wh.deleted-dir"):
        whiteout = entries[names.index(name)]
        assert whiteout.isreg() and whiteout.size == 0
    # The opaque marker comes right after its directory, before the directory's children.
    position = names.index("var/cache")
    assert names[position + 1] == "var/cache/.wh..wh..opq"
    assert names.index("var/cache/new") > position + 1
    # overlayfs's own xattrs never reach the tar.
    for member in entries:
        assert not any(key.startswith("SCHILY.xattr.trusted.overlay.") for key in member.pax_headers), member.name


def test_order_is_depth_first_sorted_and_parents_first(rich_tree: Path) -> None:
    names = [m.name for m in members(layer_bytes(rich_tree))]
    seen: set[str] = set()
    for name in names:
        parent = name.rpartition("/")[0]
        assert not parent or parent in seen, f"{name} before its parent"
        seen.add(name)
    top_level = [n for n in names if "/" not in n]
    expected = sorted(top_level, key=lambda n: os.fsencode(n.removeprefix(".wh.")))
    assert top_level == expected


def test_hardlinks_point_at_the_first_path(rich_tree: Path) -> None:
    entries = {m.name: m for m in members(layer_bytes(rich_tree))}
    assert entries["etc/c-hardlink"].isreg()  # first in walk order: etc/ sorts before links/
    for name in ("links/a", "links/b"):
        assert entries[name].islnk() and entries[name].linkname == "etc/c-hardlink"


def test_hardlinked_whiteouts_stay_whiteouts(tmp_path: Path, require_root: None) -> None:
    # Newer kernels share one whiteout inode across a layer (hard links to it).
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mknod(tree / "a", stat.S_IFCHR, 0)
    os.link(tree / "a", tree / "b")
    entries = members(layer_bytes(tree))
    assert [(m.name, m.isreg(), m.size) for m in entries] == [(".wh.a", True, 0), (".wh.b", True, 0)]


def test_gnu_tar_lists_the_layer(rich_tree: Path) -> None:
    data = layer_bytes(rich_tree)
    listing = subprocess.run(["tar", "-tvf", "-"], input=data, capture_output=True, check=True).stdout.decode(
        "utf-8", "replace"
    )
    assert "var/cache/.wh..wh..opq" in listing
    assert "links/b link to etc/c-hardlink" in listing
    assert ("f" * 200) in listing


def test_same_tree_gives_same_bytes_and_copies_too(rich_tree: Path, tmp_path: Path) -> None:
    first = layer_bytes(rich_tree)
    assert layer_bytes(rich_tree) == first
    # A copy made at another time (other inode numbers, ctime, atime) archives identically.
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(rich_tree), str(copy)], check=True)
    assert layer_bytes(copy) == first


def test_mtime_clamp_makes_rebuilds_identical(rich_tree: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-a", str(rich_tree), str(copy)], check=True)
    for path in copy.rglob("*"):
        if path.name != "empty":  # the one time older than the epoch below stays as it was
            os.utime(path, (1_700_000_000, 1_700_000_000 + 17), follow_symlinks=False)
    assert layer_bytes(copy) != layer_bytes(rich_tree)
    epoch = 1_500_000_000
    clamped = layer_bytes(rich_tree, mtime=epoch)
    assert layer_bytes(copy, mtime=epoch) == clamped
    assert {m.mtime for m in members(clamped)} <= {0, epoch}
    # Older times stay: the clamp only lowers.
    assert {m.name: m.mtime for m in members(clamped)}["empty"] == 0


def test_empty_tree_is_just_the_end_marker(tmp_path: Path) -> None:
    assert layer_bytes(tmp_path) == b"\0" * 1024


def test_sockets_are_skipped(tmp_path: Path) -> None:
    import socket

    (tmp_path / "file").write_text("x")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        assert [m.name for m in members(layer_bytes(tmp_path))] == ["file"]


def test_names_that_look_like_whiteouts_are_refused(tmp_path: Path) -> None:
    (tmp_path / ".wh.sneaky").write_text("x")
    with pytest.raises(StoreError, match=r"\.wh\.sneaky"):
        write_layer(tmp_path, io.BytesIO())


def test_unreadable_tree_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot read layer tree"):
        write_layer(tmp_path / "missing", io.BytesIO())


def test_round_trip_keeps_everything(rich_tree: Path, tmp_path: Path) -> None:
    data = layer_bytes(rich_tree)
    dest = tmp_path / "applied"
    dest.mkdir()
    stats = apply_layer(io.BytesIO(data), dest)
    assert describe(dest) == describe(rich_tree)
    assert stats.whiteouts == 3  # two deletions and one opaque directory
    assert stats.tar_bytes == len(data)
    import hashlib

    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    # And the applied tree archives to the same bytes again.
    assert layer_bytes(dest) == data


def test_round_trip_through_gnu_tar_written_layers(tmp_path: Path, require_root: None) -> None:
    # A layer another tool wrote (GNU format, ./ prefixes, long names) applies too.
    src = tmp_path / "src"
    (src / "a" / ("x" * 150)).mkdir(parents=True)
    (src / "a" / ("x" * 150) / "file").write_text("deep\n")
    os.symlink("a", src / "link")
    (src / "a" / "exe").write_text("#!/bin/sh\n")
    os.chmod(src / "a" / "exe", 0o755)
    os.chown(src / "a" / "exe", 12, 34)
    tar = subprocess.run(["tar", "--format=gnu", "-cf", "-", "-C", str(src), "."], capture_output=True, check=True).stdout
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_layer(io.BytesIO(tar), dest)
    assert describe(dest) == describe(src)


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in (
            ("x", tarfile.DIRTYPE, b""),
            ("x/inner", tarfile.REGTYPE, b"1"),
            ("x", tarfile.REGTYPE, b"now a file"),
            ("y", tarfile.REGTYPE, b"file"),
            ("y", tarfile.DIRTYPE, b""),
            ("d", tarfile.DIRTYPE, b""),
            ("d/keep", tarfile.REGTYPE, b"k"),
            ("d", tarfile.DIRTYPE, b""),
        ):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), dest)
    assert (dest / "x").read_bytes() == b"now a file"
    assert (dest / "y").is_dir()
    assert (dest / "d" / "keep").read_bytes() == b"k"  # a directory entry again merges, it does not wipe


def test_aufs_metadata_is_ignored_and_missing_parents_are_made(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (".wh..wh.plnk/123.456", "deep/er/file", ".wh..wh.aufs"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    dest = tmp_path / "dest"
    dest.mkdir()
    apply_layer(io.BytesIO(buf.getvalue()), dest)
    assert sorted(p.name for p in dest.iterdir()) == ["deep"]
    assert (dest / "deep" / "er" / "file").read_bytes() == b"x"
    assert stat.S_IMODE((dest / "deep").stat().st_mode) == 0o755


def test_apply_reads_compressed_layers(rich_tree: Path, tmp_path: Path) -> None:
    data = layer_bytes(rich_tree)
    for tool in ("gzip", "zstd", "xz", "bzip2"):
        if not tool_present(tool):
            continue
        compressed = subprocess.run([tool, "-c"], input=data, capture_output=True, check=True).stdout
        dest = tmp_path / tool
        dest.mkdir()
        stats = apply_layer(io.BytesIO(compressed), dest)
        assert describe(dest) == describe(rich_tree), tool
        assert stats.tar_bytes == len(data)


def _reference_layer(tree: Path) -> bytes:
    """The layer written the plain way: os.walk order rebuilt, whole files read, one buffer."""
    from pybuild.oci._layers import OPAQUE_MARKER, WHITEOUT_PREFIX, _xattrs, is_whiteout
    from pybuild.oci._tar_format import DIRECTORY, END_OF_ARCHIVE, HARDLINK, REGULAR, SYMLINK, encode_header, padding

    out = bytearray()
    links: dict[tuple[int, int], bytes] = {}

    def walk(directory: bytes, prefix: bytes) -> None:
        for base in sorted(os.listdir(directory)):
            path, name = os.path.join(directory, base), prefix + base
            st = os.lstat(path)
            fields = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns // 10**9}
            if is_whiteout(st):
                out.extend(encode_header(prefix + WHITEOUT_PREFIX + base, REGULAR, **fields))
                continue
            xattrs, opaque = _xattrs(path)
            if stat.S_ISDIR(st.st_mode):
                out.extend(encode_header(name, DIRECTORY, xattrs=xattrs, **fields))
                if opaque:
                    out.extend(encode_header(name + b"/" + OPAQUE_MARKER, REGULAR, mode=0, mtime=fields["mtime"]))
                walk(path, name + b"/")
            elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in links:
                out.extend(encode_header(name, HARDLINK, linkname=links[(st.st_dev, st.st_ino)], **fields))
            elif stat.S_ISREG(st.st_mode):
                links.setdefault((st.st_dev, st.st_ino), name)
                with open(path, "rb") as f:
                    data = f.read()
                out.extend(encode_header(name, REGULAR, size=len(data), xattrs=xattrs, **fields))
                out.extend(data + b"\0" * padding(len(data)))
            elif stat.S_ISLNK(st.st_mode):
                links.setdefault((st.st_dev, st.st_ino), name) if st.st_nlink > 1 else None
                out.extend(encode_header(name, SYMLINK, linkname=os.readlink(path), xattrs=xattrs, **fields))

    walk(os.fsencode(tree), b"")
    return bytes(out + END_OF_ARCHIVE)


def test_the_streamed_layer_is_the_plainly_written_one(tmp_path: Path, require_root: None) -> None:
    tree = tmp_path / "tree"
    for d in range(3):
        (tree / f"d{d}" / "sub").mkdir(parents=True)
        for f in range(40):  # enough small files to fill several chunks
            (tree / f"d{d}" / "sub" / f"f{f}").write_bytes(os.urandom(f * 997))
    (tree / "big").write_bytes(os.urandom(3 * (1 << 20) + 17))  # streamed past the buffer
    os.link(tree / "d0" / "sub" / "f3", tree / "d2" / "hard")
    os.symlink("d0/sub/f1", tree / "link")
    os.setxattr(tree / "d1" / "sub" / "f5", "user.note", b"kept")
    os.setxattr(tree / "d1", "trusted.overlay.opaque", b"y")
    os.mknod(tree / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))
    assert layer_bytes(tree) == _reference_layer(tree)


def test_an_entry_that_cannot_be_read_is_named_by_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "bad").write_text("x")
    real_read = os.read

    def failing_read(fd: int, size: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/bad"):
            raise OSError(5, "Input/output error")
        return real_read(fd, size)

    monkeypatch.setattr(os, "read", failing_read)
    with pytest.raises(StoreError, match=f"cannot read layer tree at {tmp_path}/a/b/bad: Input/output error"):
        write_layer(tmp_path, io.BytesIO())
