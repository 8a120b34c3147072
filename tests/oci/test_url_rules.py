"""What a git source may name, and how a URL's credentials are taken apart (issue 13)."""

from __future__ import annotations

import pytest

from pybuild.errors import BuildError
from pybuild.oci import check_git_source, redact_urls, split_userinfo
from pybuild.oci._urls import basic_auth, join_userinfo


@pytest.mark.parametrize("remote", [
    "https://github.com/moby/buildkit.git",
    "http://127.0.0.1:8080/repo.git",
    "http://[::1]:8080/repo.git",
    "git://127.0.0.1:9418/repo.git",
    "ssh://git@github.com:22/moby/buildkit.git",
    "git@github.com:moby/buildkit.git",
    "github.com:moby/buildkit.git",
])
@pytest.mark.parametrize("ref", [None, "main", "v1.2.3", "feature/new-thing", "refs/tags/v1", "HEAD", "a" * 40, "0123abcd" * 8])
def test_ordinary_git_sources_are_allowed(remote: str, ref: str | None) -> None:
    check_git_source(remote, ref, "docs/site")


@pytest.mark.parametrize("subdir", ["a", "a/b/", "./a", "a//b", "a-b/.c"])
def test_relative_subdirectories_are_allowed(subdir: str) -> None:
    check_git_source("https://example.com/r.git", "main", subdir)


def test_an_unknown_protocol_names_the_allowed_ones() -> None:
    with pytest.raises(BuildError) as caught:
        check_git_source("ftp://example.com/r.git", None, None)
    assert "https, http, git, ssh" in str(caught.value)


@pytest.mark.parametrize(("url", "stripped", "userinfo"), [
    ("https://user:pass@host/f", "https://host/f", "user:pass"),
    ("https://tok@host:8443/r.git", "https://host:8443/r.git", "tok"),
    ("HTTP://u:p%40ss@host/f?q=a@b", "HTTP://host/f?q=a@b", "u:p%40ss"),
    ("git://u:p@host/r.git", "git://host/r.git", "u:p"),
    ("ssh://git:pw@host/r.git", "ssh://git@host/r.git", "git:pw"),
    ("ssh://git@host/r.git", "ssh://git@host/r.git", None),
    ("git@github.com:org/r.git", "git@github.com:org/r.git", None),
    ("https://host/path@version", "https://host/path@version", None),
    ("https://host/f", "https://host/f", None),
])
def test_userinfo_is_split_from_a_url_and_put_back(url: str, stripped: str, userinfo: str | None) -> None:
    assert split_userinfo(url) == (stripped, userinfo)
    assert redact_urls(url) == stripped
    if userinfo:
        assert join_userinfo(stripped, userinfo) == url


def test_credentials_in_text_are_redacted_wherever_they_are() -> None:
    text = "ADD https://a:secret1@h/x http://tok2@h:1/y.git#main /dst/ (fatal: 'https://u:secret3@h/' not found)"
    assert redact_urls(text) == "ADD https://h/x http://h:1/y.git#main /dst/ (fatal: 'https://h/' not found)"


def test_basic_auth_decodes_the_userinfo() -> None:
    assert basic_auth("u%20x:p%40ss") == ("u x", "p@ss")
    assert basic_auth("token") == ("token", "")
    assert basic_auth(None) is None
