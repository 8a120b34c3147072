"""Credentials in URLs: kept for the request, never shown, stored or hashed.

``ADD https://user:token@host/file`` and git remotes such as
``https://token@github.com/org/repo.git`` carry a secret in the URL's userinfo.
The build graph keeps the URL *without* it (so op digests, cache keys,
progress, history and errors never see it) and the userinfo in a field of
its own that only the fetcher reads.  Shown text that may still hold a URL
(a Dockerfile line, git's stderr) goes through ``redact_urls``.

For http(s) and git:// the whole userinfo goes (a token is often the user
name); for ssh the user name stays (``git@host:repo`` needs it, and it is a
login, not a secret) and only a password goes.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# scheme://userinfo@ -- userinfo runs to the last "@" before the host ends, as in urlsplit
_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)([^\s/?#]*)@")
_KEEPS_USER = ("ssh", "git+ssh", "ssh+git")


def split_userinfo(url: str) -> tuple[str, str | None]:
    """``(url without its secret userinfo, the userinfo)``; the second is None when there is none."""
    match = _USERINFO.match(url)
    if match is None:
        return url, None
    scheme, userinfo = match.group(1), match.group(2)
    kept = _kept_part(scheme, userinfo)
    if kept == userinfo:
        return url, None
    return scheme + (kept + "@" if kept else "") + url[match.end():], userinfo


def join_userinfo(url: str, userinfo: str | None) -> str:
    """The URL to request: ``url`` with the userinfo ``split_userinfo`` took out put back."""
    if not userinfo:
        return url
    match = _USERINFO.match(url)
    if match is not None:  # an ssh user name that was kept
        return match.group(1) + userinfo + "@" + url[match.end():]
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{userinfo}@{rest}"


def redact_urls(text: str) -> str:
    """``text`` with the credentials of every ``scheme://user:secret@`` in it removed."""
    if "@" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        kept = _kept_part(match.group(1), match.group(2))
        return match.group(1) + (kept + "@" if kept else "")

    return _USERINFO.sub(replace, text)


def _kept_part(scheme: str, userinfo: str) -> str:
    if scheme[:-3].lower() in _KEEPS_USER:
        return userinfo.partition(":")[0]
    return ""


def basic_auth(userinfo: str | None) -> tuple[str, str] | None:
    """``(user, password)`` for an HTTP request, decoded as a URL's userinfo is; None without one."""
    if not userinfo:
        return None
    user, _, password = userinfo.partition(":")
    return unquote(user), unquote(password)
