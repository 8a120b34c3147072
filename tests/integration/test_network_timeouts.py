"""A build whose ADD URL is served a byte at a time fails with one line that
names the host and the stall timeout, within the limits the environment sets."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def dripping_server() -> Iterator[str]:
    """An HTTP server on 127.0.0.1 that sends a 64 KiB body one byte every 0.2 s."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n")
                while not stop.is_set():
                    conn.sendall(b"x")
                    time.sleep(0.2)
            except OSError:
                return

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            threading.Thread(target=drip, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    server.close()


def test_add_url_served_a_byte_at_a_time_fails_naming_the_host(cli, busybox_image: str, tmp_path: Path, dripping_server: str) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM busybox\nADD http://{dripping_server}/big.bin /big.bin\n")

    result = cli(
        "build", "-t", "slow", "--progress=plain", str(context), check=False,
        env={"PYBUILD_NETWORK_STALL_TIMEOUT": "1", "PYBUILD_NETWORK_CONNECT_TIMEOUT": "1"},
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    error = [line for line in result.stderr.splitlines() if dripping_server in line and "stall timeout" in line]
    assert error, result.stderr
    assert "less than 1 KiB in 1 s" in error[0] and "PYBUILD_NETWORK_STALL_TIMEOUT" in error[0]


def test_a_bad_network_limit_is_a_usage_error(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM busybox\nADD http://127.0.0.1:9/x /x\n")

    result = cli("build", "-t", "bad", str(context), check=False, env={"PYBUILD_NETWORK_DEADLINE": "soon"})

    assert result.returncode == 2
    assert "PYBUILD_NETWORK_DEADLINE='soon' is not a positive number of seconds" in result.stderr
    assert "Traceback" not in result.stderr


def test_add_git_over_http_from_a_dripping_server_fails(cli, busybox_image: str, tmp_path: Path, dripping_server: str) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM busybox\nADD http://{dripping_server}/repo.git /src\n")

    result = cli("build", "-t", "slowgit", str(context), check=False, env={"PYBUILD_NETWORK_STALL_TIMEOUT": "1"})

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert dripping_server in result.stderr and "too slow" in result.stderr.lower(), result.stderr
