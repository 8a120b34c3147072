"""``pybuild check``: output formats and exit codes, as docker build --check."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pybuild.cli import _check
from pybuild.cli.main import main
from pybuild.errors import UsageError

NOISY = "FROM alpine AS Build\nCMD run\n"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def run_check(argv: list[str]) -> int:
    parser = _Parser(prog="pybuild check")
    _check.add_arguments(parser)
    return _check.run(parser.parse_args(argv))


@pytest.fixture
def context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # No local image store: the checks must not depend on this machine's root.
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "no-root"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_text_output_names_file_line_rule_and_hint(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "Dockerfile").write_text(NOISY)
    assert run_check([]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0] == "Dockerfile:1: StageNameCasing: Stage name 'Build' should be lowercase"
    assert lines[1].startswith("  hint: ")
    assert lines[2] == (
        "Dockerfile:2: JSONArgsRecommended: "
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
    )
    assert lines[3].startswith("  hint: ")
    assert len(lines) == 4
    assert "2 warnings found" in out.err
    assert not (context / "no-root").exists()  # a check creates no pybuild root


def test_json_output(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "my.Dockerfile").write_text(NOISY)
    assert run_check(["-f", "my.Dockerfile", "--format", "json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["file"] == "my.Dockerfile"
    assert document["errors_requested"] is False and document["failed"] is False
    assert [(w["rule"], w["line"], w["severity"]) for w in document["warnings"]] == [
        ("StageNameCasing", 1, "warning"), ("JSONArgsRecommended", 2, "warning"),
    ]
    first = document["warnings"][0]
    assert set(first) == {"rule", "line", "end_line", "message", "hint", "url", "severity"}
    assert first["url"] == "https://docs.docker.com/go/dockerfile/rule/stage-name-casing/"


def test_error_true_with_warnings_exits_1(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "Dockerfile").write_text("# check=error=true\n" + NOISY)
    assert run_check([]) == 1
    err = capsys.readouterr().err
    assert "lint violation found for rules: JSONArgsRecommended, StageNameCasing" in err


def test_error_true_without_warnings_exits_0(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "Dockerfile").write_text('# check=error=true\nFROM alpine\nCMD ["run"]\n')
    assert run_check([]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "no warnings found" in captured.err


def test_skip_directive(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "Dockerfile").write_text("# check=skip=all;error=true\n" + NOISY)
    assert run_check([]) == 0
    assert capsys.readouterr().out == ""


def test_build_args_reach_the_checks(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "Dockerfile").write_text('FROM alpine\nARG A=$B\nCMD ["x"]\n')
    assert run_check([]) == 0
    assert "UndefinedVar" in capsys.readouterr().out
    # A --build-arg for A replaces the default, so $B is never expanded.
    assert run_check(["--build-arg", "A=1"]) == 0
    assert capsys.readouterr().out == ""



def test_a_build_arg_named_alone_comes_from_the_environment(
    context: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (context / "Dockerfile").write_text('FROM alpine\nARG A=$B\nCMD ["x"]\n')
    monkeypatch.delenv("A", raising=False)
    assert run_check(["--build-arg", "A"]) == 0  # unset here: not passed, as docker
    assert "UndefinedVar" in capsys.readouterr().out
    monkeypatch.setenv("A", "1")
    assert run_check(["--build-arg", "A"]) == 0
    assert capsys.readouterr().out == ""

def test_context_feeds_copy_ignored_file(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "app").mkdir()
    (context / "app" / ".dockerignore").write_text("secret.txt\n")
    (context / "Dockerfile").write_text("# check=experimental=CopyIgnoredFile\nFROM alpine\nCOPY secret.txt /\n")
    assert run_check(["-f", "Dockerfile", "app"]) == 0
    assert "Dockerfile:3: CopyIgnoredFile: Attempting to Copy file \"secret.txt\"" in capsys.readouterr().out


def test_usage_errors(context: Path) -> None:
    with pytest.raises(UsageError):
        run_check(["no-such-dir"])
    with pytest.raises(UsageError):
        run_check(["-f", "missing.Dockerfile"])
    with pytest.raises(UsageError):
        run_check(["--build-arg", "=x"])
    with pytest.raises(UsageError):
        run_check(["--format", "xml"])


def test_main_exit_codes(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command table (needs the "check" line in cli/main.py's COMMANDS)."""
    (context / "Dockerfile").write_text(NOISY)
    assert main(["check"]) == 0
    assert "StageNameCasing" in capsys.readouterr().out
    (context / "Dockerfile").write_text("# check=error=true\n" + NOISY)
    assert main(["check"]) == 1
    capsys.readouterr()
    assert main(["check", "--format", "yaml"]) == 2
    assert main(["check", "-f", "nope"]) == 2
    capsys.readouterr()
    (context / "Dockerfile").write_text("FROM alpine\nFROBNICATE x\n")
    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "unknown instruction: FROBNICATE" in err
    assert "Traceback" not in err


def test_main_reports_a_bad_check_directive_as_an_error(context: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (context / "Dockerfile").write_text("# check=error=perhaps\nFROM alpine\n")
    assert main(["check"]) == 1
    err = capsys.readouterr().err
    assert "Dockerfile:1: failed to parse check options" in err
