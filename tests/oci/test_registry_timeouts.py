"""Registries that answer slowly or never: stall timeouts, the overall
deadline, bounded retries and size limits.  Servers sleep on trio's
MockClock, so no test waits in wall time; they count attempts instead."""

from __future__ import annotations

import json

import pytest
import trio
import trio.testing

from pybuild.errors import RegistryError, UsageError
from pybuild.oci._network import NetworkLimits
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import LayerDescriptor, RegistryClient

from .registry_server import OCI_MANIFEST, BearerAuth, DictStore, FakeRegistry, Fault, Response, TokenService, on, sha256, tiny_image

QUICK = NetworkLimits(connect_timeout=5, stall_timeout=5, deadline=60)


class SlowServer:
    """Answers every request with ``status``/``headers`` and then ``body``,
    ``piece`` bytes every ``every`` seconds; ``silent`` never answers at all.
    A header set to None is left out (no Content-Length: the body ends when
    the connection closes)."""

    def __init__(self, body: bytes = b"", *, piece: int = 1, every: float = 0.5, silent: bool = False,
                 headers: dict[str, str | None] | None = None) -> None:
        self.body, self.piece, self.every, self.silent = body, piece, every, silent
        self.headers = headers or {}
        self.requests = 0
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        nursery.start_soon(trio.serve_listeners, self._serve, listeners)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, stream: trio.SocketStream) -> None:
        received = b""
        try:
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some(65536)
                if not data:
                    return
                received += data
            self.requests += 1
            if self.silent:
                await trio.sleep_forever()
            headers = {"Content-Length": str(len(self.body)), "Content-Type": OCI_MANIFEST, **self.headers}
            head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None) + "\r\n"
            await stream.send_all(head.encode())
            for start in range(0, len(self.body), self.piece):
                await trio.sleep(self.every)
                await stream.send_all(self.body[start : start + self.piece])
            if headers["Content-Length"] is None:
                await stream.aclose()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def resolve(netloc: str, **options: object) -> None:
    async with RegistryClient(**options) as client:  # type: ignore[arg-type]
        await client.resolve(parse_reference(f"{netloc}/slow:1"), "linux/amd64")


async def test_a_silent_registry_is_tried_twice_not_five_times(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    server = SlowServer(silent=True)
    await server.start(nursery)

    with pytest.raises(RegistryError) as caught:
        await resolve(server.netloc, limits=QUICK, retries=4)

    assert server.requests == 2  # one retry for a timeout, whatever ``retries`` says
    text = str(caught.value)
    assert server.netloc in text and "no response within 5 s" in text and "PYBUILD_NETWORK_STALL_TIMEOUT" in text
    assert "\n" not in text


async def test_a_manifest_dripped_a_byte_at_a_time_stalls(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"f": b"f"})
    # A byte every 0.5 s never trips a per-read timeout of 1 s: the stall floor does.
    server = SlowServer(image.manifest, piece=1, every=0.5)
    await server.start(nursery)
    limits = NetworkLimits(connect_timeout=1, stall_timeout=1, stall_bytes=1024, deadline=600)

    with pytest.raises(RegistryError) as caught:
        await resolve(server.netloc, limits=limits)

    assert server.requests == 2
    assert "less than 1 KiB in 1 s (stall timeout" in str(caught.value)
    assert server.netloc in str(caught.value)


async def test_a_blob_dripped_slowly_stalls_and_nothing_is_stored(fake_registry: FakeRegistry, nursery: trio.Nursery,
                                                                autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"big": bytes(range(256)) * 64})
    fake_registry.add_image("drip", "1", image)
    layer = image.layers[0]
    server = SlowServer(layer, piece=16, every=2, headers={"Content-Type": "application/octet-stream"})
    await server.start(nursery)
    fake_registry.blob_redirect = f"http://{server.netloc}"
    store = DictStore()

    with pytest.raises(RegistryError) as caught:
        async with RegistryClient(limits=NetworkLimits(connect_timeout=5, stall_timeout=5, deadline=600)) as client:
            await client.pull(parse_reference(f"{fake_registry.netloc}/drip:1"), "linux/amd64", store)

    assert server.requests == 2
    assert "downloading blob" in str(caught.value) and "stall timeout" in str(caught.value)
    assert set(store.blobs) <= {image.digest} and store.open_writers == 0


async def test_a_steady_but_endless_transfer_meets_the_overall_deadline(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    # 2 KiB a second passes the stall floor, but 3 MiB would take 25 minutes.
    body = b"{" + b" " * (3 * 1024 * 1024) + b"}"
    server = SlowServer(body, piece=2048, every=1)
    await server.start(nursery)
    limits = NetworkLimits(connect_timeout=5, stall_timeout=5, deadline=30)

    with pytest.raises(RegistryError) as caught:
        await resolve(server.netloc, limits=limits)

    assert server.requests == 1
    text = str(caught.value)
    assert "overall deadline" in text and "PYBUILD_NETWORK_DEADLINE" in text and server.netloc in text


async def test_retries_stop_at_the_overall_deadline(fake_registry: FakeRegistry, autojump_clock: trio.testing.MockClock) -> None:
    fake_registry.faults.append(
        Fault(on("GET", "/manifests/"), times=None, respond=lambda r: Response(503, {"Retry-After": "20"}))
    )

    with pytest.raises(RegistryError) as caught:
        await resolve(fake_registry.netloc, limits=NetworkLimits(deadline=30), retries=4)

    # The second answer comes at t=20; waiting until t=40 would pass the deadline.
    assert fake_registry.count("GET", "/manifests/") == 2
    assert "503" in str(caught.value)


async def test_a_manifest_over_the_size_limit_is_refused(fake_registry: FakeRegistry) -> None:
    big = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "annotations": {"x": "y" * (5 * 1024 * 1024)}}).encode()
    fake_registry.add_manifest("huge", "1", big)

    with pytest.raises(RegistryError, match="more than 4194304 bytes") as caught:
        async with RegistryClient(limits=QUICK) as client:
            await client.resolve(parse_reference(f"{fake_registry.netloc}/huge:1"), "linux/amd64")
    assert "manifest" in str(caught.value)


async def test_a_manifest_without_content_length_over_the_limit_is_refused(nursery: trio.Nursery) -> None:
    server = SlowServer(b"{" + b" " * 4096 + b"}", piece=1024, every=0, headers={"Content-Length": None})
    await server.start(nursery)

    with pytest.raises(RegistryError, match="more than 1000 bytes"):
        async with RegistryClient(limits=QUICK, max_manifest_size=1000) as client:
            await client.resolve(parse_reference(f"{server.netloc}/slow:1"), "linux/amd64")


async def test_a_huge_token_answer_is_refused(fake_registry: FakeRegistry, nursery: trio.Nursery) -> None:
    tokens = TokenService()
    await nursery.start(tokens.server.serve)
    fake_registry.auth = BearerAuth(tokens.realm, "fake", set())
    big = json.dumps({"token": "t" * (2 * 1024 * 1024)}).encode()
    tokens.server.handler = lambda request: Response(200, {"Content-Type": "application/json"}, big)

    with pytest.raises(RegistryError, match="token service .* sent more than"):
        await resolve(fake_registry.netloc, limits=QUICK)


def test_limits_come_from_the_environment() -> None:
    limits = NetworkLimits.from_env(
        {"PYBUILD_NETWORK_CONNECT_TIMEOUT": "7", "PYBUILD_NETWORK_STALL_TIMEOUT": "12.5", "PYBUILD_NETWORK_DEADLINE": "900"}
    )
    assert (limits.connect_timeout, limits.stall_timeout, limits.deadline) == (7, 12.5, 900)
    assert NetworkLimits.from_env({}) == NetworkLimits()


@pytest.mark.parametrize("value", ["abc", "0", "-3", "inf", "nan"])
def test_a_bad_limit_in_the_environment_is_a_usage_error(value: str) -> None:
    with pytest.raises(UsageError, match="PYBUILD_NETWORK_STALL_TIMEOUT"):
        NetworkLimits.from_env({"PYBUILD_NETWORK_STALL_TIMEOUT": value})


async def test_a_head_answer_announcing_a_big_blob_is_not_a_big_body(fake_registry: FakeRegistry) -> None:
    big = b"z" * (200 * 1024)  # over the 64 KiB an answer to HEAD may carry
    digest = fake_registry.add_blob("heads", big)
    fake_registry.add_manifest("heads", "1", b"{}")
    image = tiny_image({"f": b"f"})
    store = DictStore()
    image.store_into(store)
    store.put(big)

    async with RegistryClient(limits=QUICK) as client:
        await client.push(parse_reference(f"{fake_registry.netloc}/heads:2"), manifest=image.manifest, media_type=OCI_MANIFEST,
                          blobs=[LayerDescriptor(digest, len(big), ""), *(LayerDescriptor(d, len(b), "") for d, b in image.blobs.items())],
                          store=store)
    assert fake_registry.count("HEAD", digest) == 1 and fake_registry.count("POST", "/blobs/uploads/") == 2


async def test_an_upload_to_a_silent_server_stalls_after_one_retry(fake_registry: FakeRegistry, nursery: trio.Nursery,
                                                                   autojump_clock: trio.testing.MockClock) -> None:
    image = tiny_image({"big": bytes(range(256)) * 800})  # the body goes out in pieces, then nothing answers
    store = DictStore()
    image.store_into(store)
    server = SlowServer(silent=True)
    await server.start(nursery)
    fake_registry.faults.append(Fault(
        on("POST", "/blobs/uploads/$"),
        times=None,
        respond=lambda r: Response(202, {"Location": f"http://{server.netloc}/v2/up/blobs/uploads/x?_state=s"}),
    ))

    with pytest.raises(RegistryError) as caught:
        async with RegistryClient(limits=QUICK, max_concurrent_blobs=1) as client:
            await client.push(parse_reference(f"{fake_registry.netloc}/up:1"), manifest=image.manifest, media_type=OCI_MANIFEST,
                              blobs=[LayerDescriptor(d, len(b), "") for d, b in image.blobs.items()], store=store)

    assert server.requests == 2
    text = str(caught.value)
    assert "uploading blob sha256:" in text and "in 5 s (stall timeout" in text
