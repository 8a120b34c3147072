"""Build contexts other than a directory: tar or Dockerfile on stdin, tarball and git URLs (issue 5)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path


def tar_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


CONTEXT = {"Dockerfile": "FROM busybox\nCOPY hello.txt /hello.txt\n", "hello.txt": "hello from the context\n"}


def test_tar_context_on_stdin(cli, busybox_image: str, open_image) -> None:  # type: ignore[no-untyped-def]
    cli("build", "-t", "from-tar", "-", input=tar_of(CONTEXT))
    assert open_image("from-tar").read("/hello.txt") == "hello from the context\n"


def test_dockerfile_on_stdin_has_an_empty_context(cli, busybox_image: str, open_image) -> None:  # type: ignore[no-untyped-def]
    cli("build", "-t", "from-stdin", "-", input=b"FROM busybox\nRUN echo made > /made\n")
    assert open_image("from-stdin").read("/made") == "made\n"
    failing = cli("build", "-", input=b"FROM busybox\nCOPY anything /x\n", check=False)
    assert failing.returncode == 1 and "not found" in failing.stderr.decode()


def test_dockerfile_from_stdin_with_a_directory_context(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "hello.txt").write_text("dir context\n")
    cli("build", "-t", "f-dash", "-f", "-", str(tmp_path), input=b"FROM busybox\nCOPY hello.txt /h\n")
    assert open_image("f-dash").read("/h") == "dir context\n"


def test_tarball_url_context(cli, busybox_image: str, open_image, http_files) -> None:  # type: ignore[no-untyped-def]
    served, base = http_files
    (served / "ctx.tar.gz").write_bytes(tar_of(CONTEXT))
    cli("build", "-t", "from-url", f"{base}/ctx.tar.gz")
    assert open_image("from-url").read("/hello.txt") == "hello from the context\n"


def test_git_url_context_with_ref_and_subdir(cli, busybox_image: str, open_image, git_server) -> None:  # type: ignore[no-untyped-def]
    url = git_server({
        "app/Dockerfile": "FROM busybox\nCOPY msg.txt /msg.txt\n",
        "app/msg.txt": "from the repo's app dir\n",
        "README.md": "top\n",
    })
    cli("build", "-t", "from-git", f"{url}#main:app")
    assert open_image("from-git").read("/msg.txt") == "from the repo's app dir\n"
