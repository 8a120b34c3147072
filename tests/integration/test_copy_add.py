"""COPY and ADD semantics, as Docker's (issue 3), on real builds."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import struct
import tarfile
from pathlib import Path

import pytest


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        os.chmod(path, mode)
    return path


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    write(ctx / "a.txt", "a\n")
    write(ctx / "b.txt", "b\n")
    write(ctx / "c.md", "c\n")
    write(ctx / "dir" / "x.txt", "x\n")
    write(ctx / "dir" / "sub" / "y.txt", "y\n", 0o640)
    write(ctx / "tool.sh", "#!/bin/sh\necho tool\n", 0o755)
    os.symlink("a.txt", ctx / "link-to-a")
    os.link(ctx / "a.txt", ctx / "hardlink-to-a")
    write(ctx / "ignored.log", "secret\n")
    write(ctx / ".dockerignore", "*.log\n")
    write(ctx / "deep" / "one" / "two" / "three.txt", "3\n")
    return ctx


def build(cli, ctx: Path, dockerfile: str, tag: str = "t", **kwargs):  # type: ignore[no-untyped-def]
    (ctx / "Dockerfile").write_text(dockerfile)
    return cli("build", "-t", tag, "--progress=plain", str(ctx), **kwargs)


def test_copy_forms(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, context, """\
FROM busybox
COPY a.txt /file-named-dest
COPY a.txt /into-dir/
COPY a.txt b.txt /multi/
COPY *.txt /wild/
COPY ?.md /question/
COPY [ab].txt /class/
COPY dir /dir-contents
COPY dir/ /dir-contents-slash/
COPY a.txt /missing/parents/are/created.txt
COPY link-to-a /followed
COPY dir/sub/y.txt /mode-kept
WORKDIR /work
COPY a.txt relative.txt
COPY a.txt .
""")
    image = open_image("t")
    assert image.read("/file-named-dest") == "a\n"
    assert image.read("/into-dir/a.txt") == "a\n"
    assert image.read("/multi/a.txt") == "a\n" and image.read("/multi/b.txt") == "b\n"
    assert image.read("/wild/a.txt") == "a\n" and image.read("/wild/b.txt") == "b\n"
    assert image.find("/wild/c.md") is None
    assert image.read("/question/c.md") == "c\n"
    assert image.find("/class/a.txt") and image.find("/class/b.txt")
    assert image.read("/dir-contents/x.txt") == "x\n"
    assert image.read("/dir-contents/sub/y.txt") == "y\n"
    assert image.find("/dir-contents/dir") is None  # a directory copies its contents
    assert image.read("/dir-contents-slash/sub/y.txt") == "y\n"
    assert image.read("/missing/parents/are/created.txt") == "a\n"
    assert stat.S_ISREG(image.stat("/followed").st_mode)  # the named source symlink is followed
    assert stat.S_IMODE(image.stat("/mode-kept").st_mode) == 0o640
    assert image.stat("/mode-kept").st_uid == 0  # context files count as 0:0
    assert image.read("/work/relative.txt") == "a\n" and image.read("/work/a.txt") == "a\n"


def test_multiple_sources_need_a_directory(cli, busybox_image: str, context: Path) -> None:  # type: ignore[no-untyped-def]
    result = build(cli, context, "FROM busybox\nCOPY a.txt b.txt /notadir\n", check=False)
    assert result.returncode == 1
    assert "must be a directory and end with a /" in result.stderr


def test_symlinks_and_hardlinks_inside_directories(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, context, "FROM busybox\nCOPY . /ctx/\n")
    image = open_image("t")
    assert os.readlink(image.find("/ctx/link-to-a")) == "a.txt"  # kept as a symlink
    a, hard = image.stat("/ctx/a.txt"), image.stat("/ctx/hardlink-to-a")
    assert (a.st_ino, a.st_dev) == (hard.st_ino, hard.st_dev)  # hardlink kept
    assert image.find("/ctx/ignored.log") is None  # .dockerignore
    assert image.read("/ctx/deep/one/two/three.txt") == "3\n"


def test_a_followed_symlink_keeps_its_own_name_in_a_directory(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    """BuildKit's fsutil copies a followed source under Base(src): `COPY link-to-a /d/` makes
    /d/link-to-a (a regular file with a.txt's bytes), and a wildcard matching the link and its
    target copies both names."""
    build(cli, context, "FROM busybox\nCOPY link-to-a /d/\nCOPY a.txt link-to-a /both/\n")
    image = open_image("t")
    assert image.read("/d/link-to-a") == "a\n" and not os.path.islink(image.find("/d/link-to-a"))
    assert image.find("/d/a.txt") is None
    assert image.read("/both/a.txt") == "a\n" and image.read("/both/link-to-a") == "a\n"


def test_chown_and_chmod(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, context, """\
FROM busybox
COPY --chown=app:extra a.txt /owned-by-name
COPY --chown=1234:5678 a.txt /owned-by-number
COPY --chown=app a.txt /owned-user-only
COPY --chmod=0600 tool.sh /octal
COPY --chmod=u+x,go-r a.txt /symbolic
COPY --chown=app:app dir /appdir/
""")
    image = open_image("t")
    by_name = image.stat("/owned-by-name")
    assert (by_name.st_uid, by_name.st_gid) == (1000, 2000)  # names from the image's own passwd and group files
    assert (image.stat("/owned-by-number").st_uid, image.stat("/owned-by-number").st_gid) == (1234, 5678)
    assert (image.stat("/owned-user-only").st_uid, image.stat("/owned-user-only").st_gid) == (1000, 1000)
    assert stat.S_IMODE(image.stat("/octal").st_mode) == 0o600
    assert stat.S_IMODE(image.stat("/symbolic").st_mode) == 0o700  # 0644 with u+x, and g/o lose r
    assert image.stat("/appdir/sub/y.txt").st_uid == 1000 and image.stat("/appdir").st_uid == 1000


def test_unknown_chown_user_is_an_error(cli, busybox_image: str, context: Path) -> None:  # type: ignore[no-untyped-def]
    result = build(cli, context, "FROM busybox\nCOPY --chown=nosuchuser a.txt /x\n", check=False)
    assert result.returncode == 1 and "nosuchuser" in result.stderr and "Traceback" not in result.stderr


def test_exclude_parents_and_link(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, context, """\
FROM busybox
COPY --exclude=*.md --exclude=dir . /excluded/
COPY --parents deep/one/two/three.txt dir/x.txt /parents/
COPY --link a.txt /linked/a.txt
""")
    image = open_image("t")
    assert image.find("/excluded/c.md") is None and image.find("/excluded/dir") is None
    assert image.read("/excluded/a.txt") == "a\n"
    assert image.read("/parents/deep/one/two/three.txt") == "3\n"
    assert image.read("/parents/dir/x.txt") == "x\n"
    assert image.read("/linked/a.txt") == "a\n"
    assert image.find("/bin/busybox") is not None  # --link keeps the base underneath


def test_heredoc_files(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, context, (
        "FROM busybox\n"
        "ARG NAME=world\n"
        "COPY <<EOF /greeting.txt\nhello $NAME\nEOF\n"
        "COPY <<-'RAW' <<TWO /docs/\n\traw $NAME\n\tRAW\ntwo\nTWO\n"
        "RUN <<SCRIPT\nset -e\necho \"from a heredoc script\" > /script-ran\nSCRIPT\n"
        "RUN <<EOF cat > /piped.txt\npiped body\nEOF\n"
    ))
    image = open_image("t")
    assert image.read("/greeting.txt") == "hello world\n"
    assert image.read("/docs/RAW") == "raw $NAME\n"
    assert image.read("/docs/TWO") == "two\n"
    assert image.read("/script-ran") == "from a heredoc script\n"
    assert image.read("/piped.txt") == "piped body\n"


def test_add_local_archives_are_extracted(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    for name, mode in (("plain.tar", "w"), ("gz.tar.gz", "w:gz"), ("bz.tar.bz2", "w:bz2"), ("xz.tar.xz", "w:xz")):
        with tarfile.open(context / name, mode) as tar:
            data = f"from {name}\n".encode()
            info = tarfile.TarInfo(f"inside/{name}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (context / "notatar.gz").write_bytes(gzip.compress(b"just gzip, not a tar\n"))
    build(cli, context, """\
FROM busybox
ADD plain.tar gz.tar.gz bz.tar.bz2 xz.tar.xz /unpacked/
COPY gz.tar.gz /copied/
ADD --unpack=false plain.tar /kept/
""")
    image = open_image("t")
    for name in ("plain.tar", "gz.tar.gz", "bz.tar.bz2", "xz.tar.xz"):
        assert image.read(f"/unpacked/inside/{name}.txt") == f"from {name}\n"
    assert image.find("/copied/gz.tar.gz") is not None  # COPY never extracts
    assert image.find("/kept/plain.tar") is not None


def test_add_url_downloads_without_extracting(cli, busybox_image: str, context: Path, open_image, http_files) -> None:  # type: ignore[no-untyped-def]
    served, base = http_files
    with tarfile.open(served / "payload.tar.gz", "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("x"), io.BytesIO(b""))
    (served / "hello.txt").write_text("hello over http\n")
    good = "sha256:" + hashlib.sha256(b"hello over http\n").hexdigest()
    build(cli, context, f"""\
FROM busybox
ADD {base}/payload.tar.gz /downloads/
ADD --checksum={good} {base}/hello.txt /downloads/hello.txt
""")
    image = open_image("t")
    assert image.find("/downloads/payload.tar.gz") is not None  # not extracted
    assert stat.S_IMODE(image.stat("/downloads/payload.tar.gz").st_mode) == 0o600
    assert image.read("/downloads/hello.txt") == "hello over http\n"
    bad = "sha256:" + "0" * 64
    result = build(cli, context, f"FROM busybox\nADD --checksum={bad} {base}/hello.txt /x\n", check=False)
    assert result.returncode == 1 and "digest mismatch" in result.stderr


def test_add_git_repository(cli, busybox_image: str, context: Path, open_image, git_server) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"README.md": "from git\n", "sub/inner.txt": "inner\n"})
    build(cli, context, f"""\
FROM busybox
ADD {url}#main /src/
ADD --keep-git-dir=true {url}#main /with-git/
ADD {url}#main:sub /only-sub/
""")
    image = open_image("t")
    assert image.read("/src/README.md") == "from git\n"
    assert image.find("/src/.git") is None
    assert image.find("/with-git/.git") is not None
    assert image.read("/only-sub/inner.txt") == "inner\n"


def test_sources_outside_the_context_stay_inside(cli, busybox_image: str, context: Path, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    write(tmp_path / "outside.txt", "outside\n")
    os.symlink(str(tmp_path / "outside.txt"), context / "escape-link")
    result = build(cli, context, "FROM busybox\nCOPY ../outside.txt /x\n", check=False)
    assert result.returncode == 1  # clamped to the context root, where there is no outside.txt
    assert "outside.txt" in result.stderr and "not found" in result.stderr
    build(cli, context, "FROM busybox\nCOPY . /ctx/\n")
    image = open_image("t")
    assert os.readlink(image.find("/ctx/escape-link")) == str(tmp_path / "outside.txt")  # a symlink, never followed out


def test_a_big_tree_copies_with_every_files_metadata(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    """Enough files that the copy runs in several threads: each file still arrives whole,
    with its mode, mtime, user xattr and root ownership, and directories keep their mtimes."""
    ctx = tmp_path / "big"
    expected: dict[str, tuple[bytes, int, int]] = {}
    for i in range(300):
        relative = f"tree/d{i % 7}/s{i % 3}/f{i:03d}"
        path = write(ctx / relative, f"file {i}\n" * (i % 50 + 1), 0o600 + (i % 2) * 0o155)
        os.utime(path, ns=(1_600_000_000_000_000_000 + i * 10**9,) * 2)
        expected[relative] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode), path.stat().st_mtime_ns)
    os.setxattr(ctx / "tree/d0/s0/f000", "user.origin", b"context")
    capability = struct.pack("<5I", 0x02000001, 1 << 10, 0, 0, 0)  # cap_net_bind_service=p
    os.setxattr(ctx / "tree/d1/s1/f001", "security.capability", capability)
    for directory in sorted((ctx / "tree").rglob("*"), reverse=True):
        if directory.is_dir():
            os.utime(directory, ns=(1_500_000_000 * 10**9,) * 2)
    write(ctx / "Dockerfile", "FROM busybox\nCOPY tree/ /copied/\nCOPY tree/d1/s1/f001 /single\n")
    cli("build", "-t", "big-copy", str(ctx))
    image = open_image("big-copy")
    for relative, (data, mode, mtime) in expected.items():
        found = image.find("/copied/" + relative.removeprefix("tree/"))
        assert found is not None, relative
        st = found.lstat()
        assert (found.read_bytes(), stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_uid, st.st_gid) == (data, mode, mtime, 0, 0)
    assert os.getxattr(image.find("/copied/d0/s0/f000"), "user.origin") == b"context"
    assert os.getxattr(image.find("/copied/d1/s1/f001"), "security.capability") == capability  # kept through the chown
    assert os.getxattr(image.find("/single"), "security.capability") == capability
    assert image.find("/copied/d3/s1").stat().st_mtime_ns == 1_500_000_000 * 10**9
