"""Hostile layer tars: nothing may be written (or linked) outside the target directory.

The tars are built with Python's tarfile (and by hand where tarfile refuses),
independently of pybuild's writer.  Every test checks the host side: files
next to ``dest`` are unchanged and nothing new appeared there.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path

import pytest

from pybuild.errors import ImageError
from pybuild.oci._tar_apply import apply_layer


def make_tar(*entries: tuple) -> bytes:
    """entries: (name, type, data_or_linkname[, extra pax headers])."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload, *rest in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o644
            if rest:
                info.pax_headers = rest[0]
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
                tar.addfile(info)
            elif kind == tarfile.DIRTYPE:
                tar.addfile(info)
            else:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    """Everything under ``root`` except ``dest``: type, nlink and content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if "dest" in dirnames and Path(dirpath) == root:
            dirnames.remove("dest")
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            st = os.lstat(path)
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
            out[str(path.relative_to(root))] = (oct(st.st_mode), st.st_nlink, content)
    return out


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(root, dest, outside): ``outside/secret`` is the file an attack wants."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("do not touch\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    return tmp_path, dest, outside


def refused(data: bytes, dest: Path, match: str, **kwargs) -> ImageError:
    with pytest.raises(ImageError, match=match) as info:
        apply_layer(io.BytesIO(data), dest, **kwargs)
    assert info.value.hint
    return info.value


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "./../escape", "a/b/../../../escape"])
def test_dotdot_names_are_refused(arena, name: str) -> None:
    root, dest, _ = arena
    before = snapshot(root)
    error = refused(make_tar(("ok", tarfile.REGTYPE, b"1"), (name, tarfile.REGTYPE, b"pwned")), dest, r"'\.\.'")
    assert name in str(error)
    assert snapshot(root) == before
    assert not (root / "escape").exists()


def test_absolute_names_land_inside(arena) -> None:
    root, dest, outside = arena
    target = outside / "planted"
    before = snapshot(root)
    apply_layer(io.BytesIO(make_tar((str(target), tarfile.REGTYPE, b"inside"))), dest)
    assert not target.exists()
    assert (dest / str(target).lstrip("/")).read_bytes() == b"inside"
    assert snapshot(root) == before


def test_symlinked_parent_in_the_tar_is_not_followed(arena) -> None:
    root, dest, outside = arena
    before = snapshot(root)
    data = make_tar(("link", tarfile.SYMTYPE, str(outside)), ("link/secret", tarfile.REGTYPE, b"pwned"))
    refused(data, dest, "symlink")
    assert snapshot(root) == before
    assert (dest / "link").is_symlink()


def test_relative_symlinked_parent_is_not_followed(arena) -> None:
    root, dest, _ = arena
    before = snapshot(root)
    data = make_tar(("up", tarfile.SYMTYPE, "../outside"), ("up/new", tarfile.REGTYPE, b"pwned"))
    refused(data, dest, "symlink")
    assert snapshot(root) == before


def test_symlink_already_in_dest_is_not_followed(arena) -> None:
    root, dest, outside = arena
    os.symlink(outside, dest / "pre")
    before = snapshot(root)
    refused(make_tar(("pre/secret", tarfile.REGTYPE, b"pwned")), dest, "symlink")
    assert snapshot(root) == before


def test_file_replacing_a_symlink_replaces_the_link_not_its_target(arena) -> None:
    root, dest, outside = arena
    before = snapshot(root)
    data = make_tar(("f", tarfile.SYMTYPE, str(outside / "secret")), ("f", tarfile.REGTYPE, b"mine"))
    apply_layer(io.BytesIO(data), dest)
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"mine"
    assert snapshot(root) == before


@pytest.mark.parametrize("linkname", ["../outside/secret", "/../outside/secret"])
def test_hardlink_out_of_the_tree_is_refused(arena, linkname: str) -> None:
    root, dest, _ = arena
    before = snapshot(root)
    refused(make_tar(("grab", tarfile.LNKTYPE, linkname)), dest, "grab")
    assert snapshot(root) == before  # nlink of outside/secret unchanged too


def test_absolute_hardlink_target_resolves_inside_only(arena) -> None:
    root, dest, outside = arena
    before = snapshot(root)
    refused(make_tar(("grab", tarfile.LNKTYPE, str(outside / "secret"))), dest, "in the layer")
    assert snapshot(root) == before


def test_hardlink_through_a_symlinked_parent_is_refused(arena) -> None:
    root, dest, outside = arena
    before = snapshot(root)
    data = make_tar(("door", tarfile.SYMTYPE, str(outside)), ("grab", tarfile.LNKTYPE, "door/secret"))
    refused(data, dest, "symlink")
    assert snapshot(root) == before


def test_hardlink_to_a_symlink_links_the_symlink_itself(arena) -> None:
    root, dest, outside = arena
    before = snapshot(root)
    data = make_tar(("s", tarfile.SYMTYPE, str(outside / "secret")), ("h", tarfile.LNKTYPE, "s"))
    apply_layer(io.BytesIO(data), dest)
    assert (dest / "h").is_symlink()
    assert os.lstat(dest / "h").st_ino == os.lstat(dest / "s").st_ino
    assert snapshot(root) == before


def test_symlink_loops_are_harmless(arena) -> None:
    root, dest, _ = arena
    before = snapshot(root)
    data = make_tar(
        ("a", tarfile.SYMTYPE, "b"),
        ("b", tarfile.SYMTYPE, "a"),
        ("self", tarfile.SYMTYPE, "self"),
        ("a/x", tarfile.REGTYPE, b"loop"),
    )
    refused(data, dest, "a/x")
    assert os.readlink(dest / "a") == "b" and os.readlink(dest / "self") == "self"
    assert snapshot(root) == before


def test_whiteout_cannot_name_dot_dot(arena) -> None:
    root, dest, _ = arena
    (dest / "sub").mkdir()
    before = snapshot(root)
    refused(make_tar(("sub/.wh...", tarfile.REGTYPE, b"")), dest, "whites out")
    assert snapshot(root) == before and (dest / "sub").is_dir()


def test_overlay_xattrs_from_the_tar_are_dropped(arena, require_root: None) -> None:
    _, dest, _ = arena
    headers = {
        "SCHILY.xattr.trusted.overlay.redirect": "/etc",
        "SCHILY.xattr.trusted.overlay.opaque": "y",
        "SCHILY.xattr.user.kept": "yes",
    }
    apply_layer(io.BytesIO(make_tar(("d", tarfile.DIRTYPE, b"", headers))), dest)
    assert os.listxattr(dest / "d") == ["user.kept"]


def _zeros_tar_gz(size: int) -> bytes:
    """A gzip'd tar holding one file of ``size`` zero bytes, made without holding it in memory."""
    info = tarfile.TarInfo("zeros")
    info.size = size
    header = info.tobuf(tarfile.PAX_FORMAT)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [compressor.compress(header)]
    block = b"\0" * (1 << 20)
    for _ in range(size // len(block)):
        parts.append(compressor.compress(block))
    parts.append(compressor.compress(b"\0" * (1024 + (-size % 512))))
    parts.append(compressor.flush())
    return b"".join(parts)


def test_gzip_bomb_stops_at_the_size_budget(arena) -> None:
    root, dest, _ = arena
    bomb = _zeros_tar_gz(256 << 20)
    assert len(bomb) < 1 << 20  # 256 MiB in well under 1 MiB
    before = snapshot(root)
    refused(bomb, dest, "beyond the 4 MiB unpack limit", size_budget=4 << 20)
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= 4 << 20
    assert snapshot(root) == before


def test_entry_count_budget(arena) -> None:
    _, dest, _ = arena
    data = make_tar(*[(f"f{i}", tarfile.REGTYPE, b"") for i in range(50)])
    refused(data, dest, "more than 20 entries", entry_budget=20)
    assert len(list(dest.iterdir())) <= 20


def test_huge_pax_header_is_refused_before_it_is_read(arena) -> None:
    _, dest, _ = arena
    info = tarfile.TarInfo("././@PaxHeader")
    info.type = tarfile.XHDTYPE
    info.size = 8**11 - 1  # claims 8 GiB of metadata; none follows
    data = info.tobuf(tarfile.USTAR_FORMAT)
    refused(data, dest, "PAX header")


def test_truncated_and_garbage_streams(arena) -> None:
    _, dest, _ = arena
    whole = make_tar(("f", tarfile.REGTYPE, b"x" * 5000))
    refused(whole[:1500], dest, "ends early")
    refused(b"this is not a tar archive at all" * 40, dest, "corrupt tar header")
    refused(gzip.compress(whole)[:-30], dest, "decompress")
    flipped = bytearray(whole)
    flipped[0] ^= 1  # the name changes, the stored checksum does not
    refused(bytes(flipped), dest, "bad checksum")


def test_budget_counts_the_whole_stream(arena) -> None:
    _, dest, _ = arena
    data = make_tar(("f", tarfile.REGTYPE, b"x" * 10_000))
    stats = apply_layer(io.BytesIO(data), dest, size_budget=len(data))
    assert stats.tar_bytes == len(data)
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


# --- the unpack budget: default from the blob's size, PYBUILD_UNPACK_LIMIT, disk charge ---


def test_default_limit_is_a_multiple_of_the_compressed_size(arena, monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.oci import _budget

    _, dest, _ = arena
    monkeypatch.delenv(_budget.UNPACK_LIMIT_ENV, raising=False)
    monkeypatch.setattr(_budget, "MINIMUM_LIMIT", 1 << 20)  # only the ratio counts
    bomb = _zeros_tar_gz(64 << 20)
    limit = _budget.RATIO * len(bomb)
    assert limit < 64 << 20  # gzip of zeros beats 200:1
    error = refused(bomb, dest, "unpack limit")
    assert _budget.UNPACK_LIMIT_ENV in (error.hint or "")
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert written <= limit


def test_unpack_limit_env_replaces_the_default(arena, monkeypatch: pytest.MonkeyPatch) -> None:
    _, dest, _ = arena
    bomb = _zeros_tar_gz(8 << 20)
    monkeypatch.setenv("PYBUILD_UNPACK_LIMIT", "2m")
    refused(bomb, dest, "beyond the 2 MiB unpack limit")
    monkeypatch.setenv("PYBUILD_UNPACK_LIMIT", "none")
    other = dest.parent / "other"
    other.mkdir()
    assert apply_layer(io.BytesIO(bomb), other).content_bytes == 8 << 20


@pytest.mark.parametrize("value", ["lots", "-5m", "0", "12q"])
def test_a_malformed_unpack_limit_is_a_usage_error(arena, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from pybuild.errors import UsageError

    _, dest, _ = arena
    monkeypatch.setenv("PYBUILD_UNPACK_LIMIT", value)
    with pytest.raises(UsageError, match="PYBUILD_UNPACK_LIMIT"):
        apply_layer(io.BytesIO(make_tar(("f", tarfile.REGTYPE, b"x"))), dest)


def test_many_empty_entries_are_charged_for_their_disk_blocks(arena) -> None:
    _, dest, _ = arena
    data = make_tar(*[(f"d{i}", tarfile.DIRTYPE, b"") for i in range(600)])
    assert len(data) < 1 << 20  # the stream fits the budget; 600 directories on disk do not
    refused(data, dest, "beyond the 1 MiB unpack limit", size_budget=1 << 20)
    assert len(list(dest.iterdir())) < 300


# --- fuzz: any member list, however hostile, gives a result or a pybuild error ---

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_NAMES = st.sampled_from(
    ["a", "b", "a/b", "a/b/c", "./a", "/abs", "/a/b", "..", "../x", "a/../../x", "a/./b", ".", "./", "",
     "x" * 300, "a/" + "y" * 255, ".wh.a", "a/.wh..wh..opq", "\u00e9\u00a0", "a//b"]
)
_TYPES = st.sampled_from(
    [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
     tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"S", b"V", b"Z", b"g"]
)
_PAX = st.dictionaries(
    st.sampled_from(["path", "linkpath", "size", "uid", "gid", "mtime", "SCHILY.xattr.user.x", "GNU.sparse.map", "junk"]),
    st.sampled_from(["", "-1", "1e999", "99999999999999999999999", "x", "../../etc/passwd", "0", "1.5", "\u00a0"]),
    max_size=3,
)
_MEMBERS = st.lists(
    st.tuples(_NAMES, _TYPES, _NAMES, st.binary(max_size=600), st.integers(0, 0o7777),
              st.integers(-5, 2**40), st.integers(0, 2**22), _PAX),
    max_size=8,
)


def _fuzz_tar(members, cut: int, compress: str) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link, data, mode, mtime, dev, pax in members:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname = kind, mode, link
            info.mtime = max(mtime, 0) if mtime < 8**11 else mtime  # tarfile writes a big one to PAX
            info.devmajor, info.devminor = dev >> 11, dev & 0x7FF
            info.pax_headers = pax
            try:
                if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE):
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    tar.addfile(info)
            except (ValueError, tarfile.HeaderError, UnicodeError):
                continue  # tarfile cannot write it: no such member
    data = buf.getvalue()
    if cut:
        data = data[: max(len(data) - cut, 0)]
    if compress == "gzip":
        data = gzip.compress(data)
    elif compress == "bzip2":
        import bz2

        data = bz2.compress(data)
    return data


def _assert_contained(run, data: bytes) -> None:  # type: ignore[no-untyped-def]
    import shutil
    import tempfile

    from pybuild.errors import PybuildError

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "outside").mkdir()
        (root / "outside" / "secret").write_text("do not touch\n")
        dest = root / "dest"
        dest.mkdir()
        before = snapshot(root)
        try:
            run(data, root, dest)
        except PybuildError as error:
            assert str(error) and "\n" not in str(error)
        assert snapshot(root) == before
        shutil.rmtree(dest)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MEMBERS, st.sampled_from([0, 0, 1, 100, 513, 1100]), st.sampled_from(["none", "gzip", "bzip2"]))
def test_fuzzed_layers_apply_or_fail_with_a_pybuild_error(members, cut: int, compress: str) -> None:  # type: ignore[no-untyped-def]
    def run(data: bytes, root: Path, dest: Path) -> None:
        apply_layer(io.BytesIO(data), dest, size_budget=1 << 20)

    _assert_contained(run, _fuzz_tar(members, cut, compress))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MEMBERS, st.sampled_from([0, 0, 1, 100, 513, 1100]), st.sampled_from(["none", "gzip", "bzip2"]))
def test_fuzzed_add_archives_unpack_or_fail_with_a_pybuild_error(members, cut: int, compress: str) -> None:  # type: ignore[no-untyped-def]
    # ADD's extractor runs chrooted into the step's root; here it runs on the
    # host, so containment must hold without the chroot too.
    from pybuild.dag._fileops import _extract

    def run(data: bytes, root: Path, dest: Path) -> None:
        archive = root / "archive"
        archive.write_bytes(data)
        try:
            _extract(str(archive), str(dest), None)
        finally:
            archive.unlink()

    _assert_contained(run, _fuzz_tar(members, cut, compress))


# --- pybuild load: a compressed archive, or a compressed layer in it, that is a bomb ---


def test_a_compressed_image_archive_that_is_a_bomb_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pybuild.oci._archive import read_archive

    spool = tmp_path / "spool"
    spool.mkdir()
    (tmp_path / "image.tar.gz").write_bytes(_zeros_tar_gz(64 << 20))
    monkeypatch.setenv("PYBUILD_UNPACK_LIMIT", "2m")
    with pytest.raises(ImageError, match="the archive expands beyond the 2 MiB unpack limit"):
        read_archive(tmp_path / "image.tar.gz", tmp_dir=spool)
    assert list(spool.iterdir()) == []


def test_a_bomb_layer_in_a_docker_archive_stops_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from pybuild.oci._archive import read_archive

    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bomb:1"], "Layers": ["layer.tar.gz"]}]).encode()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, content in (("layer.tar.gz", _zeros_tar_gz(64 << 20)), ("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    (tmp_path / "image.tar").write_bytes(out.getvalue())
    monkeypatch.setenv("PYBUILD_UNPACK_LIMIT", "2m")
    with pytest.raises(ImageError, match="a layer of the archive expands beyond the 2 MiB unpack limit"):
        read_archive(tmp_path / "image.tar")


def test_a_stored_layer_that_is_a_bomb_stops_at_the_ratio_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pulled or loaded layer is unpacked from the content store when an image is
    # first used: the default limit follows the blob's size there too.
    from pybuild.cache import Root
    from pybuild.oci import ImageStore, Layer
    from pybuild.oci import _budget

    monkeypatch.delenv(_budget.UNPACK_LIMIT_ENV, raising=False)
    monkeypatch.setattr(_budget, "MINIMUM_LIMIT", 1 << 20)
    root = Root.open(tmp_path / "root")
    try:
        store = ImageStore(root)
        blob = _zeros_tar_gz(64 << 20)
        plain_digest = "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()
        layer = Layer(plain_digest, root.blobs.put(blob), len(blob), "application/vnd.docker.image.rootfs.diff.tar.gzip")
        config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [plain_digest]}}
        image = store.add_image(config, [layer], ["bomb:1"])
        with pytest.raises(ImageError, match="the layer expands beyond the .* unpack limit"):
            store.snapshots_for(image)
        assert not [p for p in (tmp_path / "root").rglob("*") if p.name.startswith("active-")]
    finally:
        root.close()
