"""Git sources (``ADD URL.git#ref:subdir`` and git build contexts), fetched with the git CLI.

git runs on the host, as pybuild's user, on a URL, ref and subdirectory that
come from a Dockerfile or a command line, so each of them is held to a rule
before git sees it, and git is run so that nothing else can steer it:

- the URL is https, http, git or ssh (an scp-like ``user@host:path`` is ssh);
  local paths, ``file://`` and the command transports ``ext::``/``fd::`` are
  refused, and no host or user name may begin with ``-`` (ssh would read it
  as an option);
- the ref follows git's ref-name rules (``git check-ref-format``) and never
  begins with ``-``; a full commit id is a ref like any other;
- the subdirectory is a relative path without ``..``, walked inside the
  checkout without following a symbolic link;
- user data only ever comes after ``--``;
- git's environment is built from scratch (no ``GIT_*``, no configuration
  from the host, an empty ``HOME``), protocols are limited by
  ``GIT_ALLOW_PROTOCOL``, hooks are off and ssh never prompts.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from pybuild.errors import BuildError

from ._urls import join_userinfo, redact_urls


class GitCheckout(Protocol):
    """What a git fetch reads of its source (dag's GitSource); ``userinfo`` too, when it has one."""

    @property
    def remote(self) -> str: ...
    @property
    def ref(self) -> str | None: ...
    @property
    def subdir(self) -> str | None: ...
    @property
    def keep_git_dir(self) -> bool: ...
    @property
    def checksum(self) -> str | None: ...

ALLOWED_PROTOCOLS = ("https", "http", "git", "ssh")
_SCHEMES = frozenset({*ALLOWED_PROTOCOLS, "git+ssh", "ssh+git"})  # git counts the last two as ssh
# the host environment git may see: where programs are, and how to reach the network
_PASSED_ENV = ("PATH", "SSH_AUTH_SOCK", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
               "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE", "SSL_CERT_DIR")
_SAFE_CONFIG = (
    "protocol.file.allow=never",
    "protocol.ext.allow=never",
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "credential.helper=",
    "submodule.recurse=false",
)
_SSH_COMMAND = "ssh -o BatchMode=yes"
_NAME = re.compile(r"[A-Za-z0-9._~+%!$&'()*,;=-]+")  # a URL user name, percent-encoded
_HOST = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?|\[[0-9A-Fa-f:.]+\])")
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def check_git_source(remote: str, ref: str | None, subdir: str | None) -> None:
    """Raise BuildError if the URL, ref or subdirectory of a git source breaks its rule."""
    _check_remote(remote)
    if ref is not None:
        reason = _ref_problem(ref)
        if reason:
            raise BuildError(f"invalid git ref {ref!r}: {reason}", hint="a branch, a tag, or a full commit id")
    if subdir is not None:
        _subdir_parts(subdir)


def _check_remote(remote: str) -> None:
    shown = redact_urls(remote)
    hint = "use an https://, http://, git:// or ssh:// URL, or user@host:path"

    def refuse(reason: str) -> BuildError:
        return BuildError(f"invalid git URL {shown!r}: {reason}", hint=hint)

    if re.search(r"[\x00-\x20\x7f]", remote):
        raise refuse("it contains a space or a control character")
    if remote.startswith("-"):
        raise refuse("it begins with '-'")
    scheme, sep, _ = remote.partition("://")
    if sep and "/" not in scheme and ":" not in scheme:
        if scheme.lower() not in _SCHEMES:
            raise refuse(f"the protocol {scheme!r} is not allowed (only {', '.join(ALLOWED_PROTOCOLS)})")
        try:
            parts = urlsplit(remote)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError as error:
            raise refuse(str(error)) from None
        user, at, host = parts.netloc.rpartition("@")
        host = re.sub(r":\d*$", "", host)
        _check_host(host, user if at else None, refuse)
        return
    if "::" in remote.split("/", 1)[0]:
        raise refuse("the transport::address form is not allowed")
    head, colon, path = remote.partition(":")
    if colon and "/" not in head and path:
        user, at, host = head.rpartition("@")
        _check_host(host, user if at else None, refuse)
        return
    raise refuse("local paths and file:// are not allowed")


def _check_host(host: str, user: str | None, refuse: Callable[[str], BuildError]) -> None:
    if user is not None and (user.startswith("-") or not _NAME.fullmatch(user.partition(":")[0] or "x")):
        raise refuse("the user name is not valid")
    if not _HOST.fullmatch(host):
        raise refuse("the host name is not valid")


def _ref_problem(ref: str) -> str | None:
    """Why ``ref`` is not a valid git ref name (``git check-ref-format --allow-onelevel``), or None."""
    if not ref:
        return "it is empty"
    if ref.startswith("-"):
        return "it begins with '-'"
    if ref == "@":
        return "'@' alone is not a ref"
    if _REF_FORBIDDEN.search(ref):
        return "it contains '..', '//', '@{', a space, a control character or one of ~^:?*[\\"
    if ref.startswith("/") or ref.endswith("/") or ref.endswith("."):
        return "it begins or ends with '/', or ends with '.'"
    for part in ref.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return "a component begins with '.' or ends with '.lock'"
    return None


def _subdir_parts(subdir: str) -> list[str]:
    def refuse(reason: str) -> BuildError:
        return BuildError(f"invalid git subdirectory {subdir!r}: {reason}", hint="a relative path inside the repository")

    if subdir.startswith("/"):
        raise refuse("it is absolute")
    if subdir.startswith("-"):
        raise refuse("it begins with '-'")
    if re.search(r"[\x00-\x1f\x7f]", subdir):
        raise refuse("it contains a control character")
    parts = [part for part in subdir.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise refuse("it contains '..'")
    return parts


def git_environment(home: Path) -> dict[str, str]:
    """git's whole environment: nothing of the caller's git settings, an empty HOME."""
    env = {name: os.environ[name] for name in _PASSED_ENV if name in os.environ}
    env.setdefault("PATH", os.defpath)
    env.update(
        HOME=str(home),
        LANG="C",
        LC_ALL="C",
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_ALLOW_PROTOCOL=":".join(ALLOWED_PROTOCOLS),
        GIT_SSH_COMMAND=_SSH_COMMAND,
        GIT_ASKPASS="/bin/false",
        SSH_ASKPASS="/bin/false",
    )
    from . import _network  # loaded with the first fetch: checking a source at conversion needs none of it

    env.update(_network.git_low_speed_env(_network.default_limits()))  # a stalled transfer fails, as ADD http does
    return env


async def fetch_git(source: GitCheckout, dest: Path) -> str:
    """Fetch ``source`` (a dag GitSource) into ``dest``; return ``git:COMMIT``.

    On failure ``dest`` is left as it was given: empty.
    """
    check_git_source(source.remote, source.ref, source.subdir)
    git = shutil.which("git")
    if git is None:
        raise BuildError("ADD of a git repository needs the git command", hint="apt-get install git")
    try:
        return await _fetch(git, source, dest)
    except BaseException:
        for entry in list(dest.iterdir()):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        raise


async def _fetch(git: str, source: GitCheckout, dest: Path) -> str:
    home = dest / "home"
    home.mkdir(mode=0o700)
    checkout = dest / "checkout"
    checkout.mkdir()
    run = _Git(git, checkout, git_environment(home))
    await run(["init", "-q"])
    ref = source.ref or "HEAD"
    url = join_userinfo(source.remote, getattr(source, "userinfo", None))
    await run(["fetch", "-q", "--depth=1", "--no-tags", "--", url, ref], what=f"fetch {ref} from {source.remote}")
    await run(["checkout", "-q", "--detach", "FETCH_HEAD", "--"])
    commit = (await run(["rev-parse", "--verify", "HEAD^{commit}"])).strip()
    _check_checksum(source, commit)
    if source.keep_git_dir:
        # BuildKit keeps an "origin" remote; this one never holds the credentials
        await run(["remote", "add", "--", "origin", source.remote])
        (checkout / ".git" / "FETCH_HEAD").unlink(missing_ok=True)
    else:
        shutil.rmtree(checkout / ".git")
    tree = checkout
    if source.subdir:
        tree = _inside_checkout(checkout, source, source.subdir)
    final = dest / "tree"
    tree.rename(final)
    for entry in list(dest.iterdir()):
        if entry != final:
            shutil.rmtree(entry, ignore_errors=True)
    for entry in list(final.iterdir()):
        entry.rename(dest / entry.name)
    final.rmdir()
    return "git:" + commit


def _check_checksum(source: GitCheckout, commit: str) -> None:
    """ADD --checksum of a git source: the fetched commit's id, or a prefix of it
    (BuildKit's git source compares the commit with ``GitChecksum``)."""
    expected = source.checksum
    if expected and not commit.startswith(expected.lower()):
        raise BuildError(
            f"git checksum mismatch for {redact_urls(source.remote)}: expected {expected}, got commit {commit}",
            hint="the ref now names another commit: check it, or update --checksum",
        )


def _inside_checkout(checkout: Path, source: GitCheckout, subdir: str) -> Path:
    """``subdir`` (the source's), walked one component at a time; a symbolic link on the way is refused."""
    path = checkout
    for part in _subdir_parts(subdir):
        path = path / part
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            mode = 0
        if stat.S_ISLNK(mode):
            raise BuildError(
                f"invalid git subdirectory {source.subdir!r}: {path.relative_to(checkout)} is a symbolic link",
                hint="name the directory the link points to",
            )
        if not stat.S_ISDIR(mode):
            raise BuildError(f"{source.remote}: no directory {source.subdir!r} in {source.ref or 'HEAD'}")
    return path


class _Git:
    """Runs ``git -C CHECKOUT -c SAFE... ARGS`` in the clean environment; errors are one line."""

    def __init__(self, git: str, checkout: Path, env: dict[str, str]) -> None:
        self.prefix = [git, "-C", str(checkout)]
        for setting in _SAFE_CONFIG:
            self.prefix += ["-c", setting]
        self.env = env

    async def __call__(self, args: list[str], what: str | None = None) -> str:
        import trio  # loaded already by whoever runs this coroutine; `pybuild check` converts without it

        result = await trio.run_process(
            [*self.prefix, *args], env=self.env, stdin=b"", capture_stdout=True, capture_stderr=True, check=False
        )
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = message[-1] if message else f"exit code {result.returncode}"
            raise BuildError(redact_urls(f"git {what or args[0]}: {detail}"))
        return result.stdout.decode("utf-8", "replace")
