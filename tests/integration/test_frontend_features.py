"""Dockerfile frontend features of 1.17-1.27 (issue 15): COPY/ADD --exclude as
generally available, ADD --unpack, and compressed build contexts (zstd too)."""

from __future__ import annotations

import bz2
import gzip
import lzma
import subprocess
from pathlib import Path

import pytest
import zstandard

from tests.integration.test_contexts import CONTEXT, tar_of


def plain_tar(files: dict[str, str]) -> bytes:
    return gzip.decompress(tar_of(files))


def head_commit(repo: Path) -> str:
    """The commit the git_server fixture made in ``repo``."""
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


COMPRESSORS = {
    "plain": lambda data: data,
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}

# one tree, copied from the context and from a stage, with the same patterns
TREE = {
    "top.txt": "t\n",
    "keep.md": "k\n",
    "a/y.txt": "y\n",
    "a/keep.txt": "kept by the exception\n",
    "a/b/z.txt": "z\n",
    "a/b/z.md": "zm\n",
    "a/notes.md": "n\n",
}
EXCLUDES = "--exclude=**/*.txt --exclude=!a/keep.txt --exclude=*.md"


def expected_after_excludes(find) -> None:  # type: ignore[no-untyped-def]
    """What BuildKit leaves of TREE with EXCLUDES: ``**/*.txt`` at any depth,
    ``!a/keep.txt`` brings one back, ``*.md`` only at the top of the source."""
    assert find("top.txt") is None and find("a/y.txt") is None and find("a/b/z.txt") is None
    assert find("a/keep.txt") is not None
    assert find("keep.md") is None
    assert find("a/notes.md") is not None and find("a/b/z.md") is not None


def test_copy_exclude_uses_dockerignore_patterns_relative_to_each_source(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    """COPY --exclude is a stable flag (Dockerfile 1.19, moby/buildkit#6232) whose
    patterns are moby/patternmatcher's (the .dockerignore syntax: ``**`` for any
    depth, ``!`` for an exception, last match wins), matched against each path
    relative to the copied source, from the context and from a stage alike:
    fsutil ``copy/copy.go`` (copier.exclude with MatchesUsingParentResults on
    srcComponents), which BuildKit's file op calls for every COPY
    (``frontend/dockerfile/dockerfile2llb/convert.go`` passes
    ``ExcludePatterns`` into ``llb.CopyInfo``)."""
    ctx = tmp_path / "ctx"
    for name, text in TREE.items():
        (ctx / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / "src" / name).write_text(text)
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS stage\n"
        "COPY src /tree/\n"
        "FROM busybox\n"
        f"COPY {EXCLUDES} src /from-context/\n"
        f"COPY --from=stage {EXCLUDES} /tree /from-stage/\n"
        f"ADD {EXCLUDES} src /added/\n"
    )
    cli("build", "-t", "excl", str(ctx))
    image = open_image("excl")
    for where in ("/from-context/", "/from-stage/", "/added/"):
        expected_after_excludes(lambda name: image.find(where + name))


def test_copy_exclude_is_relative_to_each_wildcard_match(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    """With a wildcard source each match is a source of its own: ``*.txt`` names
    the files at the top of every matched directory, as BuildKit's
    ``frontend/dockerfile/dockerfile_excludepatterns_test.go``
    (testExcludedFilesOnCopy: ``COPY --exclude=*.mp3 ... dir* /4/``) expects,
    from a stage as from the context."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("homer.md", "homes/inner.txt", "homes/deeper/kept.txt"):
        (ctx / name).parent.mkdir(parents=True, exist_ok=True)
        (ctx / name).write_text(name)
    (ctx / "Dockerfile").write_text(
        "FROM busybox AS stage\nCOPY . /ctx/\n"
        "FROM busybox\n"
        "COPY --exclude=*.txt hom* /mydir/\n"
        "COPY --from=stage --exclude=*.txt /ctx/hom* /staged/\n"
    )
    cli("build", "-t", "wild", str(ctx))
    image = open_image("wild")
    for where in ("/mydir/", "/staged/"):
        assert image.find(where + "homer.md") is not None
        assert image.find(where + "inner.txt") is None  # homes/ is copied by its contents, inner.txt at its top
        assert image.find(where + "deeper/kept.txt") is not None  # *.txt has no slash: one level only


def test_copy_exclude_syntax_error_names_the_line(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A pattern patternmatcher rejects (an unclosed ``[``) fails the build with
    one line naming the instruction, not a traceback (fsutil: "invalid
    excludepatterns")."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a").write_text("a")
    (ctx / "Dockerfile").write_text("FROM busybox AS s\nRUN true\nFROM busybox\nCOPY --from=s --exclude=[ab /etc /x/\n")
    result = cli("build", str(ctx), check=False)
    err = result.stderr
    assert result.returncode != 0 and "Traceback" not in err
    assert "Dockerfile:4" in err and "[ab" in err


def test_add_unpack_true_extracts_a_downloaded_archive(cli, busybox_image: str, tmp_path: Path, open_image, http_files) -> None:  # type: ignore[no-untyped-def]
    """``ADD --unpack=true URL`` extracts a remote archive, zstd included, while a
    plain ``ADD URL`` keeps the file (Dockerfile 1.17, docs/reference.md
    "ADD --unpack"; ``convert.go`` sets ``AttemptUnpack`` from the flag for URLs)."""
    served, base = http_files
    archive = plain_tar({"inside/hello.txt": "unpacked from a URL\n"})
    (served / "a.tar.gz").write_bytes(gzip.compress(archive))
    (served / "a.tar.zst").write_bytes(zstandard.ZstdCompressor().compress(archive))
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        f"ADD --unpack=true {base}/a.tar.gz /gz/\n"
        f"ADD --unpack=true {base}/a.tar.zst /zst/\n"
        f"ADD {base}/a.tar.zst /kept/\n"
    )
    cli("build", "-t", "unpacked", str(ctx))
    image = open_image("unpacked")
    assert image.read("/gz/inside/hello.txt") == "unpacked from a URL\n"
    assert image.read("/zst/inside/hello.txt") == "unpacked from a URL\n"
    assert image.find("/kept/a.tar.zst") is not None


def test_add_unpack_needs_a_boolean(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``--unpack=maybe`` is refused with the line, as BuildKit's BFlags does for a
    bool flag (``frontend/dockerfile/instructions/bflag.go``)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM busybox\nADD --unpack=maybe a /a\n")
    result = cli("build", str(ctx), check=False)
    assert result.returncode != 0 and "Dockerfile:2" in result.stderr and "--unpack" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("compression", sorted(COMPRESSORS))
def test_tar_context_on_stdin_in_every_compression(cli, busybox_image: str, open_image, compression: str) -> None:  # type: ignore[no-untyped-def]
    """``pybuild build - < ctx.tar.zst`` works like the plain, gzip, bzip2 and xz
    tars: the docker CLI detects a context archive by its magic bytes
    (``cli/command/image/build/context.go`` DetectArchiveReader, compression
    from moby ``pkg/archive`` DetectCompression, zstd included) and Dockerfile
    1.27 accepts zstd contexts (moby/buildkit#7069)."""
    data = COMPRESSORS[compression](plain_tar(CONTEXT))
    cli("build", "-t", f"ctx-{compression}", "-", input=data)
    assert open_image(f"ctx-{compression}").read("/hello.txt") == "hello from the context\n"


def test_zstd_tarball_url_context(cli, busybox_image: str, open_image, http_files) -> None:  # type: ignore[no-untyped-def]
    """A URL context that is a zstd tar is unpacked as the context, as BuildKit's
    dockerui ``context.go`` does for any archive it detects (Dockerfile 1.27,
    moby/buildkit#7069)."""
    served, base = http_files
    (served / "ctx.tar.zst").write_bytes(COMPRESSORS["zstd"](plain_tar(CONTEXT)))
    cli("build", "-t", "zst-url", f"{base}/ctx.tar.zst")
    assert open_image("zst-url").read("/hello.txt") == "hello from the context\n"


def test_a_damaged_compressed_context_is_one_clear_error(cli, busybox_image: str) -> None:  # type: ignore[no-untyped-def]
    """A zstd stream that breaks off is a one-line context error, never a traceback."""
    data = COMPRESSORS["zstd"](plain_tar(CONTEXT))[:-20]
    result = cli("build", "-", input=data, check=False)
    err = result.stderr.decode()
    assert result.returncode != 0 and "Traceback" not in err and "context" in err


def test_url_context_that_is_no_archive_is_the_dockerfile(cli, busybox_image: str, open_image, http_files) -> None:  # type: ignore[no-untyped-def]
    """A URL context whose first bytes are no archive (no gzip, bzip2, xz or zstd
    magic, no tar header) is the Dockerfile itself, with an empty context, as
    BuildKit's dockerui does (``frontend/dockerui/context.go``: ``isArchive`` on
    the first 1024 bytes, else the download is the Dockerfile "context")."""
    served, base = http_files
    (served / "Dockerfile").write_text("FROM busybox\nRUN echo from-a-url > /made\n")
    cli("build", "-t", "df-url", f"{base}/Dockerfile")
    assert open_image("df-url").read("/made") == "from-a-url\n"
    (served / "Copying").write_text("FROM busybox\nCOPY anything /x\n")
    failing = cli("build", f"{base}/Copying", check=False)
    assert failing.returncode != 0 and "not found" in failing.stderr and "Traceback" not in failing.stderr


def test_add_checksum_of_a_git_source_pins_the_commit(cli, busybox_image: str, tmp_path: Path, open_image, git_server) -> None:  # type: ignore[no-untyped-def]
    """``ADD --checksum=COMMIT <git URL>`` checks the fetched commit, the full id
    or a prefix of it, and fails the build on any other (Dockerfile 1.16,
    moby/buildkit#5975; docs/reference.md "ADD --checksum": "For Git sources,
    the checksum is the commit SHA ... or match on the prefix")."""
    url = git_server({"README.md": "pinned\n"})
    commit = head_commit(tmp_path / "repo0")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        f"FROM busybox\nADD --checksum={commit} {url}#main /full/\nADD --checksum={commit[:7]} {url}#main /short/\n"
    )
    cli("build", "-t", "pinned", str(ctx))
    image = open_image("pinned")
    assert image.read("/full/README.md") == "pinned\n" and image.read("/short/README.md") == "pinned\n"
    other = ("0" if commit[0] != "0" else "1") * 40
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD --checksum={other} {url}#main /x/\n")
    result = cli("build", str(ctx), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "checksum" in result.stderr and commit in result.stderr and "Dockerfile:2" in result.stderr
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD --checksum=sha256:{commit} {url}#main /x/\n")
    result = cli("build", str(ctx), check=False)
    assert result.returncode != 0 and "Dockerfile:2" in result.stderr and "commit" in result.stderr
    assert "Traceback" not in result.stderr


def test_git_url_query_parameters(cli, busybox_image: str, tmp_path: Path, open_image, git_server) -> None:  # type: ignore[no-untyped-def]
    """Git URLs take ``?ref=&branch=&tag=&subdir=&checksum=(commit=)&keep-git-dir=&submodules=``
    as well as ``#ref:subdir``, in ADD and as a build context (Dockerfile 1.18,
    moby/buildkit#6172/#6173; ``frontend/dfgitutil/git_ref.go`` loadQuery: an
    unknown key, an empty or repeated value, or a ref/subdir that conflicts
    with the fragment is an error)."""
    url = git_server({"README.md": "top\n", "docs/guide.txt": "guide\n", "Dockerfile": "FROM busybox\nCOPY docs /docs/\n"})
    commit = head_commit(tmp_path / "repo0")
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(
        "FROM busybox\n"
        f"ADD {url}?ref=main&subdir=docs /by-ref/\n"
        f"ADD {url}?branch=main&keep-git-dir=true /by-branch/\n"
        f"ADD {url}?commit={commit[:10]}&ref=main /pinned/\n"
        f"ADD {url}?submodules=false#main:docs /mixed/\n"
    )
    cli("build", "-t", "gitq", str(ctx))
    image = open_image("gitq")
    assert image.read("/by-ref/guide.txt") == "guide\n" and image.find("/by-ref/README.md") is None
    assert image.find("/by-branch/.git") is not None and image.read("/by-branch/README.md") == "top\n"
    assert image.read("/pinned/README.md") == "top\n"
    assert image.read("/mixed/guide.txt") == "guide\n"
    cli("build", "-t", "gitq-ctx", f"{url}?branch=main")
    assert open_image("gitq-ctx").read("/docs/guide.txt") == "guide\n"
    for query, says in (
        ("?ref=main&color=blue", "color"),
        ("?ref=", "ref"),
        ("?ref=main&ref=other", "ref"),
        ("?ref=other#main", "conflict"),
        ("?tag=v1&branch=main", "conflict"),
        (f"?commit={'0' * 40}&ref=main", "checksum"),
    ):
        (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {url}{query} /x/\n")
        result = cli("build", str(ctx), check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, query
        assert "Dockerfile:2" in result.stderr and says in result.stderr, (query, result.stderr)


def test_an_https_git_url_with_a_query_is_git_not_a_download() -> None:
    """``https://host/repo.git?ref=x`` is a git source (BuildKit: an HTTP(S) URL is
    git when its path ends in ``.git``, git_ref.go), while another URL with a
    query stays a download."""
    from pybuild.dag import git_source, is_git_source

    assert is_git_source("https://example.com/repo.git?ref=main&subdir=docs")
    assert not is_git_source("https://example.com/file.tar.gz?version=2")
    source = git_source("https://user:secret@example.com/repo.git?tag=v1&keep-git-dir=1#refs/tags/v1")
    assert (source.remote, source.ref, source.keep_git_dir) == ("https://example.com/repo.git", "refs/tags/v1", True)
    assert "secret" not in repr(source)


def test_run_device_with_a_bad_value_is_refused_with_its_line(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """``RUN --device=vendor.com/class=name`` is a stable flag since Dockerfile
    1.27 (docs/reference.md "RUN --device"; BuildKit's ParseDevice in
    frontend/dockerfile/instructions/commands_rundevice.go). A value that is not
    a CDI name is refused with its line, not called an unknown flag (the flag
    itself: tests/integration/test_run_device.py)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nRUN --device=foo,required=maybe true\n")
    result = cli("build", str(ctx), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "Dockerfile:2" in result.stderr and "invalid value for required: maybe" in result.stderr
    assert "unknown flag" not in result.stderr


def test_exclude_rules_are_part_of_the_copy_key() -> None:
    """A COPY with --exclude says in its op which pattern rules it follows, so a
    layer an older pybuild copied with fnmatch rules is not taken from the
    cache for it; a COPY without --exclude keeps its digest (golden tests)."""
    from pybuild.dag import FileOp
    from tests.dag.test_convert import plan

    def copies(text: str) -> list:  # type: ignore[type-arg]
        ops = plan(text).definition.ops.values()
        return [a for op in ops if isinstance(op, FileOp) for a in op.actions if hasattr(a, "exclude_syntax")]

    assert [a.exclude_syntax for a in copies("FROM busybox\nCOPY --exclude=*.md . /x/\n")] == ["patternmatcher"]
    assert [a.exclude_syntax for a in copies("FROM busybox\nCOPY . /x/\n")] == [""]
