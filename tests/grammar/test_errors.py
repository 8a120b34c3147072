"""Bad Dockerfiles: one line FILE:LINE: message, exit code 1, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.cli.main import main

BAD = {
    "unknown-instruction": (b"FROM busybox\nRUNN echo hi\n", 2, "unknown instruction: RUNN"),
    "malformed-flag": (b"FROM busybox\nCOPY --chown a /b\n", 2, "missing a value on flag: --chown"),
    "unknown-flag": (b"FROM busybox\nCOPY --frm=x a /b\n", 2, "unknown flag: --frm"),
    "bad-bool-flag": (b"FROM busybox\nCOPY --link=maybe a /b\n", 2, "expecting boolean value"),
    "json-not-strings": (b'FROM busybox\nCMD ["echo", 1]\n', 2, "arrays must be comprised of strings only"),
    "shell-not-json": (b"FROM busybox\nSHELL /bin/bash -c\n", 2, "SHELL requires the arguments to be in JSON form"),
    "unterminated-heredoc": (b"FROM busybox\nRUN <<EOF\necho hi\n", 2, "unterminated heredoc"),
    "before-first-from": (b"ARG A=1\nRUN echo hi\nFROM busybox\n", 2, "RUN before the first FROM"),
    "no-instructions": (b"# just a comment\n\n", None, "file with no instructions"),
    "empty-file": (b"", 1, "file with no instructions"),
    "bad-escape": (b"# escape=x\nFROM busybox\n", 1, "invalid escape token"),
    "repeated-directive": (b"# escape=`\n# escape=\\\nFROM busybox\n", 2, "only one escape parser directive"),
    "invalid-utf8": (b"FROM busybox\nRUN echo \xff\xfe\n", 2, "invalid UTF-8"),
    "nul-byte": (b"FROM busybox\nRUN echo \x00\n", 2, "NUL byte"),
    "env-without-value": (b"FROM busybox\nENV PATH\n", 2, "ENV must have two arguments"),
    "from-arity": (b"FROM busybox AS\n", 1, "FROM requires either one or three arguments"),
    "bad-stage-name": (b"FROM busybox AS 1st\n", 1, "invalid name for build stage"),
    "duplicate-stage": (b"FROM busybox AS a\nFROM busybox AS A\n", 2, "duplicate stage name"),
    "copy-one-arg": (b"FROM busybox\nCOPY onlyone\n", 2, "requires at least two arguments"),
    "healthcheck-type": (b"FROM busybox\nHEALTHCHECK PING x\n", 2, "Unknown type"),
    "healthcheck-duration": (b"FROM busybox\nHEALTHCHECK --interval=5 CMD true\n", 2, "invalid duration"),
    "onbuild-onbuild": (b"FROM busybox\nONBUILD ONBUILD RUN x\n", 2, "Chaining ONBUILD"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_gives_one_located_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text, line, message = BAD[case]
    path = tmp_path / "Dockerfile"
    path.write_bytes(text)
    assert main(["parse", "-f", str(path)]) == 1
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    prefix = f"error: {path}:{line}: " if line is not None else f"error: {path}:"
    assert first.startswith(prefix), first
    assert message in first
    assert "Traceback" not in err


def test_no_traceback_from_the_real_command(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_bytes(b"FROM busybox\nCOPY --chown a /b\n")
    result = subprocess.run(
        [sys.executable, "-m", "pybuild", "parse", "-f", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {path}:2: ")
    assert "Traceback" not in result.stderr


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "--bogus"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_missing_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "-f", str(tmp_path / "nope")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_one_mebibyte_line_parses() -> None:
    from pybuild.grammar import parse

    word = "x" * (1 << 20)
    dockerfile = parse(f"FROM busybox\nRUN echo {word}\nLABEL big={word}\n")
    run, label = dockerfile.stages[0].instructions
    assert run.command.args == (f"echo {word}",)
    assert label.pairs[0].value == word


def test_a_hundred_thousand_lines_parse() -> None:
    from pybuild.grammar import parse

    body = "".join(f"RUN echo {i} \\\n  && true\n" for i in range(50_000))
    dockerfile = parse("FROM busybox\n" + body)
    instructions = dockerfile.stages[0].instructions
    assert len(instructions) == 50_000
    assert instructions[-1].span.start == 100_000 and instructions[-1].span.end == 100_001
