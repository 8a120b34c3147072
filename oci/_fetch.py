"""Remote sources of ADD: files over HTTP(S) and git repositories.

HTTP downloads stream to disk (mode 0600, as BuildKit stores them), are
hashed on the way, and are checked against ``--checksum`` when given; git
sources are cloned with the git CLI.  Both run on the host, outside any
sandbox, and write only into the directory they are given.
"""

from __future__ import annotations

import email.utils
import hashlib
import os
import shutil
from pathlib import Path
from typing import Any

import trio

from pybuild.errors import BuildError

from ._network import DeadlineExceeded, NetworkLimits, Stalled, answered, default_limits, expect, operation, progress


class RemoteFetcher:
    """The worker's Fetcher: ``http`` with httpx, ``git`` with the git CLI.

    ``limits`` bound each download (connect, stall, overall deadline; see
    ``_network``); by default they come from the environment.
    """

    def __init__(self, *, limits: NetworkLimits | None = None) -> None:
        self.limits = limits or default_limits()  # read now: a bad value fails before the build starts

    async def http(self, source: Any, dest: Path) -> str:
        import httpx

        limits = self.limits
        target = dest / source.filename
        digest = hashlib.sha256()
        try:
            with operation(limits) as op, op.attempt():
                timeout = httpx.Timeout(limits.stall_timeout, connect=limits.connect_timeout)
                async with httpx.AsyncClient(follow_redirects=True, timeout=timeout) as client:
                    async with client.stream("GET", source.url) as response:
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
            raise BuildError(f"failed to load {source.url}: {type(error).__name__}: {error}", hint="is the host reachable?") from None
        os.chmod(target, 0o600)
        if modified:
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

    async def git(self, source: Any, dest: Path) -> str:
        git = shutil.which("git")
        if git is None:
            raise BuildError("ADD of a git repository needs the git command", hint="apt-get install git")
        checkout = dest / "checkout"
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1"}
        await self._git([git, "init", "-q", str(checkout)], env)
        await self._git([git, "-C", str(checkout), "remote", "add", "origin", source.remote], env)
        ref = source.ref or "HEAD"
        await self._git([git, "-C", str(checkout), "fetch", "-q", "--depth=1", "origin", ref], env, what=f"fetch {ref} from {source.remote}")
        await self._git([git, "-C", str(checkout), "checkout", "-q", "FETCH_HEAD"], env)
        commit = (await self._git([git, "-C", str(checkout), "rev-parse", "HEAD"], env)).strip()
        if not source.keep_git_dir:
            shutil.rmtree(checkout / ".git")
        if source.subdir:
            sub = (checkout / source.subdir).resolve()
            if not sub.is_relative_to(checkout.resolve()) or not sub.is_dir():
                raise BuildError(f"{source.remote}: no directory {source.subdir!r} in {ref}")
            moved = dest / "subdir"
            sub.rename(moved)
            shutil.rmtree(checkout)
            moved.rename(checkout)
        final = dest / "tree"
        checkout.rename(final)
        for entry in list(dest.iterdir()):
            if entry != final:
                shutil.rmtree(entry, ignore_errors=True)
        for entry in list(final.iterdir()):
            entry.rename(dest / entry.name)
        final.rmdir()
        return "git:" + commit

    @staticmethod
    async def _git(argv: list[str], env: dict[str, str], what: str | None = None) -> str:
        result = await trio.run_process(argv, env=env, capture_stdout=True, capture_stderr=True, check=False)
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = message[-1] if message else f"exit code {result.returncode}"
            raise BuildError(f"git {what or argv[1]}: {detail}")
        return result.stdout.decode("utf-8", "replace")


def _remove(path: Path) -> None:
    """Drop a partial download, so a failed fetch leaves nothing half-written."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
