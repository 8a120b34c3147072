"""Errors found while solving and applying a step name its Dockerfile line, as parse errors do.

Each case is a real build through the CLI: the failure is one ``error:`` line
that starts with the Dockerfile's name and the step's line, exit code 1, and
no traceback or "internal error".
"""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

import pytest


def _tar(*members: tuple[str, bytes, str]) -> bytes:
    """A tar of (name, data, hardlink target) members; a target makes a hard link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, link in members:
            info = tarfile.TarInfo(name)
            if link:
                info.type, info.linkname = tarfile.LNKTYPE, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def context(tmp_path: Path) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "a.txt").write_text("a\n")
    (ctx / "key.secret").write_text("s3cret\n")
    (ctx / ".dockerignore").write_text("*.secret\n")
    (ctx / "escape.tar").write_bytes(_tar(("../../outside", b"x", "")))
    (ctx / "dangling.tar").write_bytes(_tar(("link", b"", "missing-target")))
    return ctx


def assert_one_located_error(result, dockerfile: Path, line: int, *words: str) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    errors = [text for text in result.stderr.splitlines() if text.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert re.match(rf"error: {re.escape(str(dockerfile))}:{line}: ", errors[0]), errors[0]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


CASES = {
    "missing_source": ("COPY nothing-here.txt /", "nothing-here.txt"),
    "ignored_source": ("COPY key.secret /", "key.secret"),
    "unknown_chown_user": ("COPY --chown=nosuchuser a.txt /x", "nosuchuser"),
    "unknown_chown_group": ("COPY --chown=root:nosuchgroup a.txt /x", "nosuchgroup"),
    "file_onto_a_directory": ("COPY a.txt /etc/", "is a directory"),
    "path_too_long": ("COPY a.txt /" + "/".join(["d" * 255] * 20) + "/x", "too long"),
    "archive_entry_leaving_the_destination": ("ADD escape.tar /unpacked/", "outside"),
    "archive_hardlink_to_nothing": ("ADD dangling.tar /unpacked/", "missing-target"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_failing_step_names_its_line(cli, busybox_image: str, context: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    instruction, word = CASES[name]
    if name == "file_onto_a_directory":
        instruction = "RUN mkdir -p /etc/a.txt\n" + instruction
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(f"FROM busybox\n\n{instruction}\n")
    line = 4 if name == "file_onto_a_directory" else 3
    result = cli("build", "--progress=plain", str(context), check=False)
    shown = assert_one_located_error(result, dockerfile, line, word)
    assert len(shown) < 1200  # a long path is shortened, not printed whole


def test_a_failed_download_names_its_line(cli, busybox_image: str, context: Path, http_files) -> None:  # type: ignore[no-untyped-def]
    _, base = http_files
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(f"FROM busybox\nRUN true\nADD {base}/not-there.tar /x\n")
    result = cli("build", "--progress=plain", str(context), check=False)
    assert_one_located_error(result, dockerfile, 3, "not-there.tar")


def test_a_failed_git_fetch_names_its_line(cli, busybox_image: str, context: Path, git_server) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"README": "hi\n"})
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(f"FROM busybox\nADD {url}#no-such-branch /src\n")
    result = cli("build", "--progress=plain", str(context), check=False)
    assert_one_located_error(result, dockerfile, 2)


def test_the_line_follows_the_dockerfile_name(cli, busybox_image: str, context: Path) -> None:  # type: ignore[no-untyped-def]
    dockerfile = context / "build.Dockerfile"
    dockerfile.write_text("FROM busybox\nCOPY nothing-here.txt /\n")
    result = cli("build", "-f", str(dockerfile), "--progress=plain", str(context), check=False)
    assert_one_located_error(result, dockerfile, 2, "nothing-here.txt")
