"""COPY sources whose directories are symlinks inside the context, on real builds:
followed as BuildKit follows them (inside the context only), never out of it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "real" / "inner").mkdir(parents=True)
    (ctx / "real" / "inner" / "file.txt").write_text("through the link\n")
    (ctx / "real" / "inner" / "other.txt").write_text("other\n")
    os.symlink("real", ctx / "alias")
    os.symlink("/real", ctx / "absolute")  # means <context>/real
    os.symlink("alias", ctx / "chain")
    return ctx


def test_sources_through_symlinked_directories(cli, busybox_image: str, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    (context / "Dockerfile").write_text(
        "FROM busybox\n"
        "COPY alias/inner/file.txt /one.txt\n"
        "COPY absolute/inner/file.txt /two.txt\n"
        "COPY chain/inner/*.txt /glob/\n"
        "COPY alias/inner /tree/\n"
    )
    cli("build", "-t", "linked", "--progress=plain", str(context))
    image = open_image("linked")
    assert image.read("/one.txt") == image.read("/two.txt") == "through the link\n"
    assert image.read("/glob/file.txt") == image.read("/tree/file.txt") == "through the link\n"
    assert image.read("/glob/other.txt") == image.read("/tree/other.txt") == "other\n"
    # a rebuild is all cached; a change behind the link is seen
    again = cli("build", "-t", "linked", "--progress=plain", str(context))
    assert again.stderr.count("CACHED") == 4
    (context / "real" / "inner" / "file.txt").write_text("changed\n")
    cli("build", "-t", "linked", "--progress=plain", str(context))
    assert open_image("linked").read("/one.txt") == "changed\n"


def test_a_symlinked_directory_leading_out_of_the_context_is_not_followed_out(cli, busybox_image: str, context: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret\n")
    os.symlink(outside, context / "out")
    (context / "Dockerfile").write_text("FROM busybox\nCOPY out/secret.txt /secret.txt\n")
    result = cli("build", "-t", "leak", "--progress=plain", str(context), check=False)
    assert result.returncode != 0
    assert "host secret" not in result.stdout + result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "Dockerfile:2" in line and '"/out/secret.txt": not found' in line
    assert "Traceback" not in result.stderr
