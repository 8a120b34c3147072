"""Registry credentials and authentication: Basic and Docker's Bearer tokens.

Credentials come from Docker's ``config.json`` (``$DOCKER_CONFIG/config.json``
or ``~/.docker/config.json``): inline ``auths`` entries, ``credHelpers`` and
``credsStore`` (the ``docker-credential-*`` programs).

On a 401 answer the registry says how to authenticate in ``WWW-Authenticate``:

- ``Basic``: the user's credentials go to that registry host, and only there.
- ``Bearer realm=...,service=...,scope=...``: pybuild asks the realm (the
  token service) for a token for the repository scopes it needs, sending the
  user's credentials to the realm if it has any, and then sends the token to
  the registry host it was issued for, and nowhere else.  Tokens are cached
  per (registry origin, scopes) until they expire.

Secrets never reach a log, an error message or a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio

from pybuild.errors import RegistryError

from .. import _network
from ._endpoint import DOCKER_HUB, Endpoint, allows_plain_http, split_host_port
from ._retry import (
    RETRYABLE_STATUS,
    RetryPolicy,
    TransientError,
    parse_retry_after,
    transport_error,
    with_retries,
)

log = logging.getLogger("pybuild.oci.registry")

LOGIN_HINT = "pybuild uses ~/.docker/config.json; run docker login"
_DOCKER_HUB_KEYS = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_DOCKER_HUB_SERVER_URL = "https://index.docker.io/v1/"
_DEFAULT_TOKEN_LIFETIME = 60.0
_MAX_TOKEN_ANSWER = 1024 * 1024  # a token is a few KiB; more is a broken or hostile service


@dataclass(frozen=True)
class Credentials:
    """A user name with a password, or an identity (refresh) token.

    The secrets are left out of ``repr`` (and so of ``str``), so printing or
    logging a Credentials shows only the user name.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def normalize_registry_key(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``docker.io``; ``http://h:5000/v2/`` -> ``h:5000``."""
    key = key.strip()
    if "://" in key:
        key = urlsplit(key).netloc or key
    key = key.split("/", 1)[0].lower()
    return DOCKER_HUB if key in _DOCKER_HUB_KEYS else key


def _decode_auth(value: str) -> tuple[str, str] | None:
    try:
        text = base64.b64decode(value.strip(), validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, sep, password = text.partition(":")
    return (username, password) if sep else None


class CredentialStore:
    """Credentials per registry, as ``docker login`` stores them."""

    def __init__(
        self,
        auths: Mapping[str, Credentials] | None = None,
        *,
        helpers: Mapping[str, str] | None = None,
        default_helper: str | None = None,
    ) -> None:
        self._auths = {normalize_registry_key(k): v for k, v in (auths or {}).items()}
        self._helpers = {normalize_registry_key(k): v for k, v in (helpers or {}).items()}
        self._default_helper = default_helper or None
        self._from_helpers: dict[str, Credentials | None] = {}

    def __repr__(self) -> str:
        return f"CredentialStore(registries={sorted(self._auths)!r}, helpers={sorted(self._helpers)!r})"

    @classmethod
    def from_docker_config(cls, path: Path | None = None) -> CredentialStore:
        """Read Docker's config.json; a missing file means no credentials.

        ``path`` is the file or the directory holding it; by default
        ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``.
        """
        if path is None:
            directory = os.environ.get("DOCKER_CONFIG")
            path = Path(directory) if directory else Path.home() / ".docker"
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError) as error:
            raise RegistryError(
                f"cannot read {path}: {getattr(error, 'strerror', None) or type(error).__name__}",
                hint="fix its permissions, or point DOCKER_CONFIG at another directory",
            ) from None
        except json.JSONDecodeError as error:
            # The decoder's message names a position only, never the content.
            raise RegistryError(
                f"cannot read {path}: not valid JSON ({error.msg} at line {error.lineno})",
                hint="fix the file or run docker login again",
            ) from None
        if not isinstance(document, dict):
            raise RegistryError(f"cannot read {path}: expected a JSON object", hint="fix the file or run docker login again")
        auths: dict[str, Credentials] = {}
        for key, entry in (document.get("auths") or {}).items():
            credentials = _credentials_from_entry(entry)
            if credentials is not None:
                auths[key] = credentials
            elif isinstance(entry, dict) and entry.get("auth"):
                log.warning("ignoring the malformed 'auth' entry for %s in %s", normalize_registry_key(key), path)
        helpers = {k: v for k, v in (document.get("credHelpers") or {}).items() if isinstance(v, str) and v}
        store = document.get("credsStore")
        return cls(auths, helpers=helpers, default_helper=store if isinstance(store, str) else None)

    def get(self, registry_host: str) -> Credentials | None:
        """Credentials for a registry (``docker.io``, ``host:port``), or None."""
        key = normalize_registry_key(registry_host)
        if key in self._helpers:
            return self._from_helper(self._helpers[key], key)
        if key in self._auths:
            return self._auths[key]
        if self._default_helper:
            return self._from_helper(self._default_helper, key)
        return None

    def _from_helper(self, helper: str, key: str) -> Credentials | None:
        if key not in self._from_helpers:
            self._from_helpers[key] = _run_credential_helper(helper, key)
        return self._from_helpers[key]


def _credentials_from_entry(entry: object) -> Credentials | None:
    if not isinstance(entry, dict):
        return None
    identity_token = entry.get("identitytoken") or None
    username, password = entry.get("username") or "", entry.get("password") or ""
    if entry.get("auth"):
        decoded = _decode_auth(str(entry["auth"]))
        if decoded is None:
            return None
        username, password = decoded
    if not (username or password or identity_token):
        return None
    return Credentials(username, password, identity_token)


def _run_credential_helper(helper: str, key: str) -> Credentials | None:
    """Ask ``docker-credential-<helper> get``; None if it has nothing or fails."""
    program = f"docker-credential-{helper}"
    server = _DOCKER_HUB_SERVER_URL if key == DOCKER_HUB else key
    try:
        done = subprocess.run([program, "get"], input=server.encode(), capture_output=True, timeout=30, check=False)
    except FileNotFoundError:
        log.warning("credential helper %s is not installed; pulling %s anonymously", program, key)
        return None
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("credential helper %s failed for %s (%s)", program, key, type(error).__name__)
        return None
    if done.returncode != 0:
        # Its output is not logged: a helper could echo a secret into it.
        log.debug("credential helper %s has no credentials for %s", program, key)
        return None
    try:
        answer = json.loads(done.stdout)
        username, secret = str(answer.get("Username") or ""), str(answer.get("Secret") or "")
    except (ValueError, AttributeError):
        log.warning("credential helper %s gave an answer pybuild cannot read", program)
        return None
    if not secret:
        return None
    if username == "<token>":
        return Credentials(identity_token=secret)
    return Credentials(username, secret)


# --- challenges ---------------------------------------------------------------

_PARAM = re.compile(r'\s*([A-Za-z][\w.-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


@dataclass(frozen=True)
class Challenge:
    """One ``WWW-Authenticate`` challenge: a scheme and its parameters."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        return dict(self.params).get(name)


def parse_challenges(header: str) -> list[Challenge]:
    """``Bearer realm="...",service="..."`` (possibly several) -> Challenges."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        match = re.match(r"\s*,?\s*([A-Za-z][\w-]*)", rest)
        if not match:
            break
        scheme = match.group(1).lower()
        rest = rest[match.end() :]
        params: list[tuple[str, str]] = []
        while True:
            param = _PARAM.match(rest)
            if not param:
                break
            value = param.group(2) if param.group(2) is not None else param.group(3)
            params.append((param.group(1).lower(), re.sub(r"\\(.)", r"\1", value)))
            rest = rest[param.end() :]
        challenges.append(Challenge(scheme, tuple(params)))
    return challenges


# --- the authorizer -----------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    value: str
    expires_at: float


class Authorizer:
    """Knows how each registry wants to be authenticated, and holds its tokens.

    ``authorization()`` gives the header for a request to a registry origin;
    ``accept_challenge()`` learns from a 401 answer and fetches a token.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        credentials: CredentialStore | None,
        policy: RetryPolicy,
        insecure_registries: tuple[str, ...] = (),
    ) -> None:
        self._client = client
        self._credentials = credentials
        self._policy = policy
        self._insecure = insecure_registries
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, tuple[str, ...]], _Token] = {}
        self._locks: dict[tuple[str, tuple[str, ...]], trio.Lock] = {}
        self._known_credentials: dict[str, Credentials | None] = {}

    async def _credentials_for(self, endpoint: Endpoint) -> Credentials | None:
        if self._credentials is None:
            return None
        if endpoint.registry not in self._known_credentials:
            # A credential helper is a subprocess: keep it off the event loop,
            # and off the network's clocks.
            with _network.local_work():
                found = await trio.to_thread.run_sync(self._credentials.get, endpoint.registry)
            self._known_credentials[endpoint.registry] = found
        return self._known_credentials[endpoint.registry]

    async def authorization(self, endpoint: Endpoint, scopes: tuple[str, ...]) -> str | None:
        """The Authorization header for a request to ``endpoint``, if it wants one."""
        challenge = self._challenges.get(endpoint.origin)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            credentials = await self._credentials_for(endpoint)
            return credentials.basic_header() if credentials and not credentials.identity_token else None
        token = await self._token(endpoint, challenge, scopes)
        return f"Bearer {token}"

    async def accept_challenge(
        self, endpoint: Endpoint, header: str | None, scopes: tuple[str, ...], *, sent: str | None
    ) -> bool:
        """Learn from a 401 answer; True if the request should be sent again.

        ``sent`` is the Authorization header the refused request carried.
        """
        challenges = parse_challenges(header or "")
        chosen = next((c for c in challenges if c.scheme == "bearer"), None) or next(
            (c for c in challenges if c.scheme == "basic"), None
        )
        if chosen is None:
            return False
        if chosen.scheme == "basic":
            credentials = await self._credentials_for(endpoint)
            if credentials is None or credentials.identity_token or sent is not None:
                return False
            self._challenges[endpoint.origin] = chosen
            return True
        if chosen.get("error") == "insufficient_scope" and sent is not None:
            return False
        self._challenges[endpoint.origin] = chosen
        key = (endpoint.origin, scopes)
        cached = self._tokens.get(key)
        if cached is not None and sent == f"Bearer {cached.value}":
            # The registry refused a token it issued (expired or revoked early).
            # A different cached token means another request renewed it: reuse that.
            del self._tokens[key]
        await self._token(endpoint, chosen, scopes)
        return True

    async def _token(self, endpoint: Endpoint, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        key = (endpoint.origin, scopes)
        lock = self._locks.setdefault(key, trio.Lock())
        async with lock:  # concurrent requests for one scope share one token request
            token = self._tokens.get(key)
            if token is not None and token.expires_at > trio.current_time():
                return token.value
            token = await self._fetch_token(endpoint, challenge, scopes)
            self._tokens[key] = token
            return token.value

    async def _fetch_token(self, endpoint: Endpoint, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = challenge.get("realm") or ""
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(
                f"{endpoint.registry} asked for a token from an invalid realm",
                hint="the registry's auth configuration is broken; tell its operator",
            )
        realm_host = parts.netloc.rpartition("@")[2]
        credentials = await self._credentials_for(endpoint)
        if (
            credentials is not None
            and parts.scheme == "http"
            and not allows_plain_http(realm_host, self._insecure)
        ):
            raise RegistryError(
                f"refusing to send the credentials for {endpoint.registry} to {realm_host} over plain HTTP",
                hint=f"the token service must use https, or add --insecure-registry {split_host_port(realm_host)[0]}",
            )
        service = challenge.get("service")
        scope = challenge.get("scope")
        scope_list = list(scopes) or ([scope] if scope else [])

        async def attempt(_n: int) -> httpx.Response:
            if credentials is not None and credentials.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token, "client_id": "pybuild"}
                if service:
                    form["service"] = service
                if scope_list:
                    form["scope"] = " ".join(scope_list)
                request = self._client.build_request("POST", realm, data=form)
            else:
                params: list[tuple[str, str]] = [("service", service)] if service else []
                params += [("scope", s) for s in scope_list]
                headers = {"Authorization": credentials.basic_header()} if credentials else {}
                request = self._client.build_request("GET", realm, params=tuple(params), headers=headers)
            try:
                response = await self._client.send(request, stream=True)
                try:
                    _network.answered()
                    if response.status_code in RETRYABLE_STATUS:
                        raise TransientError(
                            f"the token service answered {response.status_code}",
                            retry_after=parse_retry_after(response.headers.get("retry-after")),
                        )
                    body = await _network.read_at_most(response, _MAX_TOKEN_ANSWER)
                    if body is None:
                        raise RegistryError(
                            f"the token service {realm_host} sent more than {_MAX_TOKEN_ANSWER} bytes, the most pybuild accepts",
                            hint="the registry's auth configuration is broken; tell its operator",
                        )
                finally:
                    await response.aclose()
            except httpx.TransportError as error:
                raise transport_error("", error, self._policy.limits, url=realm) from None
            return httpx.Response(response.status_code, content=body)  # decoded already: no Content-Encoding

        response = await with_retries(self._policy, f"getting a token for {endpoint.registry} from {realm_host}", attempt)
        where = f"{endpoint.registry}"
        if response.status_code in (401, 403):
            if credentials is None:
                raise RegistryError(f"authentication required for {where}", hint=f"{LOGIN_HINT} {endpoint.registry}")
            raise RegistryError(
                f"authentication failed for {where}: {realm_host} rejected the credentials",
                hint=f"{LOGIN_HINT} {endpoint.registry}",
            )
        if response.status_code != 200:
            raise RegistryError(
                f"the token service {realm_host} for {where} answered {response.status_code} {response.reason_phrase}",
                hint="try again later; if it persists, tell the registry's operator",
            )
        try:
            answer = response.json()
            value = answer.get("token") or answer.get("access_token")
            lifetime = float(answer.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            value, lifetime = None, 0.0
        if not isinstance(value, str) or not value:
            raise RegistryError(
                f"the token service {realm_host} for {where} sent no token",
                hint="the registry's auth configuration is broken; tell its operator",
            )
        # Renew a little early so a token does not expire between check and use.
        lifetime = max(lifetime, _DEFAULT_TOKEN_LIFETIME)
        return _Token(value, trio.current_time() + lifetime * 0.9)

