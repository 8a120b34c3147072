"""HTTP to registries: authentication, redirects, retries and error translation.

``RegistryHttp.open()`` sends one request and yields the final response
(streamed; the caller reads the body).  Along the way it

- attaches the registry's Authorization header only to URLs of the
  registry's own origin, so a redirect to a storage host (S3, a CDN, anything
  else) never carries a credential or token;
- answers a 401 challenge once per request (see ``_auth``);
- follows redirects itself (``follow_redirects`` is off in the client);
- retries 5xx, 429 (honouring ``Retry-After``), timeouts and dropped
  connections with backoff, unless the caller retries whole operations itself;
  a connection that cannot be made is retried only briefly, and not at all
  when the host name does not resolve (see ``_retry``);
- reports every answer and every body chunk, either way, to the stall watch
  of ``_network`` (request bodies go out in small pieces for that).

``status_error()`` turns a final non-success answer into a one-line
``RegistryError`` / ``NotFound``.  No httpx exception leaves this module.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from pybuild.errors import NotFound, PybuildError, RegistryError

from .. import _network
from ._auth import LOGIN_HINT, Authorizer, parse_challenges
from ._endpoint import Endpoint
from ._retry import (
    RETRYABLE_STATUS,
    RetryPolicy,
    TransientError,
    parse_retry_after,
    transport_error,
    with_retries,
)

log = logging.getLogger("pybuild.oci.registry")

_REDIRECTS = {301, 302, 303, 307, 308}
_MAX_REDIRECTS = 5
_MAX_ERROR_BODY = 64 * 1024


def safe_url(url: str) -> str:
    """A URL fit for messages: no query (pre-signed storage URLs carry
    signatures there) and no user info."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


@dataclass(frozen=True)
class RegistryCall:
    """What a request is for, to word its errors: "pull" of ``repository``."""

    endpoint: Endpoint
    repository: str
    action: str  # "pull" or "push"

    @property
    def name(self) -> str:
        return f"{self.endpoint.registry}/{self.repository}"


@dataclass(frozen=True)
class Answer:
    """A registry's complete answer to one request."""

    status: int
    reason: str
    headers: httpx.Headers
    body: bytes
    url: str


def pull_scopes(repository: str) -> tuple[str, ...]:
    return (f"repository:{repository}:pull",)


def push_scopes(repository: str, mount_sources: tuple[str, ...] = ()) -> tuple[str, ...]:
    sources = sorted({f"repository:{s}:pull" for s in mount_sources if s != repository})
    return (f"repository:{repository}:pull,push", *sources)


class RegistryHttp:
    def __init__(self, client: httpx.AsyncClient, authorizer: Authorizer, policy: RetryPolicy) -> None:
        self._client = client
        self._auth = authorizer
        self.policy = policy

    @asynccontextmanager
    async def open(
        self,
        method: str,
        endpoint: Endpoint,
        url: str,
        *,
        scopes: tuple[str, ...],
        headers: Mapping[str, str] | None = None,
        content: bytes | AsyncIterator[bytes] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """One attempt: send a request and yield the final response, body unread.

        A passing failure (5xx, 429, a timeout, a dropped connection, also
        while the caller reads the body) raises TransientError; the caller
        retries the whole operation, which lets downloads resume and uploads
        restart cleanly.
        """
        response = await self._send(method, endpoint, url, scopes, headers or {}, content)
        try:
            if response.status_code in RETRYABLE_STATUS:
                raise TransientError(
                    f"{method} {safe_url(str(response.request.url))} answered {response.status_code} {response.reason_phrase}",
                    retry_after=parse_retry_after(response.headers.get("retry-after")),
                )
            yield response
        except httpx.TransportError as error:
            raise transport_error(f"{method} {safe_url(url)}", error, self.policy.limits) from None
        finally:
            await response.aclose()

    async def fetch(
        self,
        method: str,
        endpoint: Endpoint,
        url: str,
        *,
        scopes: tuple[str, ...],
        what: str,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        max_body: int = _MAX_ERROR_BODY,
        retry: bool = True,
    ) -> Answer:
        """Send a request with a small (or no) body and read the whole answer.

        Retries passing failures unless ``retry`` is False (then they raise
        TransientError).  A body over ``max_body`` bytes is a RegistryError,
        raised as soon as the Content-Length or the bytes so far say so.
        """

        async def attempt(_n: int) -> Answer:
            async with self.open(method, endpoint, url, scopes=scopes, headers=headers, content=content) as response:
                body = await read_limited(response, max_body, f"{what}: the registry")
                return Answer(response.status_code, response.reason_phrase, response.headers, bytes(body), str(response.url))

        if not retry:
            return await attempt(0)
        return await with_retries(self.policy, what, attempt)

    async def _send(
        self,
        method: str,
        endpoint: Endpoint,
        url: str,
        scopes: tuple[str, ...],
        headers: Mapping[str, str],
        content: bytes | AsyncIterator[bytes] | None,
    ) -> httpx.Response:
        answered_challenge = False
        for _hop in range(_MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            sent_auth = None
            if endpoint.serves(url):
                sent_auth = await self._auth.authorization(endpoint, scopes)
                if sent_auth:
                    request_headers["Authorization"] = sent_auth
            if isinstance(content, bytes):
                request_headers["Content-Length"] = str(len(content))  # also when sent in pieces
            request = self._client.build_request(method, url, headers=request_headers, content=_watched_body(content))
            try:
                response = await self._client.send(request, stream=True)
            except httpx.TransportError as error:
                raise transport_error(f"{method} {safe_url(url)}", error, self.policy.limits, url=url) from None
            _network.answered()
            log.debug("%s %s -> %s", method, safe_url(url), response.status_code)
            if response.status_code == 401 and endpoint.serves(url) and not answered_challenge:
                challenge = response.headers.get("www-authenticate")
                try:
                    accepted = await self._auth.accept_challenge(endpoint, challenge, scopes, sent=sent_auth)
                except BaseException:
                    await response.aclose()  # a failed token request must not leak the connection
                    raise
                if accepted:
                    await response.aclose()
                    answered_challenge = True
                    if not isinstance(content, bytes | None):
                        raise TransientError("the registry asked for authentication in the middle of a stream")
                    continue
                return response
            if response.status_code in _REDIRECTS and "location" in response.headers:
                await response.aclose()
                url = urljoin(str(request.url), response.headers["location"])
                if urlsplit(url).scheme not in ("http", "https"):
                    raise RegistryError(f"{endpoint.registry} redirected to an unsupported URL", hint="tell the registry's operator")
                if response.status_code == 303:
                    method, content = "GET", None
                elif not isinstance(content, bytes | None):
                    raise TransientError("the registry redirected a streamed upload")
                continue
            return response
        raise RegistryError(
            f"{endpoint.registry} redirected {method} {safe_url(url)} too many times",
            hint="the registry is misconfigured; tell its operator",
        )


def _watched_body(content: bytes | AsyncIterator[bytes] | None) -> bytes | AsyncIterator[bytes] | None:
    """The body as httpx should send it: small pieces the stall watch counts.

    A bytes body is sent afresh on every hop (a redirect, a 401), so it is
    wrapped anew each time; its Content-Length is set by the caller.
    """
    if content is None or (isinstance(content, bytes) and len(content) <= _network.UPLOAD_PIECE):
        return content
    if isinstance(content, bytes):
        return _network.upload_pieces(content)
    return _network.counted_upload(content)


async def read_limited(response: httpx.Response, limit: int, who: str) -> bytes:
    """A response body of at most ``limit`` bytes, counted as progress; more
    is a RegistryError naming ``who`` ("GET manifest x: the registry")."""
    body = await _network.read_at_most(response, limit)
    if body is None:
        raise _too_big(who, limit)
    return body


def _too_big(who: str, limit: int) -> RegistryError:
    return RegistryError(
        f"{who} sent more than {limit} bytes, the most pybuild accepts",
        hint="the registry is misbehaving, or this is not an image registry",
    )


def _registry_errors(body: bytes) -> list[tuple[str, str]]:
    """The (code, message) pairs of a registry's JSON error body."""
    try:
        document = json.loads(body)
        errors = document.get("errors") or []
        return [(str(e.get("code", "")), str(e.get("message", ""))) for e in errors if isinstance(e, dict)]
    except (ValueError, AttributeError, TypeError):
        return []


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def read_error_body(response: httpx.Response) -> Answer:
    """The answer of a streamed response, reading at most a small error body."""
    body = b""
    try:
        async for chunk in response.aiter_bytes():
            _network.progress(len(chunk))
            body += chunk
            if len(body) > _MAX_ERROR_BODY:
                break
    except (httpx.HTTPError, httpx.StreamError):
        pass
    return Answer(response.status_code, response.reason_phrase, response.headers, body[:_MAX_ERROR_BODY], str(response.url))


def status_error(answer: Answer, call: RegistryCall, *, subject: str, kind: str) -> PybuildError:
    """The user-facing error for a final non-success answer.

    ``kind`` is "manifest", "blob" or "upload"; ``subject`` names what was
    asked for ("docker.io/library/busybox:latest", "blob sha256:…").
    """
    status = answer.status
    errors = _registry_errors(answer.body)
    codes = {code for code, _ in errors}
    detail = "; ".join(_one_line(m) for _, m in errors if m)
    if status == 401:
        challenges = parse_challenges(answer.headers.get("www-authenticate") or "")
        if any(c.get("error") == "insufficient_scope" for c in challenges):
            return RegistryError(
                f"access denied to {call.name}: the token does not allow {call.action}",
                hint=f"check that your account may {call.action} this repository; {LOGIN_HINT} {call.endpoint.registry}",
            )
        return RegistryError(
            f"authentication required for {call.name}",
            hint=f"{LOGIN_HINT} {call.endpoint.registry} (a repository that does not exist can also answer this)",
        )
    if status == 403 or "DENIED" in codes:
        return RegistryError(
            f"access denied to {call.name}" + (f": {detail}" if detail else ""),
            hint=f"check that your account may {call.action} this repository",
        )
    if status == 404:
        if "NAME_UNKNOWN" in codes:
            return NotFound(f"repository not found: {call.name}", hint="check the image name")
        if kind == "manifest":
            return NotFound(f"manifest unknown: {subject}", hint="check the tag or digest; the image may not exist")
        if kind == "blob":
            return RegistryError(
                f"{subject} is unknown to {call.name}",
                hint="the image refers to a blob the registry does not have; push it again",
            )
    if status == 429:
        return RegistryError(
            f"too many requests to {call.endpoint.registry} (rate limited)",
            hint=f"wait and try again; logged-in users often get a higher limit ({LOGIN_HINT} {call.endpoint.registry})",
        )
    message = f"{call.endpoint.registry} answered {status} {answer.reason} for {subject}"
    if detail:
        message += f": {detail}"
    elif codes:
        message += f": {', '.join(sorted(codes))}"
    return RegistryError(message, hint="if it persists, tell the registry's operator")
