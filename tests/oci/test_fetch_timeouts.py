"""ADD of an http(s) URL from a slow or silent server: a stall timeout and an
overall deadline, one clear error naming the host, no partial file.  Servers
sleep on trio's MockClock; nothing waits in wall time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing

from pybuild.errors import BuildError
from pybuild.oci._fetch import RemoteFetcher
from pybuild.oci._network import NetworkLimits

from .test_registry_timeouts import SlowServer

LIMITS = NetworkLimits(connect_timeout=1, stall_timeout=1, stall_bytes=1024, deadline=60)


@dataclass(frozen=True)
class Source:
    url: str
    filename: str = "file.bin"
    checksum: str | None = None


async def test_a_download_dripped_a_byte_at_a_time_fails_naming_the_host(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    server = SlowServer(b"x" * 4096, piece=1, every=0.5, headers={"Content-Type": "application/octet-stream"})
    await server.start(nursery)

    with pytest.raises(BuildError) as caught:
        await RemoteFetcher(limits=LIMITS).http(Source(f"http://{server.netloc}/slow.bin"), tmp_path)

    text = str(caught.value)
    assert server.netloc in text and "less than 1 KiB in 1 s (stall timeout" in text and "\n" not in text
    assert server.requests == 1
    assert list(tmp_path.iterdir()) == []  # the partial file is gone


async def test_a_silent_download_server_times_out(nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    server = SlowServer(silent=True)
    await server.start(nursery)

    with pytest.raises(BuildError, match="no response within 1 s") as caught:
        await RemoteFetcher(limits=LIMITS).http(Source(f"http://{server.netloc}/never"), tmp_path)
    assert server.netloc in str(caught.value)


async def test_a_steady_endless_download_meets_the_overall_deadline(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 2 KiB a second passes the stall floor; with no Content-Length nothing says when it ends.
    server = SlowServer(b"y" * (8 * 1024 * 1024), piece=2048, every=1, headers={"Content-Length": None})
    await server.start(nursery)
    limits = NetworkLimits(connect_timeout=1, stall_timeout=5, deadline=20)

    with pytest.raises(BuildError, match="overall deadline; set PYBUILD_NETWORK_DEADLINE"):
        await RemoteFetcher(limits=limits).http(Source(f"http://{server.netloc}/endless"), tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_a_normal_download_still_works(nursery: trio.Nursery, tmp_path: Path) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB, in 64 KiB pieces
    server = SlowServer(data, piece=65536, every=0, headers={"Content-Type": "application/octet-stream"})
    await server.start(nursery)

    digest = await RemoteFetcher(limits=LIMITS).http(Source(f"http://{server.netloc}/file.bin"), tmp_path)

    assert digest == "sha256:" + hashlib.sha256(data).hexdigest()
    assert (tmp_path / "file.bin").read_bytes() == data
