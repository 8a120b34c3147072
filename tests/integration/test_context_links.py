"""Symlinks a context provides for its own .dockerignore and Dockerfile: followed inside the
context, refused when they lead out of it, never silently dropped."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    (ctx / "config").mkdir(parents=True)
    (ctx / "secret.txt").write_text("password\n")
    (ctx / "app.txt").write_text("app\n")
    (ctx / "config" / "ignore").write_text("secret.txt\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY . /ctx/\n")
    return ctx


def one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode != 0
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert "Traceback" not in stderr and "internal error" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("error:")]
    return line


def output(result) -> str:  # type: ignore[no-untyped-def]
    both = result.stdout + result.stderr
    return both.decode() if isinstance(both, bytes) else both


def test_a_symlinked_dockerignore_keeps_what_it_excludes_out_of_the_image(cli, context: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    os.symlink("config/ignore", context / ".dockerignore")
    cli("build", "-t", "t", "--progress=plain", str(context))
    image = open_image("t")
    assert image.read("/ctx/app.txt") == "app\n"
    assert image.find("/ctx/secret.txt") is None


def test_a_dockerignore_linking_out_of_the_context_fails_the_build(cli, context: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "outside-rules").write_text("nothing\n")
    os.symlink(tmp_path / "outside-rules", context / ".dockerignore")
    result = cli("build", "-t", "t", "--progress=plain", str(context), check=False)
    assert ".dockerignore is a symlink that leads outside" in one_line_error(result)


def test_a_dangling_dockerignore_fails_the_build(cli, context: Path) -> None:  # type: ignore[no-untyped-def]
    os.symlink("config/gone", context / ".dockerignore")
    result = cli("build", "-t", "t", "--progress=plain", str(context), check=False)
    assert ".dockerignore is a dangling symlink" in one_line_error(result)


def test_a_context_dockerfile_linking_to_a_host_file_is_not_read(cli, context: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    canary = tmp_path / "host-canary"
    canary.write_text("FROM scratch\nLABEL leaked=host-file-was-read\n")
    os.remove(context / "Dockerfile")
    os.symlink(canary, context / "Dockerfile")
    result = cli("build", "-t", "t", "--progress=plain", str(context), check=False)
    line = one_line_error(result)
    assert "Dockerfile is a symlink that leads outside" in line
    assert "leaked" not in output(result)


def test_a_tar_context_dockerfile_linking_to_a_host_file_is_not_read(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    canary = tmp_path / "host-canary"
    canary.write_text("FROM scratch\nLABEL leaked=host-file-was-read\n")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("Dockerfile")
        link.type, link.linkname = tarfile.SYMTYPE, str(canary)
        tar.addfile(link)
    result = cli("build", "-t", "t", "--progress=plain", "-", input=buffer.getvalue(), check=False)
    line = one_line_error(result)
    assert "Dockerfile is a symlink that leads outside" in line
    assert "leaked" not in output(result)
