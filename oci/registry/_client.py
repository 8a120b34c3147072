"""The registry client: resolve, pull and push images over the OCI
distribution API (``/v2/``), on trio with one connection pool per build.

Every byte that reaches the content store has been checked: a blob is hashed
while it streams into a store writer and committed only if its digest and
size match the descriptor; a manifest is checked against the digest that
named it (or the one the registry announced).  A failed or corrupt transfer
leaves nothing behind.  Downloads resume with ``Range`` after a dropped
connection; uploads restart from a fresh upload session.

Layers are shared: a blob already in the store is not fetched again, and
concurrent pulls of one blob through one client wait for a single download.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import hashlib
import json
import logging
import re
from contextlib import aclosing
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import BinaryIO, Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import trio

from pybuild._version import __version__
from pybuild.errors import CorruptContent, ImageError, NotFound, PybuildError, RegistryError

from .. import _network
from .._network import NetworkLimits, default_limits
from .._platforms import normalize_arch
from .._reference import Reference
from ._auth import Authorizer, CredentialStore
from ._endpoint import Endpoint, endpoint_for
from ._manifest import (
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    LayerDescriptor,
    ResolvedManifest,
    check_digest,
    check_entry_type,
    media_type_of,
    parse_manifest,
    parse_platform,
    select_platform,
    sha256_digest,
)
from ._retry import RetryPolicy, TransientError, with_retries
from ._transport import (
    Answer,
    RegistryCall,
    RegistryHttp,
    pull_scopes,
    push_scopes,
    read_error_body,
    status_error,
)

log = logging.getLogger("pybuild.oci.registry")

MiB = 1024 * 1024
_READ_SIZE = MiB
_MAX_INDEX_DEPTH = 2
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class BlobWriter(Protocol):
    """What the client needs of a content store's writer (see ``pybuild.cache``)."""

    def write(self, data: bytes) -> int: ...

    def written_digest(self) -> str:
        """The digest of the bytes written so far (the writer hashes them anyway)."""
        ...

    def commit(self) -> str: ...

    def __enter__(self) -> BlobWriter: ...

    def __exit__(self, *exc: object) -> None: ...


class BlobStore(Protocol):
    """What the client needs of a content store (a subset of ``ContentStore``)."""

    def has(self, digest: str) -> bool: ...

    def size(self, digest: str) -> int | None: ...

    def open(self, digest: str, *, verify: bool = False) -> BinaryIO: ...

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> BlobWriter: ...


class BlobLike(Protocol):
    """A descriptor: ``LayerDescriptor`` or the image formats' descriptor."""

    @property
    def digest(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class BlobProgress:
    """How far one blob's download is: ``done`` of ``size`` bytes.

    ``cached`` is True when the store already had the blob.
    """

    digest: str
    size: int
    done: int
    cached: bool = False


ProgressCallback = Callable[[BlobProgress], None]


class BlobOutcome(enum.Enum):
    """What a push did with one blob (``docker push`` prints it per layer)."""

    PUSHED = "Pushed"
    EXISTS = "Layer already exists"
    MOUNTED = "Mounted from"


class _MemoryWriter:
    """A writer into memory, for configs that ``resolve()`` returns as bytes."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)

    def written_digest(self) -> str:
        return sha256_digest(bytes(self.data))

    def commit(self) -> str:
        return self.written_digest()

    def __enter__(self) -> _MemoryWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Download:
    """One blob on its way into a writer: bytes so far and a restart that
    throws them away (a resume the server did not honour).  The writer's
    own hash checks the digest: each byte is hashed once."""

    def __init__(self, new_writer: Callable[[], BlobWriter]) -> None:
        self._new_writer = new_writer
        self.writer: BlobWriter = new_writer().__enter__()
        self.received = 0
        self.resumed = False

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.received += len(data)

    def digest(self) -> str:
        return self.writer.written_digest()

    def restart(self) -> None:
        self.writer.__exit__(None, None, None)
        self.writer = self._new_writer().__enter__()
        self.received = 0
        self.resumed = False

    def discard(self) -> None:
        self.writer.__exit__(None, None, None)


def _with_query(url: str, **params: str) -> str:
    """Add query parameters to an upload URL, keeping the registry's own (``_state``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class RegistryClient:
    """Pulls and pushes images; one per build, so connections and tokens are reused.

    ``credentials`` None means anonymous access; the CLI passes
    ``CredentialStore.from_docker_config()``.  ``transport`` replaces httpx's
    network transport (tests use it to observe requests).  ``limits`` are the
    connect and stall timeouts and the overall deadline of every operation
    (by default from the environment, see ``_network``); ``retries`` is how
    often a passing failure is tried again.  Blobs up to ``monolithic_upload_limit`` bytes are
    uploaded in one PUT, larger ones in PATCH chunks of ``upload_chunk_size``.
    """

    def __init__(
        self,
        *,
        insecure_registries: Iterable[str] = (),
        credentials: CredentialStore | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: NetworkLimits | None = None,
        retries: int = 4,
        max_concurrent_blobs: int = 4,
        monolithic_upload_limit: int = 64 * MiB,
        upload_chunk_size: int = 16 * MiB,
        max_manifest_size: int = 4 * MiB,
        max_config_size: int = 32 * MiB,
    ) -> None:
        if upload_chunk_size <= 0 or max_concurrent_blobs <= 0 or retries < 0:
            raise ValueError("upload_chunk_size and max_concurrent_blobs must be positive, retries not negative")
        self._insecure = tuple(insecure_registries)
        limits = limits or default_limits()
        self._policy = RetryPolicy(retries=retries, limits=limits)
        self._client = httpx.AsyncClient(
            transport=transport,
            # Per read and write only a backstop: the stall watch of ``_network`` bounds transfers.
            timeout=httpx.Timeout(limits.stall_timeout, connect=limits.connect_timeout),
            follow_redirects=False,
            headers={"User-Agent": f"pybuild/{__version__}"},
        )
        self._credentials = credentials
        self._http = RegistryHttp(self._client, Authorizer(self._client, credentials, self._policy, self._insecure), self._policy)
        self._blob_slots = trio.CapacityLimiter(max_concurrent_blobs)
        self._inflight: dict[tuple[int, str], trio.Event] = {}
        self._monolithic_limit = monolithic_upload_limit
        self._chunk_size = upload_chunk_size
        self._max_manifest = max_manifest_size
        self._max_config = max_config_size

    async def aclose(self) -> None:
        await self._client.aclose()

    def with_retries(self, retries: int) -> RegistryClient:
        """This client retrying ``retries`` times instead: same connections and
        credentials (closing either closes both).  Optional documents -- a
        build cache -- use a small number, so a dead registry costs little."""
        if retries < 0:
            raise ValueError("retries must not be negative")
        view = copy.copy(self)
        view._policy = dataclasses.replace(self._policy, retries=retries)
        view._http = RegistryHttp(self._client, Authorizer(self._client, self._credentials, view._policy, self._insecure), view._policy)
        return view

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def endpoint(self, ref: Reference) -> Endpoint:
        return endpoint_for(ref.registry, self._insecure)

    # --- pull ---------------------------------------------------------------

    async def resolve(self, ref: Reference, platform: str) -> ResolvedManifest:
        """The image manifest of ``ref`` for ``platform`` ("linux/amd64[/variant]"),
        with its config, following an index (manifest list) if there is one."""
        parse_platform(platform)  # a typo fails here, before any request
        call = RegistryCall(self.endpoint(ref), ref.repository, "pull")
        if ref.digest:
            check_digest(ref.digest, str(ref))
        data, media_type, digest = await self._get_manifest(
            call, ref.digest or ref.tag or "latest", subject=str(ref), expected_digest=ref.digest
        )
        index_digest = None
        top_index, top_index_type = b"", ""
        for depth in range(_MAX_INDEX_DEPTH + 1):
            if media_type not in INDEX_TYPES:
                break
            index_digest = index_digest or digest
            top_index, top_index_type = (data, media_type) if depth == 0 else (b"", "")
            chosen = select_platform(data, platform, str(ref))
            data, media_type, digest = await self._get_manifest(
                call,
                chosen.digest,
                subject=f"{ref.name}@{chosen.digest}",
                expected_digest=chosen.digest,
                expected_size=chosen.size,
            )
            check_entry_type(chosen, media_type, f"{ref.name}@{chosen.digest}")
        else:
            raise RegistryError(f"{ref} nests indexes too deeply", hint="pybuild follows at most two levels of image indexes")
        parsed = parse_manifest(data, str(ref))
        if parsed.config.size > self._max_config:
            raise RegistryError(
                f"the config of {ref} is {parsed.config.size} bytes, more than pybuild accepts ({self._max_config})",
                hint="this does not look like a container image",
            )
        writers: list[_MemoryWriter] = []

        def new_writer() -> _MemoryWriter:
            writers.append(_MemoryWriter())
            return writers[-1]

        await self._download(call, parsed.config, new_writer, None)
        config = bytes(writers[-1].data)
        if index_digest is None:
            _warn_if_other_platform(ref, config, platform)
        return ResolvedManifest(
            ref=ref,
            digest=digest,
            media_type=media_type,
            manifest=data,
            config_digest=parsed.config.digest,
            config=config,
            layers=parsed.layers,
            index_digest=index_digest,
            config_media_type=parsed.config.media_type or "application/vnd.oci.image.config.v1+json",
            index=top_index,
            index_media_type=top_index_type,
        )

    async def fetch_blob(
        self, ref: Reference, descriptor: BlobLike, store: BlobStore, *, on_progress: ProgressCallback | None = None
    ) -> None:
        """Download one blob of ``ref``'s repository into ``store``, verified.

        Nothing happens if the store has it.  Concurrent calls for the same
        blob and store share one download.
        """
        digest = check_digest(descriptor.digest, f"a blob of {ref}")
        if not isinstance(descriptor.size, int) or descriptor.size < 0:
            raise ImageError(f"blob {digest} of {ref} has no valid size ({descriptor.size!r})")
        key = (id(store), digest)
        while True:
            if store.has(digest):
                if on_progress:
                    on_progress(BlobProgress(digest, descriptor.size, descriptor.size, cached=True))
                return
            busy = self._inflight.get(key)
            if busy is None:
                break
            await busy.wait()  # then look again: the other download may have failed
        done = trio.Event()
        self._inflight[key] = done
        try:
            call = RegistryCall(self.endpoint(ref), ref.repository, "pull")
            async with self._blob_slots:
                await self._download(
                    call,
                    LayerDescriptor(digest, descriptor.size, ""),
                    lambda: store.writer(expected_digest=digest, expected_size=descriptor.size),
                    on_progress,
                )
        finally:
            del self._inflight[key]
            done.set()

    async def pull(
        self, ref: Reference, platform: str, store: BlobStore, *, on_progress: ProgressCallback | None = None
    ) -> ResolvedManifest:
        """Resolve ``ref`` and store its manifest, config and layers (layers
        concurrently, at most ``max_concurrent_blobs`` at a time)."""
        resolved = await self.resolve(ref, platform)
        for data, digest in ((resolved.manifest, resolved.digest), (resolved.config, resolved.config_digest)):
            await self._store_verified(store, data, digest)
        await _first_error(
            [functools.partial(self.fetch_blob, ref, layer, store, on_progress=on_progress) for layer in resolved.layers]
        )
        log.debug("pulled %s (%s, %d layers)", ref, resolved.digest, len(resolved.layers))
        return resolved

    async def get_manifest(self, ref: Reference) -> tuple[bytes, str, str]:
        """The raw manifest ``ref`` names (any artifact, not only images): bytes,
        media type and digest, verified."""
        call = RegistryCall(self.endpoint(ref), ref.repository, "pull")
        return await self._get_manifest(
            call, ref.digest or ref.tag or "latest", subject=str(ref), expected_digest=ref.digest
        )

    async def manifest_exists(self, ref: Reference) -> str | None:
        """The digest of ``ref``'s manifest in the registry, or None if there is none."""
        call = RegistryCall(self.endpoint(ref), ref.repository, "pull")
        reference = ref.digest or ref.tag or "latest"
        answer = await self._fetch_manifest("HEAD", call, reference, subject=str(ref))
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise status_error(answer, call, subject=str(ref), kind="manifest")
        if ref.digest:
            return ref.digest
        announced: str = answer.headers.get("docker-content-digest", "")
        if re.fullmatch(r"sha256:[a-f0-9]{64}", announced):
            return announced
        _data, _media_type, digest = await self._get_manifest(call, reference, subject=str(ref))
        return digest

    async def _fetch_manifest(self, method: str, call: RegistryCall, reference: str, *, subject: str) -> Answer:
        """HEAD or GET the manifest ``reference`` names, accepting every manifest and index type pybuild reads."""
        return await self._http.fetch(
            method,
            call.endpoint,
            call.endpoint.url(f"/v2/{call.repository}/manifests/{reference}"),
            scopes=pull_scopes(call.repository),
            what=f"{method} manifest {subject}",
            headers={"Accept": MANIFEST_ACCEPT},
            max_body=self._max_manifest,  # a HEAD answer has no body: the same limit does for both
        )

    async def _get_manifest(
        self,
        call: RegistryCall,
        reference: str,
        *,
        subject: str,
        expected_digest: str | None = None,
        expected_size: int | None = None,
    ) -> tuple[bytes, str, str]:
        answer = await self._fetch_manifest("GET", call, reference, subject=subject)
        if answer.status != 200:
            raise status_error(answer, call, subject=subject, kind="manifest")
        digest = sha256_digest(answer.body)
        announced = answer.headers.get("docker-content-digest")
        expected = expected_digest or (announced if announced and announced.startswith("sha256:") else None)
        if expected and digest != expected:
            raise RegistryError(
                f"digest mismatch for manifest {expected}: registry sent {digest}",
                hint="the registry or something between it and pybuild changed the data; nothing was stored",
            )
        if expected_size is not None and len(answer.body) != expected_size:
            raise RegistryError(
                f"size mismatch for manifest {digest}: expected {expected_size} bytes, registry sent {len(answer.body)}",
                hint="the registry's index is inconsistent; nothing was stored",
            )
        return answer.body, media_type_of(answer.body, answer.headers.get("content-type"), subject), digest

    async def _download(
        self,
        call: RegistryCall,
        descriptor: LayerDescriptor,
        new_writer: Callable[[], BlobWriter],
        on_progress: ProgressCallback | None,
    ) -> None:
        """GET a blob into a writer, resuming with Range after a dropped
        connection, and commit it only if its size and digest are right."""
        expected, size = descriptor.digest, descriptor.size
        url = call.endpoint.url(f"/v2/{call.repository}/blobs/{expected}")
        scopes = pull_scopes(call.repository)

        async def attempt(_n: int) -> None:
            headers = {"Accept-Encoding": "identity"}
            if download.received:
                headers["Range"] = f"bytes={download.received}-"
            async with self._http.open("GET", call.endpoint, url, scopes=scopes, headers=headers) as response:
                if response.status_code == 206 and download.received:
                    if _range_start(response) != download.received:
                        download.restart()
                        raise TransientError("the registry answered a resumed download with the wrong range")
                    download.resumed = True
                elif response.status_code == 200:
                    if download.received:
                        download.restart()  # the server ignored Range: start again from this body
                elif response.status_code == 416:
                    download.restart()
                    raise TransientError("the registry refused to resume the download")
                else:
                    raise status_error(await read_error_body(response), call, subject=f"blob {expected}", kind="blob")
                async for chunk in response.aiter_bytes():
                    _network.progress(len(chunk))
                    if download.received + len(chunk) > size:
                        raise RegistryError(
                            f"size mismatch for blob {expected}: registry sent more than {size} bytes",
                            hint="the registry or something between it and pybuild changed the data; nothing was stored",
                        )
                    download.write(chunk)
                    if on_progress:
                        on_progress(BlobProgress(expected, size, download.received))
            if download.received < size:
                raise TransientError(f"the body of blob {expected} was cut short at {download.received} of {size} bytes")
            actual = download.digest()
            if actual != expected:
                if download.resumed:
                    download.restart()
                    raise TransientError(f"a resumed download of blob {expected} did not match its digest")
                raise RegistryError(
                    f"digest mismatch for blob {expected}: registry sent {actual}",
                    hint="the registry or something between it and pybuild changed the data; nothing was stored",
                )

        download = _Download(new_writer)
        try:
            await with_retries(self._policy, f"downloading blob {expected} from {call.name}", attempt, expected_bytes=size)
            # fsync and rename can take a while on a busy disk: keep them off the event loop.
            await trio.to_thread.run_sync(download.writer.commit)
        finally:
            download.discard()

    async def _store_verified(self, store: BlobStore, data: bytes, digest: str) -> None:
        if store.has(digest):
            return

        def write() -> None:
            with store.writer(expected_digest=digest, expected_size=len(data)) as writer:
                writer.write(data)
                writer.commit()

        await trio.to_thread.run_sync(write)

    # --- push ---------------------------------------------------------------

    async def push(
        self,
        ref: Reference,
        *,
        manifest: bytes,
        media_type: str,
        blobs: Sequence[BlobLike],
        store: BlobStore,
        mount_from: Mapping[str, Reference] = MappingProxyType({}),
        on_blob: Callable[[str, BlobOutcome], None] | None = None,
    ) -> str:
        """Upload ``blobs`` from ``store`` and then ``manifest``; returns its digest.

        A blob the repository already has is skipped; one that ``mount_from``
        places in another repository of the same registry is mounted from
        there instead of uploaded.  ``on_blob`` learns what happened to each
        blob.  The manifest is put by tag (by digest if ``ref`` has no tag).
        """
        digest = sha256_digest(manifest)
        if ref.digest and ref.digest != digest:
            raise ImageError(f"the manifest to push is {digest}, not {ref.digest} as {ref} says")
        endpoint = self.endpoint(ref)
        sources = {
            d: source
            for d, source in mount_from.items()
            if source.registry == ref.registry and source.repository != ref.repository
        }
        scopes = push_scopes(ref.repository, tuple(sorted({s.repository for s in sources.values()})))
        call = RegistryCall(endpoint, ref.repository, "push")
        unique: dict[str, BlobLike] = {}
        for blob in blobs:
            check_digest(blob.digest, "a blob to push")
            stored = store.size(blob.digest)
            if stored is None and blob.digest in sources:
                unique.setdefault(blob.digest, blob)  # mounted from its repository, never downloaded
                continue
            if stored is None:
                raise NotFound(f"blob {blob.digest} is not in the content store", hint="build or pull the image again")
            if stored != blob.size:
                raise ImageError(f"blob {blob.digest} has {stored} bytes in the store, but the manifest says {blob.size}")
            unique.setdefault(blob.digest, blob)
        await _first_error(
            [
                functools.partial(self._push_blob, call, scopes, blob, store, sources.get(blob.digest), on_blob)
                for blob in unique.values()
            ]
        )
        reference = ref.tag or digest
        answer = await self._http.fetch(
            "PUT",
            endpoint,
            endpoint.url(f"/v2/{ref.repository}/manifests/{reference}"),
            scopes=scopes,
            what=f"PUT manifest {ref}",
            headers={"Content-Type": media_type},
            content=manifest,
        )
        if answer.status not in (200, 201):
            raise status_error(answer, call, subject=f"manifest {ref}", kind="upload")
        announced = answer.headers.get("docker-content-digest")
        if announced and announced.startswith("sha256:") and announced != digest:
            raise RegistryError(
                f"{endpoint.registry} stored the manifest of {ref} as {announced}, but pybuild sent {digest}",
                hint="the registry changed the manifest; tell its operator",
            )
        log.debug("pushed %s (%s, %d blobs)", ref, digest, len(unique))
        return digest

    async def _push_blob(
        self,
        call: RegistryCall,
        scopes: tuple[str, ...],
        blob: BlobLike,
        store: BlobStore,
        source: Reference | None,
        on_blob: Callable[[str, BlobOutcome], None] | None,
    ) -> None:
        outcome = await self._send_blob(call, scopes, blob, store, source)
        if on_blob is not None:
            on_blob(blob.digest, outcome)

    async def _send_blob(
        self, call: RegistryCall, scopes: tuple[str, ...], blob: BlobLike, store: BlobStore, source: Reference | None
    ) -> BlobOutcome:
        endpoint, digest = call.endpoint, blob.digest
        async with self._blob_slots:
            head = await self._http.fetch(
                "HEAD",
                endpoint,
                endpoint.url(f"/v2/{call.repository}/blobs/{digest}"),
                scopes=scopes,
                what=f"HEAD blob {digest}",
            )
            if head.status == 200:
                log.debug("%s already has %s", call.name, digest)
                return BlobOutcome.EXISTS
            if head.status != 404:
                raise status_error(head, call, subject=f"blob {digest}", kind="blob")

            async def attempt(_n: int) -> BlobOutcome:
                location = await self._start_upload(call, scopes, blob, source)
                if location is None:
                    return BlobOutcome.MOUNTED
                if blob.size <= self._monolithic_limit:
                    await self._upload_monolithic(call, scopes, blob, store, location)
                else:
                    await self._upload_chunked(call, scopes, blob, store, location)
                return BlobOutcome.PUSHED

            return await with_retries(self._policy, f"uploading blob {digest} to {call.name}", attempt, expected_bytes=blob.size)

    async def _start_upload(
        self, call: RegistryCall, scopes: tuple[str, ...], blob: BlobLike, source: Reference | None
    ) -> str | None:
        """POST a new upload session; None if the registry mounted the blob instead."""
        endpoint = call.endpoint
        url = endpoint.url(f"/v2/{call.repository}/blobs/uploads/")
        if source is not None:
            url = _with_query(url, mount=blob.digest, **{"from": source.repository})
        answer = await self._http.fetch("POST", endpoint, url, scopes=scopes, what=f"POST upload of {blob.digest}", retry=False)
        if answer.status == 201 and source is not None:
            _check_announced(answer.headers, blob.digest, call)
            log.debug("mounted %s into %s from %s", blob.digest, call.name, source.repository)
            return None
        if answer.status == 202 and answer.headers.get("location"):
            return urljoin(answer.url, answer.headers["location"])
        raise status_error(answer, call, subject=f"an upload of blob {blob.digest}", kind="upload")

    async def _upload_monolithic(
        self, call: RegistryCall, scopes: tuple[str, ...], blob: BlobLike, store: BlobStore, location: str
    ) -> None:
        url = _with_query(location, digest=blob.digest)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(blob.size)}
        async with aclosing(_read_verified(store, blob)) as body:
            async with self._http.open("PUT", call.endpoint, url, scopes=scopes, headers=headers, content=body) as response:
                if response.status_code not in (201, 204):
                    raise status_error(await read_error_body(response), call, subject=f"blob {blob.digest}", kind="upload")
                _check_announced(response.headers, blob.digest, call)

    async def _upload_chunked(
        self, call: RegistryCall, scopes: tuple[str, ...], blob: BlobLike, store: BlobStore, location: str
    ) -> None:
        offset = 0
        async with aclosing(_read_verified(store, blob, self._chunk_size)) as chunks:
            async for chunk in chunks:
                answer = await self._http.fetch(
                    "PATCH",
                    call.endpoint,
                    location,
                    scopes=scopes,
                    what=f"PATCH upload of {blob.digest}",
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                    },
                    content=chunk,
                    retry=False,
                )
                if answer.status == 416:
                    raise TransientError("the registry lost track of a chunked upload")
                if answer.status != 202:
                    raise status_error(answer, call, subject=f"blob {blob.digest}", kind="upload")
                location = urljoin(answer.url, answer.headers.get("location") or location)
                offset += len(chunk)
        answer = await self._http.fetch(
            "PUT",
            call.endpoint,
            _with_query(location, digest=blob.digest),
            scopes=scopes,
            what=f"PUT upload of {blob.digest}",
            content=b"",
            retry=False,
        )
        if answer.status not in (201, 204):
            raise status_error(answer, call, subject=f"blob {blob.digest}", kind="upload")
        _check_announced(answer.headers, blob.digest, call)


def _warn_if_other_platform(ref: Reference, config: bytes, platform: str) -> None:
    """A single-platform image is used whatever its platform, as BuildKit does,
    but a mismatch is worth a warning: RUN steps will likely fail."""
    try:
        document = json.loads(config)
        found = normalize_arch(str(document.get("architecture", "")), str(document.get("variant") or ""))
        found_os = str(document.get("os", ""))
    except (ValueError, AttributeError):
        return
    want_os, want_arch, want_variant = parse_platform(platform)
    if (found_os, found[0]) != (want_os, want_arch) or (want_variant and found[1] and found[1] != want_variant):
        text = "/".join(part for part in (found_os, *found) if part)
        log.warning("%s is a %s image, not %s", ref, text or "platform-less", platform)


def _range_start(response: httpx.Response) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def _check_announced(headers: httpx.Headers, digest: str, call: RegistryCall) -> None:
    announced = headers.get("docker-content-digest")
    if announced and announced.startswith("sha256:") and announced != digest:
        raise RegistryError(
            f"{call.name} stored blob {digest} as {announced}",
            hint="the registry changed the data; tell its operator",
        )


async def _read_verified(store: BlobStore, blob: BlobLike, chunk_size: int = _READ_SIZE) -> AsyncGenerator[bytes, None]:
    """Yield a stored blob in chunks, checking size and digest before the last
    chunk leaves, so a corrupt local blob never completes an upload."""
    source = store.open(blob.digest)
    try:
        hasher = hashlib.sha256()
        sent = 0
        with _network.local_work():
            pending = await trio.to_thread.run_sync(source.read, chunk_size)
        while pending:
            with _network.local_work():  # a slow disk is not a stalled registry
                following = await trio.to_thread.run_sync(source.read, chunk_size)
            hasher.update(pending)
            sent += len(pending)
            if not following and ("sha256:" + hasher.hexdigest() != blob.digest or sent != blob.size):
                raise CorruptContent(
                    f"blob {blob.digest} in the content store does not match its digest",
                    hint="remove it with `pybuild prune` and build or pull it again",
                )
            yield pending
            pending = following
        if sent != blob.size or (sent == 0 and sha256_digest(b"") != blob.digest):
            raise CorruptContent(
                f"blob {blob.digest} in the content store has {sent} bytes, expected {blob.size}",
                hint="remove it with `pybuild prune` and build or pull it again",
            )
    finally:
        source.close()


async def _first_error(jobs: list[Callable[[], Awaitable[object]]]) -> None:
    """Run jobs concurrently; the first user-facing error cancels the rest and
    is raised alone (not wrapped in an ExceptionGroup)."""
    failures: list[PybuildError] = []
    async with trio.open_nursery() as nursery:

        async def run(job: Callable[[], Awaitable[object]]) -> None:
            try:
                await job()
            except PybuildError as error:
                if not failures:
                    failures.append(error)
                nursery.cancel_scope.cancel()

        for job in jobs:
            nursery.start_soon(run, job)
    if failures:
        raise failures[0]
