"""Dockerfile frontend features of 1.17-1.27 (issue 15): COPY/ADD --exclude as
generally available, ADD --unpack, and compressed build contexts (zstd too)."""

from __future__ import annotations

from pathlib import Path


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
