"""Host rules, platform matching, backoff and error wording, without a server
(httpx's MockTransport answers where a request is needed)."""

from __future__ import annotations

import json

import httpx
import pytest
import trio.testing

from pybuild.errors import NotFound, RegistryError
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import RegistryClient
from pybuild.oci.registry._endpoint import allows_plain_http, endpoint_for
from pybuild.oci.registry._manifest import normalize_arch, parse_platform, select_platform
from pybuild.oci.registry._retry import RetryPolicy, parse_retry_after

from .registry_server import image_index, tiny_image


@pytest.mark.parametrize(
    ("registry", "origin"),
    [
        ("docker.io", "https://registry-1.docker.io"),
        ("ghcr.io", "https://ghcr.io"),
        ("localhost:5000", "http://localhost:5000"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("127.1.2.3", "http://127.1.2.3"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("registry.internal:5000", "https://registry.internal:5000"),
    ],
)
def test_registry_hosts_and_schemes(registry: str, origin: str) -> None:
    assert endpoint_for(registry).origin == origin


def test_insecure_registries_by_name_port_or_cidr() -> None:
    assert allows_plain_http("registry.internal:5000", ["registry.internal"])
    assert allows_plain_http("registry.internal:5000", ["registry.internal:5000"])
    assert not allows_plain_http("registry.internal:5000", ["registry.internal:5001"])
    assert allows_plain_http("10.1.2.3:5000", ["10.0.0.0/8"])
    assert not allows_plain_http("11.1.2.3:5000", ["10.0.0.0/8"])
    assert not allows_plain_http("example.com", [])
    assert endpoint_for("registry.internal:5000", ["registry.internal:5000"]).scheme == "http"


def test_platform_normalization() -> None:
    assert parse_platform("linux/amd64") == ("linux", "amd64", "")
    assert parse_platform("linux/aarch64") == ("linux", "arm64", "v8")
    assert parse_platform("linux/arm") == ("linux", "arm", "v7")
    assert normalize_arch("arm", "6") == ("arm", "v6")
    with pytest.raises(RegistryError, match="invalid platform"):
        parse_platform("amd64")


def test_arm_v7_falls_back_to_v6_but_not_the_other_way() -> None:
    v6 = tiny_image({"v": b"6"}, architecture="arm")
    index = image_index((v6, "arm", "v6"))
    assert select_platform(index, "linux/arm/v7", "img").digest == v6.digest
    v7_only = image_index((tiny_image({"v": b"7"}, architecture="arm"), "arm", "v7"))
    with pytest.raises(NotFound, match="linux/arm/v7"):
        select_platform(v7_only, "linux/arm/v6", "img")


def test_attestations_are_never_chosen() -> None:
    image = tiny_image({"f": b"f"})
    index = json.loads(image_index((image, "amd64", "")))
    index["manifests"].insert(0, {**index["manifests"][0], "digest": "sha256:" + "a" * 64,
                                  "platform": {"os": "unknown", "architecture": "unknown"}})
    assert select_platform(json.dumps(index).encode(), "linux/amd64", "img").digest == image.digest


def test_backoff_grows_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, max_retry_after=30.0)
    for attempt in range(6):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= policy.delay(attempt) <= ceiling
    assert policy.delay(0, retry_after=2) == 2
    assert policy.delay(0, retry_after=3600) == 30.0
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None


async def test_docker_hub_names_reach_registry_1_over_https() -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(NotFound) as caught:
            await client.resolve(parse_reference("busybox"), "linux/amd64")
    assert [str(url) for url in seen] == ["https://registry-1.docker.io/v2/library/busybox/manifests/latest"]
    assert str(caught.value) == "manifest unknown: docker.io/library/busybox:latest"


async def test_retry_after_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    times: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        times.append(trio.current_time())
        if len(times) == 1:
            return httpx.Response(429, headers={"Retry-After": "86400"})
        return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(NotFound):
            await client.resolve(parse_reference("127.0.0.1:1/capped:1"), "linux/amd64")
    assert times[1] - times[0] == pytest.approx(RetryPolicy().max_retry_after)


async def test_schema1_manifests_are_refused_clearly() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.dumps({"schemaVersion": 1, "name": "old", "tag": "1", "fsLayers": []}).encode()
        return httpx.Response(200, content=body, headers={"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"})

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RegistryError, match="schema 1"):
            await client.resolve(parse_reference("127.0.0.1:1/old:1"), "linux/amd64")


async def test_oversized_manifest_is_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b" " * 5000)

    async with RegistryClient(transport=httpx.MockTransport(handler), max_manifest_size=4096) as client:
        with pytest.raises(RegistryError, match="more than 4096 bytes"):
            await client.resolve(parse_reference("127.0.0.1:1/huge:1"), "linux/amd64")


async def test_redirect_loops_end() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": str(request.url)})

    async with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(RegistryError, match="redirected .* too many times"):
            await client.resolve(parse_reference("127.0.0.1:1/loop:1"), "linux/amd64")
