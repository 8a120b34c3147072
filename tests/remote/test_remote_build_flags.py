"""``pybuild build``'s remote flags (cli/_remote.py) without a cluster: what needs none.

An executor nobody answers at is one error before anything runs (or, with
``--remote-fallback=local``, one warning and a local build); a malformed flag is
a usage error naming it; ``type=reapi`` caches are told apart from the others.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.cli import _remote
from pybuild.cli.main import main
from pybuild.errors import UsageError

from .conftest import require_remote_extra

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache-from", action="append", default=[])
    parser.add_argument("--cache-to", action="append", default=[])
    _remote.add_arguments(parser)
    return parser.parse_args(list(argv))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("type=reapi,url=grpc://h:1", True),
        ("url=grpc://h:1,type=reapi", True),
        ("type=REAPI,url=grpc://h:1", True),
        ("type=registry,ref=r/x", False),
        ("type=local,src=/reapi", False),
        ("reapi", False),
    ],
)
def test_reapi_caches_are_recognized(value: str, expected: bool) -> None:
    assert _remote.is_reapi_cache(value) is expected


def test_without_a_remote_flag_the_local_factory_is_used_as_is() -> None:
    def local(plan):  # type: ignore[no-untyped-def]
        raise AssertionError("not called")

    assert _remote.runner_factory(parse("--cache-from", "type=local,src=x"), local, print) is local


def test_a_build_without_remote_flags_imports_nothing_remote(tmp_path: Path) -> None:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    code = (
        "import sys; from pybuild.cli.main import main; "
        f"assert main(['build', '-q', '--cache-from', 'type=local,src={tmp_path}/none', {str(context)!r}]) == 0; "
        "print(sorted(m for m in sys.modules if m.startswith(('pybuild.reapi', 'pybuild.dag.remote', 'grpc'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "PYBUILD_ROOT": str(tmp_path / "root"), "PYBUILD_SERVER": "off"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    "argv, words",
    [
        (("--remote-executor", "http//nope"), "--remote-executor"),
        (("--remote-executor", "grpc://h"), "a port is needed"),
        (("--remote-instance", "x"), "need --remote-executor"),
        (("--remote-fallback", "local"), "need --remote-executor"),
        (("--remote-header", "authorization=Bearer x"), "need --remote-executor or a type=reapi cache"),
        (("--cache-to", "type=reapi,url=grpc://h:1", "--remote-header", "bad"), "--remote-header"),
        (("--cache-to", "type=reapi"), "needs url="),
        (("--cache-from", "type=reapi,url=grpc://h:1,color=red"), "--cache-from"),
        (("--remote-executor", "grpc://h:1", "--remote-header", "novalue"), "--remote-header"),
    ],
)
def test_a_malformed_flag_is_a_usage_error_naming_it(argv: tuple[str, ...], words: str) -> None:
    require_remote_extra()
    with pytest.raises(UsageError) as caught:
        _remote.runner_factory(parse(*argv), lambda plan: None, print)  # type: ignore[arg-type,return-value]
    assert words in str(caught.value) and "\n" not in str(caught.value)


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> int:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "root"))
    context = tmp_path / "ctx"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY Dockerfile /d\n")
    return main(["build", "--progress=plain", *flags, str(context)])


def test_an_unreachable_executor_is_one_error_before_the_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_remote_extra()
    url = f"grpc://127.0.0.1:{closed_port()}"
    assert _build(tmp_path, monkeypatch, "--remote-executor", url) != 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert any(f"cannot reach the remote executor at {url}" in line for line in lines), err
    assert "Traceback" not in err and "#1" not in err  # nothing started
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").glob("snapshots/*"))


def test_with_fallback_an_unreachable_executor_is_a_warning_and_a_local_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_remote_extra()
    url = f"grpc://127.0.0.1:{closed_port()}"
    assert _build(tmp_path, monkeypatch, "--remote-executor", url, "--remote-fallback=local") == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if "cannot reach the remote executor" in line]
    assert len(warnings) == 1 and "--remote-fallback=local" in warnings[0]
    assert "COPY Dockerfile /d" in err and "DONE" in err


def test_an_unreachable_reapi_cache_is_one_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    require_remote_extra()
    url = f"grpc://127.0.0.1:{closed_port()}"
    assert _build(tmp_path, monkeypatch, "--cache-from", f"type=reapi,url={url}") != 0
    err = capsys.readouterr().err
    assert f"cannot reach the remote executor at {url}" in err and "Traceback" not in err
