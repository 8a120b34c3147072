"""Remote sources of ADD: files over HTTP(S) and git repositories.

HTTP downloads stream to disk (mode 0600, as BuildKit stores them), are
hashed on the way, and are checked against ``--checksum`` when given; git
sources are cloned with the git CLI.  Both run on the host, outside any
sandbox, and write only into the directory they are given.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pybuild.errors import BuildError

from ._network import DeadlineExceeded, NetworkLimits, Stalled, answered, default_limits, expect, operation, progress
from ._urls import basic_auth, redact_urls

if TYPE_CHECKING:
    from ._git import GitCheckout


class HttpDownload(Protocol):
    """What a download reads of its source (dag's HttpSource); ``userinfo`` too, when it has one."""

    @property
    def url(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def checksum(self) -> str | None: ...


class RemoteFetcher:
    """The worker's Fetcher: ``http`` with httpx, ``git`` with the git CLI.

    ``limits`` bound each download (connect, stall, overall deadline; see
    ``_network``); by default they come from the environment.
    """

    def __init__(self, *, limits: NetworkLimits | None = None) -> None:
        self.limits = limits or default_limits()  # read now: a bad value fails before the build starts

    async def http(self, source: HttpDownload, dest: Path) -> str:
        import httpx

        limits = self.limits
        target = dest / source.filename
        digest = hashlib.sha256()
        try:
            with operation(limits) as op, op.attempt():
                timeout = httpx.Timeout(limits.stall_timeout, connect=limits.connect_timeout)
                async with httpx.AsyncClient(follow_redirects=True, timeout=timeout) as client:
                    async with client.stream("GET", source.url, auth=basic_auth(getattr(source, "userinfo", None))) as response:
                        answered()
                        if response.status_code >= 400:
                            raise BuildError(
                                f"failed to load {source.url}: HTTP {response.status_code}",
                                hint="check the URL in ADD",
                            )
                        length = response.headers.get("content-length", "")
                        if length.isdigit():
                            expect(int(length))  # a big file gets time in proportion
                        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                        with os.fdopen(fd, "wb") as out:
                            # Chunks as they arrive: the stall watch must see every byte.
                            async for chunk in response.aiter_bytes():
                                progress(len(chunk))
                                digest.update(chunk)
                                out.write(chunk)
                        modified = response.headers.get("last-modified")
        except (Stalled, DeadlineExceeded) as error:
            _remove(target)
            raise BuildError(f"failed to load {source.url}: {error.reason}", hint="the server is too slow or not answering") from None
        except httpx.TimeoutException as error:
            _remove(target)
            reason = limits.connect_reason() if isinstance(error, httpx.ConnectTimeout) else limits.stall_reason(0)
            raise BuildError(f"failed to load {source.url}: {reason}", hint="is the host reachable?") from None
        except httpx.HTTPError as error:
            _remove(target)
            reason = redact_urls(f"{type(error).__name__}: {error}")
            raise BuildError(f"failed to load {source.url}: {reason}", hint="is the host reachable?") from None
        os.chmod(target, 0o600)
        if modified:
            import email.utils  # only a download with Last-Modified needs its date parser

            parsed = email.utils.parsedate_to_datetime(modified)
            if parsed is not None:
                stamp = parsed.timestamp()
                os.utime(target, (stamp, stamp))
        actual = "sha256:" + digest.hexdigest()
        if source.checksum and source.checksum != actual:
            raise BuildError(
                f"digest mismatch for {source.url}: expected {source.checksum}, got {actual}",
                hint="the file changed, or --checksum is wrong",
            )
        return actual

    async def git(self, source: GitCheckout, dest: Path) -> str:
        from ._git import fetch_git

        return await fetch_git(source, dest)


def _remove(path: Path) -> None:
    """Drop a partial download, so a failed fetch leaves nothing half-written."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
