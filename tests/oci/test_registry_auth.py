"""Credentials and authentication: Docker's config.json, Basic, Bearer tokens,
and where secrets may (and may not) go."""

from __future__ import annotations

import base64
import json
import logging
import os
from pathlib import Path

import pytest
import trio
import trio.testing

from pybuild.errors import PybuildError, RegistryError
from pybuild.oci._reference import parse_reference
from pybuild.oci.registry import CredentialStore, Credentials, LayerDescriptor, RegistryClient
from pybuild.oci.registry._auth import parse_challenges

from .registry_server import (
    BasicAuth,
    BearerAuth,
    BlobHost,
    DictStore,
    FakeRegistry,
    TokenService,
    sha256,
    tiny_image,
)

USER = "alice"
PASSWORD = "pw-Secret-7d1f"


def write_config(directory: Path, document: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(document))
    return directory


def auth_entry(user: str, password: str) -> dict:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def credentials_for(registry: FakeRegistry) -> CredentialStore:
    return CredentialStore({registry.netloc: Credentials(USER, PASSWORD)})


def every_secret(tokens: list[str]) -> list[str]:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    return [PASSWORD, basic, *tokens]


def assert_no_secret(texts: list[str], secrets: list[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text


def error_texts(error: PybuildError) -> list[str]:
    return [str(error), repr(error), error.render(), error.hint or "", repr(error.args)]


# --- config.json ---------------------------------------------------------------


def test_docker_config_auths_and_docker_hub_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "docker", {
        "auths": {
            "https://index.docker.io/v1/": auth_entry("hubuser", "hubpass"),
            "127.0.0.1:5000": auth_entry("local", "pa:ss:word"),
            "https://registry.example.com/v2/": {"username": "old", "password": "style"},
            "token.example.com": {"auth": base64.b64encode(b"<token>:").decode(), "identitytoken": "refresh-me"},
            "empty.example.com": {},
        }
    })
    store = CredentialStore.from_docker_config(config)

    assert store.get("docker.io") == Credentials("hubuser", "hubpass")
    assert store.get("index.docker.io") == Credentials("hubuser", "hubpass")
    assert store.get("127.0.0.1:5000") == Credentials("local", "pa:ss:word")
    assert store.get("registry.example.com") == Credentials("old", "style")
    assert store.get("token.example.com").identity_token == "refresh-me"  # type: ignore[union-attr]
    assert store.get("empty.example.com") is None
    assert store.get("127.0.0.1:5001") is None


def test_docker_config_env_var_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "elsewhere", {"auths": {"reg.example.com": auth_entry("u", "p")}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    assert CredentialStore.from_docker_config().get("reg.example.com") == Credentials("u", "p")

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nothing-here"))
    assert CredentialStore.from_docker_config().get("reg.example.com") is None


def test_broken_config_is_one_line_without_content(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"auths": {"x": {"auth": "' + PASSWORD + '"')
    with pytest.raises(RegistryError) as caught:
        CredentialStore.from_docker_config(tmp_path)
    assert "not valid JSON" in str(caught.value)
    assert_no_secret(error_texts(caught.value), [PASSWORD])


def test_repr_never_shows_secrets(tmp_path: Path) -> None:
    credentials = Credentials(USER, PASSWORD, identity_token="idtok-123")
    store = CredentialStore({"r.example.com": credentials})
    for text in (repr(credentials), str(credentials), repr(store), f"{credentials!r} {store}"):
        assert PASSWORD not in text and "idtok-123" not in text
    assert USER in repr(credentials)


def test_credential_helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-fake"
    helper.write_text(
        "#!/bin/sh\n"
        'read server\n'
        'if [ "$server" = "helped.example.com" ]; then\n'
        '  echo \'{"ServerURL":"helped.example.com","Username":"hu","Secret":"hs"}\'\n'
        "else echo 'credentials not found in native keychain'; exit 1; fi\n"
    )
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = write_config(tmp_path / "docker", {"credsStore": "fake", "credHelpers": {"other.example.com": "missing"}})
    store = CredentialStore.from_docker_config(config)

    assert store.get("helped.example.com") == Credentials("hu", "hs")
    assert store.get("unknown.example.com") is None
    assert store.get("other.example.com") is None  # helper not installed: anonymous


def test_challenge_parsing() -> None:
    [bearer] = parse_challenges('Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"')
    assert bearer.scheme == "bearer"
    assert bearer.get("realm") == "https://auth.example.com/token"
    assert bearer.get("scope") == "repository:a/b:pull,push"
    basic, other = parse_challenges('Basic realm="x, y", Bearer realm=https://t.example.com/,error="invalid_token"')
    assert (basic.scheme, basic.get("realm")) == ("basic", "x, y")
    assert (other.scheme, other.get("realm"), other.get("error")) == ("bearer", "https://t.example.com/", "invalid_token")


# --- Bearer tokens -------------------------------------------------------------


@pytest.fixture
async def token_service(nursery: trio.Nursery) -> TokenService:
    service = TokenService(username=USER, password=PASSWORD)
    await nursery.start(service.server.serve)
    return service


@pytest.fixture
async def blob_host(nursery: trio.Nursery, fake_registry: FakeRegistry) -> BlobHost:
    host = BlobHost(fake_registry)
    await nursery.start(host.server.serve)
    return host


def bearer(registry: FakeRegistry, service: TokenService) -> None:
    registry.auth = BearerAuth(service.realm, "fake-registry", service.issued)  # type: ignore[arg-type]


async def test_bearer_token_is_fetched_from_the_realm_and_sent_only_to_the_registry(
    fake_registry: FakeRegistry, token_service: TokenService, blob_host: BlobHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bearer(fake_registry, token_service)
    fake_registry.blob_redirect = blob_host.server.url  # blobs come from another host
    image = tiny_image({"f": b"f" * 1000})
    fake_registry.add_image("team/app", "1", image)
    store = DictStore()

    async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
        await client.pull(parse_reference(f"{fake_registry.netloc}/team/app:1"), "linux/amd64", store)

    assert {*image.blobs, image.digest} <= set(store.blobs)
    # One token for the pull scope, fetched with the user's credentials.
    assert len(token_service.issued) == 1
    token = token_service.issued[0]
    [token_request] = token_service.server.requests
    assert token_request.param("scope") == "repository:team/app:pull"
    assert token_request.param("service") == "fake-registry"
    assert token_request.headers["authorization"] == BasicAuth(USER, PASSWORD).expected
    # The token goes to the registry; the storage host gets no credential at all.
    authorized = [r for r in fake_registry.requests if r.headers.get("authorization") == f"Bearer {token}"]
    assert len(authorized) == len(fake_registry.requests) - 1  # all but the first, challenged request
    assert blob_host.server.requests, "the blobs were redirected"
    assert all("authorization" not in r.headers for r in blob_host.server.requests)
    assert_no_secret([caplog.text], every_secret(token_service.issued))


async def test_refused_token_is_renewed_once(fake_registry: FakeRegistry, token_service: TokenService) -> None:
    bearer(fake_registry, token_service)
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("renew", "1", image)
    reference = parse_reference(f"{fake_registry.netloc}/renew:1")

    async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
        await client.resolve(reference, "linux/amd64")
        revoked = list(token_service.issued)
        token_service.issued.clear()  # the registry now accepts only tokens issued from here on
        await client.resolve(reference, "linux/amd64")

    assert len(token_service.issued) == 1 and token_service.issued[0] not in revoked


async def test_anonymous_token_request_carries_no_credentials(nursery: trio.Nursery, fake_registry: FakeRegistry) -> None:
    service = TokenService()
    await nursery.start(service.server.serve)
    bearer(fake_registry, service)
    fake_registry.add_image("public", "1", tiny_image({"f": b"f"}))

    async with RegistryClient() as client:
        await client.resolve(parse_reference(f"{fake_registry.netloc}/public:1"), "linux/amd64")

    assert service.server.requests and all("authorization" not in r.headers for r in service.server.requests)


async def test_rejected_credentials_leak_nowhere(
    fake_registry: FakeRegistry, token_service: TokenService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token_service.basic = BasicAuth(USER, "the-real-password")
    bearer(fake_registry, token_service)
    fake_registry.add_image("private", "1", tiny_image({"f": b"f"}))

    with pytest.raises(RegistryError) as caught:
        async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
            await client.pull(parse_reference(f"{fake_registry.netloc}/private:1"), "linux/amd64", DictStore())

    assert str(caught.value).startswith(f"authentication failed for {fake_registry.netloc}")
    assert "docker login" in (caught.value.hint or "")
    assert_no_secret([*error_texts(caught.value), caplog.text], every_secret([]))


async def test_credentials_are_not_sent_to_a_plain_http_realm_elsewhere(fake_registry: FakeRegistry) -> None:
    fake_registry.auth = BearerAuth("http://auth.example.invalid/token", "svc", [])
    fake_registry.add_image("x", "1", tiny_image({"f": b"f"}))

    with pytest.raises(RegistryError, match="refusing to send the credentials") as caught:
        async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
            await client.resolve(parse_reference(f"{fake_registry.netloc}/x:1"), "linux/amd64")
    assert_no_secret(error_texts(caught.value), every_secret([]))


async def test_push_asks_for_push_scope_and_mount_source(fake_registry: FakeRegistry, token_service: TokenService) -> None:
    bearer(fake_registry, token_service)
    image = tiny_image({"f": b"f"})
    fake_registry.add_image("source/repo", "1", image)
    store = DictStore()
    image.store_into(store)
    descriptors = [LayerDescriptor(d, s, m) for d, s, m in image.descriptors()]
    source = parse_reference(f"{fake_registry.netloc}/source/repo:1")
    async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
        await client.push(
            parse_reference(f"{fake_registry.netloc}/target/repo:1"),
            manifest=image.manifest,
            media_type="application/vnd.oci.image.manifest.v1+json",
            blobs=descriptors,
            store=store,
            mount_from={d.digest: source for d in descriptors},
        )

    scopes = [r.query.get("scope") for r in token_service.server.requests]
    assert ["repository:target/repo:pull,push", "repository:source/repo:pull"] in scopes
    assert fake_registry.count("POST", "/blobs/uploads/") == 2
    assert all(r.param("mount") and r.param("from") == "source/repo" for r in fake_registry.requests if r.method == "POST")
    assert fake_registry.manifests[("target/repo", "1")][1] == image.manifest


# --- Basic auth ----------------------------------------------------------------


async def test_basic_credentials_go_to_the_registry_only(
    fake_registry: FakeRegistry, blob_host: BlobHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_registry.auth = BasicAuth(USER, PASSWORD)
    fake_registry.blob_redirect = blob_host.server.url
    image = tiny_image({"f": b"basic"})
    fake_registry.add_image("basic", "1", image)
    store = DictStore()

    async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
        await client.pull(parse_reference(f"{fake_registry.netloc}/basic:1"), "linux/amd64", store)

    assert sha256(image.layers[0]) in store.blobs
    first, *rest = fake_registry.requests
    assert "authorization" not in first.headers  # nothing is sent before the registry asks
    assert all(r.headers.get("authorization") == BasicAuth(USER, PASSWORD).expected for r in rest)
    assert blob_host.server.requests and all("authorization" not in r.headers for r in blob_host.server.requests)
    assert_no_secret([caplog.text], every_secret([]))


async def test_wrong_basic_password_is_authentication_required(fake_registry: FakeRegistry, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake_registry.auth = BasicAuth(USER, "another-password")
    fake_registry.add_image("basic", "1", tiny_image({"f": b"f"}))

    with pytest.raises(RegistryError) as caught:
        async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
            await client.resolve(parse_reference(f"{fake_registry.netloc}/basic:1"), "linux/amd64")

    assert str(caught.value) == f"authentication required for {fake_registry.netloc}/basic"
    assert fake_registry.count("GET", "/manifests/") == 2  # asked once, answered the challenge once
    assert_no_secret([*error_texts(caught.value), caplog.text], every_secret([]))


async def test_token_is_cached_until_it_expires(
    fake_registry: FakeRegistry, token_service: TokenService, autojump_clock: trio.testing.MockClock
) -> None:
    token_service.lifetime = 300
    bearer(fake_registry, token_service)
    fake_registry.add_image("cached", "1", tiny_image({"f": b"f"}))
    reference = parse_reference(f"{fake_registry.netloc}/cached:1")

    async with RegistryClient(credentials=credentials_for(fake_registry)) as client:
        await client.resolve(reference, "linux/amd64")
        await client.resolve(reference, "linux/amd64")
        assert len(token_service.issued) == 1
        await trio.sleep(301)
        await client.resolve(reference, "linux/amd64")

    assert len(token_service.issued) == 2
    assert fake_registry.count("GET", "/manifests/") == 4  # one 401 at first, none after expiry


async def test_identity_token_is_exchanged_with_oauth(nursery: trio.Nursery, fake_registry: FakeRegistry) -> None:
    service = TokenService()
    service.refresh_token = "refresh-Secret-55"
    await nursery.start(service.server.serve)
    bearer(fake_registry, service)
    fake_registry.add_image("oauth", "1", tiny_image({"f": b"f"}))
    credentials = CredentialStore({fake_registry.netloc: Credentials("<token>", "", identity_token="refresh-Secret-55")})

    async with RegistryClient(credentials=credentials) as client:
        await client.resolve(parse_reference(f"{fake_registry.netloc}/oauth:1"), "linux/amd64")

    [request] = service.server.requests
    assert request.method == "POST" and "authorization" not in request.headers
    assert b"scope=repository%3Aoauth%3Apull" in request.body
    assert fake_registry.requests[-1].headers["authorization"] == f"Bearer {service.issued[0]}"
