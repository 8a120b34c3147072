"""Test helpers for the registry client.

- ``HttpServer``: a small HTTP/1.1 server on trio sockets (127.0.0.x, a free
  port) that records every request and can cut a response body short.
- ``FakeRegistry``: the distribution API in memory (manifests, blobs, Range,
  monolithic and chunked uploads, cross-repository mounts) with injectable
  faults, Basic or Bearer auth, and blob redirects to another host.
- ``TokenService``, ``BlobHost``: a Bearer realm and a storage host.
- ``DictStore``: a content store in a dict that verifies like the real one.
- ``tiny_image()``: a one-layer OCI image built by hand.

Everything runs inside the test's trio run, so trio's MockClock drives it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import itertools
import json
import re
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import trio

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- HTTP server --------------------------------------------------------------


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    body: bytes
    server: str
    time: float  # trio.current_time(): the MockClock's time under one

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    send_only: int | None = None  # send this many body bytes, then drop the connection
    drop: bool = False  # close the connection without answering


Handler = Callable[[Request], Response]


class HttpServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1") -> None:
        self.handler = handler
        self.host = host
        self.port = 0
        self.requests: list[Request] = []

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:  # type: ignore[no-untyped-def]
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        reader = _Reader(stream)
        try:
            while True:
                head = await reader.until(b"\r\n\r\n")
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if "content-length" in headers:
                    body = await reader.exactly(int(headers["content-length"]))
                elif headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await reader.chunked()
                else:
                    body = b""
                parts = urlsplit(target)
                request = Request(
                    method, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, body, self.netloc, trio.current_time()
                )
                self.requests.append(request)
                response = self.handler(request)
                if response.drop:
                    await stream.aclose()
                    return
                await self._send(stream, method, response)
                if response.send_only is not None:
                    await stream.aclose()
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
            return

    async def _send(self, stream: trio.SocketStream, method: str, response: Response) -> None:
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        head = f"HTTP/1.1 {response.status} {HTTPStatus(response.status).phrase}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        body = b"" if method == "HEAD" else response.body
        if response.send_only is not None:
            body = body[: response.send_only]
        await stream.send_all(head.encode("latin-1") + body)


class _Reader:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def _more(self) -> bool:
        data = await self._stream.receive_some(65536)
        self._buffer += data
        return bool(data)

    async def until(self, marker: bytes) -> bytes | None:
        while marker not in self._buffer:
            if not await self._more():
                return None
        head, _, rest = bytes(self._buffer).partition(marker)
        self._buffer = bytearray(rest)
        return head

    async def exactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if not await self._more():
                raise EOFError
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    async def chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = await self.until(b"\r\n")
            if line is None:
                raise EOFError
            size = int(line.split(b";")[0], 16)
            if size == 0:
                await self.until(b"\r\n")
                return bytes(body)
            body += await self.exactly(size)
            await self.exactly(2)


# --- faults -------------------------------------------------------------------


@dataclass
class Fault:
    """Replaces (``respond``) or alters (``alter``) the answer to matching requests.

    ``times`` counts how many requests it affects; None means every one.
    """

    match: Callable[[Request], bool]
    respond: Callable[[Request], Response] | None = None
    alter: Callable[[Request, Response], Response] | None = None
    times: int | None = 1
    hits: int = 0

    def active(self, request: Request) -> bool:
        return (self.times is None or self.hits < self.times) and self.match(request)


def on(method: str, pattern: str) -> Callable[[Request], bool]:
    regex = re.compile(pattern)
    return lambda request: request.method == method and regex.search(request.path) is not None


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"errors": [{"code": code, "message": message}]}).encode()


def _error(status: int, code: str, message: str) -> Response:
    return Response(status, {"Content-Type": "application/json"}, error_body(code, message))


# --- auth ---------------------------------------------------------------------


class BasicAuth:
    def __init__(self, username: str, password: str) -> None:
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    def check(self, request: Request) -> Response | None:
        if request.headers.get("authorization") == self.expected:
            return None
        return Response(401, {"WWW-Authenticate": 'Basic realm="fake registry"'}, error_body("UNAUTHORIZED", "authentication required"))


class BearerAuth:
    """Accepts ``Bearer <token>`` issued by a TokenService for this registry."""

    def __init__(self, realm: str, service: str, tokens: set[str]) -> None:
        self.realm = realm
        self.service = service
        self.tokens = tokens

    def check(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        if header.startswith("Bearer ") and header[7:] in self.tokens:
            return None
        match = re.match(r"^/v2/(.+?)/(?:manifests|blobs|tags)/", request.path)
        action = "pull" if request.method in ("GET", "HEAD") else "pull,push"
        scope = f',scope="repository:{match.group(1)}:{action}"' if match else ""
        challenge = f'Bearer realm="{self.realm}",service="{self.service}"{scope}'
        return Response(401, {"WWW-Authenticate": challenge}, error_body("UNAUTHORIZED", "authentication required"))


class TokenService:
    """A Bearer realm: hands out fresh tokens, to anyone or to one user."""

    def __init__(self, host: str = "127.0.0.2", username: str | None = None, password: str | None = None) -> None:
        self.server = HttpServer(self.handle, host)
        self.basic = BasicAuth(username, password or "") if username is not None else None
        self.issued: list[str] = []
        self.lifetime = 300
        self.refresh_token: str | None = None
        self._counter = itertools.count(1)

    @property
    def realm(self) -> str:
        return f"{self.server.url}/token"

    def handle(self, request: Request) -> Response:
        if request.path != "/token":
            return _error(404, "NOT_FOUND", "no such path")
        if request.method == "POST":  # OAuth2 with an identity (refresh) token
            form = parse_qs(request.body.decode())
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [self.refresh_token]:
                return _error(401, "UNAUTHORIZED", "bad refresh token")
            token = f"token-{next(self._counter)}-for-{form['service'][0]}"
            self.issued.append(token)
            return Response(200, {"Content-Type": "application/json"}, json.dumps({"access_token": token}).encode())
        if self.basic is not None and self.basic.check(request) is not None:
            return _error(401, "UNAUTHORIZED", "bad credentials")
        token = f"token-{next(self._counter)}-for-{request.param('service')}"
        self.issued.append(token)
        return Response(200, {"Content-Type": "application/json"}, json.dumps({"token": token, "expires_in": self.lifetime}).encode())


# --- the fake registry --------------------------------------------------------

_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>sha256:[a-f0-9]{64})$")
_UPLOADS = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]*)$")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")


class FakeRegistry:
    """The distribution API in memory, with faults.  ``requests`` records all."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.server = HttpServer(self.handle, host)
        self.blobs: dict[str, bytes] = {}
        self.repo_blobs: dict[str, set[str]] = {}
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.uploads: dict[str, tuple[str, bytearray]] = {}
        self.faults: list[Fault] = []
        self.auth: BasicAuth | BearerAuth | None = None
        self.blob_redirect: str | None = None  # base URL blob GETs are redirected to
        self._ids = itertools.count(1)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    @property
    def netloc(self) -> str:
        return self.server.netloc

    def count(self, method: str, pattern: str = "") -> int:
        return sum(1 for r in self.requests if r.method == method and re.search(pattern, r.path))

    def add_blob(self, repository: str, data: bytes, *, digest: str | None = None) -> str:
        """Store a blob; ``digest`` lets a test store bytes under a wrong digest."""
        digest = digest or sha256(data)
        self.blobs[digest] = data
        self.repo_blobs.setdefault(repository, set()).add(digest)
        return digest

    def add_manifest(self, repository: str, tag: str | None, data: bytes, media_type: str = OCI_MANIFEST) -> str:
        digest = sha256(data)
        self.repo_blobs.setdefault(repository, set())
        self.manifests[(repository, digest)] = (media_type, data)
        if tag:
            self.manifests[(repository, tag)] = (media_type, data)
        return digest

    def add_image(self, repository: str, tag: str, image: TinyImage) -> str:
        for blob in image.blobs.values():
            self.add_blob(repository, blob)
        return self.add_manifest(repository, tag, image.manifest)

    def handle(self, request: Request) -> Response:
        for fault in self.faults:
            if fault.respond is not None and fault.active(request):
                fault.hits += 1
                return fault.respond(request)
        if self.auth is not None and request.path.startswith("/v2/"):
            refusal = self.auth.check(request)
            if refusal is not None:
                return refusal
        response = self._route(request)
        for fault in self.faults:
            if fault.alter is not None and fault.active(request):
                fault.hits += 1
                response = fault.alter(request, response)
        return response

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if path == "/v2/":
            return Response(200, {"Content-Type": "application/json"}, b"{}")
        if m := _UPLOADS.match(path):
            return self._upload(request, m["name"], m["id"])
        if m := _BLOB.match(path):
            return self._blob(request, m["name"], m["digest"])
        if m := _MANIFEST.match(path):
            if method in ("GET", "HEAD"):
                return self._get_manifest(m["name"], m["ref"])
            if method == "PUT":
                return self._put_manifest(request, m["name"], m["ref"])
        return _error(404, "NOT_FOUND", "no route")

    def _blob(self, request: Request, name: str, digest: str) -> Response:
        if request.method not in ("GET", "HEAD"):
            return _error(405, "UNSUPPORTED", "method not allowed")
        if digest not in self.repo_blobs.get(name, set()):
            return _error(404, "BLOB_UNKNOWN", "blob unknown to registry")
        if request.method == "GET" and self.blob_redirect:
            return Response(307, {"Location": f"{self.blob_redirect}/blobs/{digest}?X-Signature=abc"})
        return serve_bytes(request, self.blobs[digest], digest)

    def _get_manifest(self, name: str, ref: str) -> Response:
        if name not in self.repo_blobs:
            return _error(404, "NAME_UNKNOWN", "repository name not known to registry")
        found = self.manifests.get((name, ref))
        if found is None:
            return _error(404, "MANIFEST_UNKNOWN", "manifest unknown")
        media_type, data = found
        return Response(200, {"Content-Type": media_type, "Docker-Content-Digest": sha256(data)}, data)

    def _put_manifest(self, request: Request, name: str, ref: str) -> Response:
        document = json.loads(request.body)
        wanted = [document["config"], *document["layers"]] if "config" in document else document.get("manifests", [])
        have = self.repo_blobs.get(name, set())
        for descriptor in wanted:
            if descriptor["digest"] not in have and (name, descriptor["digest"]) not in self.manifests:
                return _error(400, "MANIFEST_BLOB_UNKNOWN", f"blob unknown: {descriptor['digest']}")
        media_type = request.headers.get("content-type", OCI_MANIFEST)
        digest = self.add_manifest(name, None if ref.startswith("sha256:") else ref, request.body, media_type)
        return Response(201, {"Docker-Content-Digest": digest, "Location": f"/v2/{name}/manifests/{digest}"})

    def _upload(self, request: Request, name: str, upload_id: str) -> Response:
        if request.method == "POST" and not upload_id:
            mount, source = request.param("mount"), request.param("from")
            if mount and source and mount in self.repo_blobs.get(source, set()):
                self.repo_blobs.setdefault(name, set()).add(mount)
                return Response(201, {"Docker-Content-Digest": mount, "Location": f"/v2/{name}/blobs/{mount}"})
            new_id = f"upload-{next(self._ids)}"
            self.uploads[new_id] = (name, bytearray())
            return Response(202, {"Location": f"/v2/{name}/blobs/uploads/{new_id}?_state=opaque", "Range": "0-0"})
        session = self.uploads.get(upload_id)
        if session is None or session[0] != name or request.param("_state") != "opaque":
            return _error(404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown")
        data = session[1]
        if request.method == "PATCH":
            start, _, _end = request.headers.get("content-range", f"{len(data)}-").partition("-")
            if int(start) != len(data):
                return _error(416, "BLOB_UPLOAD_INVALID", "out of order chunk")
            data += request.body
            return Response(202, {"Location": f"/v2/{name}/blobs/uploads/{upload_id}?_state=opaque", "Range": f"0-{len(data) - 1}"})
        if request.method == "PUT":
            data += request.body
            digest = request.param("digest")
            if digest != sha256(bytes(data)):
                return _error(400, "DIGEST_INVALID", "provided digest did not match uploaded content")
            del self.uploads[upload_id]
            self.add_blob(name, bytes(data))
            return Response(201, {"Docker-Content-Digest": digest, "Location": f"/v2/{name}/blobs/{digest}"})
        return _error(405, "UNSUPPORTED", "method not allowed")


def serve_bytes(request: Request, data: bytes, digest: str) -> Response:
    """200 with the bytes, or 206 for ``Range: bytes=N-``."""
    headers = {"Content-Type": "application/octet-stream", "Docker-Content-Digest": digest}
    match = re.match(r"^bytes=(\d+)-$", request.headers.get("range", ""))
    if match and int(match[1]) < len(data):
        start = int(match[1])
        headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Response(206, headers, data[start:])
    return Response(200, headers, data)


class BlobHost:
    """A storage host that registry redirects send blob downloads to."""

    def __init__(self, registry: FakeRegistry, host: str = "127.0.0.3") -> None:
        self.registry = registry
        self.server = HttpServer(self.handle, host)

    def handle(self, request: Request) -> Response:
        digest = request.path.rpartition("/")[2]
        data = self.registry.blobs.get(digest)
        if data is None:
            return _error(404, "BLOB_UNKNOWN", "no such blob")
        return serve_bytes(request, data, digest)


# --- a content store ----------------------------------------------------------


class StoreCorrupt(Exception):
    pass


class _DictWriter:
    def __init__(self, store: DictStore, expected_digest: str | None, expected_size: int | None) -> None:
        self.store, self.expected_digest, self.expected_size = store, expected_digest, expected_size
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def written_digest(self) -> str:
        return sha256(bytes(self.buffer))

    def commit(self) -> str:
        data = bytes(self.buffer)
        digest = sha256(data)
        if (self.expected_digest and digest != self.expected_digest) or (
            self.expected_size is not None and len(data) != self.expected_size
        ):
            raise StoreCorrupt(f"commit of {digest} ({len(data)} bytes) expected {self.expected_digest}")
        with self.store.lock:
            self.store.blobs[digest] = data
            self.store.commits.append(digest)
        return digest

    def __enter__(self) -> _DictWriter:
        self.store.open_writers += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.store.open_writers -= 1


class DictStore:
    """A ContentStore in a dict; commit verifies digest and size like the real one."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.commits: list[str] = []
        self.open_writers = 0
        self.lock = threading.Lock()

    def has(self, digest: str) -> bool:
        return digest in self.blobs

    def size(self, digest: str) -> int | None:
        data = self.blobs.get(digest)
        return None if data is None else len(data)

    def open(self, digest: str, *, verify: bool = False) -> io.BytesIO:
        return io.BytesIO(self.blobs[digest])

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> _DictWriter:
        return _DictWriter(self, expected_digest, expected_size)

    def put(self, data: bytes) -> str:
        with self.writer() as writer:
            writer.write(data)
            return writer.commit()


# --- images -------------------------------------------------------------------


@dataclass(frozen=True)
class TinyImage:
    manifest: bytes
    config: bytes
    layers: tuple[bytes, ...]
    media_types: dict[str, str]  # digest -> media type

    @property
    def digest(self) -> str:
        return sha256(self.manifest)

    @property
    def blobs(self) -> dict[str, bytes]:
        return {sha256(b): b for b in (self.config, *self.layers)}

    def descriptors(self) -> list[tuple[str, int, str]]:
        return [(d, len(b), self.media_types[d]) for d, b in self.blobs.items()]

    def store_into(self, store: DictStore) -> None:
        for blob in self.blobs.values():
            store.put(blob)


def layer_tar_gz(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip tar layer of regular files; returns (blob, diff_id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    return gzip.compress(tar_bytes, mtime=0), sha256(tar_bytes)


def tiny_image(*layer_files: dict[str, bytes], architecture: str = "amd64", label: str = "") -> TinyImage:
    """An OCI image with one gzip layer per dict of files."""
    layers, diff_ids = zip(*(layer_tar_gz(files) for files in layer_files), strict=True) if layer_files else ((), ())
    config = json.dumps(
        {
            "architecture": architecture,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Labels": {"test": label} if label else {}},
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
            "history": [{"created_by": "pybuild test"} for _ in layers],
        },
        sort_keys=True,
    ).encode()
    media_types = {sha256(config): OCI_CONFIG, **{sha256(layer): OCI_LAYER_GZIP for layer in layers}}
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": sha256(layer), "size": len(layer)} for layer in layers],
        },
        sort_keys=True,
    ).encode()
    return TinyImage(manifest, config, tuple(layers), media_types)


def image_index(*entries: tuple[TinyImage, str, str]) -> bytes:
    """An OCI index of (image, architecture, variant) entries for linux."""
    manifests = []
    for image, architecture, variant in entries:
        platform = {"os": "linux", "architecture": architecture}
        if variant:
            platform["variant"] = variant
        manifests.append({"mediaType": OCI_MANIFEST, "digest": image.digest, "size": len(image.manifest), "platform": platform})
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, sort_keys=True).encode()
