"""The command line's own behaviour: help, version, usage errors, laziness."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pybuild import __version__
from pybuild.cli.main import COMMANDS, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"pybuild {__version__}"


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_no_arguments_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_version_and_help_load_nothing_heavy() -> None:
    code = (
        "import sys; from pybuild.cli.main import main; main(['--version']); main(['--help']);"
        "heavy = [m for m in ('lark', 'trio', 'httpx', 'pyroute2', 'networkx', 'zstandard', 'pybuild.grammar') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_command_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["parse", "--help"]) == 0
    assert "--dump" in capsys.readouterr().out
