"""`pybuild build` of a FROM or COPY --from whose registry cannot be reached ends at
once with one line naming the Dockerfile line and the image.

The build runs in this process with the name lookup replaced (``socket.getaddrinfo``,
which trio's resolver calls in a thread), so the test neither needs nor depends on
the machine's DNS, and counts how often the name was looked up.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pybuild.cli.main import main


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every name looked up (numeric addresses aside); none of them exists."""
    asked: list[str] = []
    real: Callable[..., Any] = socket.getaddrinfo

    def no_such_host(host: Any, *args: Any, **kwargs: Any) -> Any:
        flags = kwargs.get("flags", args[4] if len(args) > 4 else 0)
        if isinstance(host, bytes):
            host = host.decode()
        if host in (None, "127.0.0.1", "::1", "localhost") or flags & socket.AI_NUMERICHOST:
            return real(host, *args, **kwargs)
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_host)
    return asked


def _build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dockerfile: str) -> int:
    monkeypatch.setenv("PYBUILD_ROOT", str(tmp_path / "root"))
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return main(["build", "--progress=plain", str(context)])


@pytest.mark.parametrize(
    "dockerfile, line, image, host",
    [
        ("FROM nosuch.invalid/x\nRUN true\n", 1, "nosuch.invalid/x:latest", "nosuch.invalid"),
        ("FROM scratch\nCOPY --from=busybox-typo /bin/sh /sh\n", 2, "docker.io/library/busybox-typo:latest", "registry-1.docker.io"),
    ],
)
def test_an_image_whose_registry_does_not_resolve_fails_once_naming_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], lookups: list[str],
    dockerfile: str, line: int, image: str, host: str,
) -> None:
    """BuildKit resolves a FROM (or COPY --from) image's metadata while it
    converts the Dockerfile and reports a failure against that instruction
    (frontend/dockerfile/dockerfile2llb/convert.go wraps the error with the
    stage's location: "Dockerfile:1 ... >>> FROM ...", "failed to resolve
    source metadata for docker.io/library/...: dial tcp: lookup
    registry-1.docker.io: no such host"); a name that does not resolve is
    not retried (util/resolver/retryhandler/retry.go)."""
    code = _build(tmp_path, monkeypatch, dockerfile)
    err = capsys.readouterr().err
    assert code == 1
    errors = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {tmp_path / 'ctx' / 'Dockerfile'}:{line}: ")
    assert image in errors[0] and f"cannot resolve {host}" in errors[0] and "tried once" in errors[0]
    assert lookups == [host]
    assert "Traceback" not in err and "internal error" not in err
