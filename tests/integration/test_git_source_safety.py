"""Git sources of ADD and git build contexts: nothing a URL, ref, subdir or the
caller's git environment says may run a command on the host or write outside
the fetch directory (issue 13).

Every attack points git at a script that creates a marker file on the host;
the marker must never exist afterwards, and the fetch fails with one clear line.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import trio

from pybuild.dag._ops import GitSource
from pybuild.errors import PybuildError
from pybuild.oci import RemoteFetcher


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "host-marker"


@pytest.fixture
def evil(tmp_path: Path, marker: Path) -> Path:
    """An executable that creates the marker, whatever arguments it gets."""
    script = tmp_path / "evil.sh"
    script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
    script.chmod(0o755)
    return script


def fetch(tmp_path: Path, remote: str, ref: str | None = None, subdir: str | None = None, keep_git_dir: bool = False) -> Path:
    dest = tmp_path / f"dest{len(list(tmp_path.glob('dest*')))}"
    dest.mkdir()
    trio.run(RemoteFetcher().git, GitSource(remote=remote, ref=ref, subdir=subdir, keep_git_dir=keep_git_dir), dest)
    return dest


def refused(tmp_path: Path, remote: str, ref: str | None = None, subdir: str | None = None) -> str:
    with pytest.raises(PybuildError) as caught:
        fetch(tmp_path, remote, ref, subdir)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("ref", ["--upload-pack={evil}", "-x", "--config=core.sshCommand={evil}", "-c", "-"])
def test_a_ref_is_never_read_as_a_git_option(tmp_path: Path, git_server, evil: Path, marker: Path, ref: str) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a.txt": "a\n"})
    message = refused(tmp_path, url, ref=ref.format(evil=evil))
    assert not marker.exists()
    assert message.startswith("invalid git ref")


@pytest.mark.parametrize("ref", ["main..x", "a b", "x~1", "x^", "x:y", "x?", "x*", "x[", "x\\y", "/x", "x/", "x.lock", "x//y", "x@{1}", "@", ".x", "x/.y", "x\x01", "x\x7f"])
def test_refs_follow_git_ref_name_rules(tmp_path: Path, ref: str) -> None:
    assert refused(tmp_path, "https://example.invalid/repo.git", ref=ref).startswith("invalid git ref")


@pytest.mark.parametrize("remote", ["--upload-pack={evil}", "-x", "--config=core.sshCommand={evil}", "-oProxyCommand={evil}"])
def test_a_url_is_never_read_as_a_git_option(tmp_path: Path, evil: Path, marker: Path, remote: str) -> None:
    assert refused(tmp_path, remote.format(evil=evil)).startswith("invalid git URL")
    assert not marker.exists()


@pytest.mark.parametrize("remote", [
    "git@-oProxyCommand={evil}:repo.git",
    "-oProxyCommand={evil}@host:repo.git",
    "ssh://-oProxyCommand={evil}/repo.git",
    "ssh://-oProxyCommand={evil}@host/repo.git",
])
def test_an_ssh_host_or_user_is_never_an_ssh_option(tmp_path: Path, evil: Path, marker: Path, remote: str) -> None:
    assert refused(tmp_path, remote.format(evil=evil)).startswith("invalid git URL")
    assert not marker.exists()


@pytest.mark.parametrize("subdir", ["--upload-pack={evil}", "-x", "../..", "a/../../..", "/etc"])
def test_a_subdir_stays_inside_the_checkout(tmp_path: Path, git_server, evil: Path, marker: Path, subdir: str) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a/inner.txt": "inner\n"})
    assert refused(tmp_path, url, ref="main", subdir=subdir.format(evil=evil)).startswith("invalid git subdirectory")
    assert not marker.exists()


def test_a_subdir_through_a_symlink_is_refused(tmp_path: Path, git_server) -> None:  # type: ignore[no-untyped-def]
    outside = tmp_path / "host-dir"
    outside.mkdir()
    (outside / "canary").write_text("host\n")
    url = git_server({"a.txt": "a\n"}, symlinks={"out": str(outside), "inside": "."})
    for subdir in ("out", "out/", "inside/out"):
        assert "symbolic link" in refused(tmp_path, url, ref="main", subdir=subdir)
    assert (outside / "canary").read_text() == "host\n"


@pytest.mark.parametrize("remote", ["ext::{evil} %S", "ext::sh -c touch% {marker}", "fd::3", "file://{repo}", "{repo}", "./repo.git", "/"])
def test_local_and_command_transports_are_refused(tmp_path: Path, evil: Path, marker: Path, remote: str) -> None:
    repo = tmp_path / "local-repo"
    os.system(f"git init -q -b main {repo} && git -C {repo} -c user.email=t@e -c user.name=t commit -q --allow-empty -m x")
    message = refused(tmp_path, remote.format(evil=evil, marker=marker, repo=repo))
    assert not marker.exists()
    assert message.startswith("invalid git URL")


def _hooks(tmp_path: Path, evil: Path) -> Path:
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("post-checkout", "reference-transaction", "post-index-change"):
        (hooks / name).symlink_to(evil)
    return hooks


@pytest.mark.parametrize("variable", ["GIT_PROXY_COMMAND", "GIT_SSH_COMMAND", "GIT_SSH", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "HOME", "GIT_CONFIG_GLOBAL", "GIT_EXEC_PATH"])
def test_the_callers_git_environment_is_not_used(tmp_path: Path, git_server, evil: Path, marker: Path, monkeypatch: pytest.MonkeyPatch, variable: str) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a.txt": "a\n"})
    ssh_url = "ssh://127.0.0.1:1/repo.git"
    config = tmp_path / "gitconfig"
    config.write_text(f"[core]\n\thooksPath = {_hooks(tmp_path, evil)}\n\tsshCommand = {evil}\n\tgitProxy = {evil}\n")
    (tmp_path / ".gitconfig").write_text(config.read_text())
    exec_path = tmp_path / "exec-path"
    exec_path.mkdir()
    for program in ("git-upload-pack", "git-remote-http", "git-remote-https"):
        (exec_path / program).symlink_to(evil)
    settings = {
        "GIT_PROXY_COMMAND": [("GIT_PROXY_COMMAND", str(evil))],
        "GIT_SSH_COMMAND": [("GIT_SSH_COMMAND", str(evil))],
        "GIT_SSH": [("GIT_SSH", str(evil))],
        "GIT_CONFIG_PARAMETERS": [("GIT_CONFIG_PARAMETERS", f"'core.hookspath'='{tmp_path / 'hooks'}' 'core.sshcommand'='{evil}' 'core.gitproxy'='{evil}'")],
        "GIT_CONFIG_COUNT": [("GIT_CONFIG_COUNT", "1"), ("GIT_CONFIG_KEY_0", "core.hooksPath"), ("GIT_CONFIG_VALUE_0", str(tmp_path / "hooks"))],
        "HOME": [("HOME", str(tmp_path))],
        "GIT_CONFIG_GLOBAL": [("GIT_CONFIG_GLOBAL", str(config))],
        "GIT_EXEC_PATH": [("GIT_EXEC_PATH", str(exec_path))],
    }[variable]
    for name, value in settings:
        monkeypatch.setenv(name, value)
    for remote in (url, ssh_url, "http://127.0.0.1:1/repo.git"):
        try:
            fetch(tmp_path, remote, ref="main")
        except PybuildError as error:
            assert "\n" not in str(error)
    assert not marker.exists()


def test_git_dir_in_the_callers_environment_is_not_written(tmp_path: Path, git_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a.txt": "a\n"})
    elsewhere = tmp_path / "host-repo"
    monkeypatch.setenv("GIT_DIR", str(elsewhere))
    monkeypatch.setenv("GIT_WORK_TREE", str(elsewhere))
    dest = fetch(tmp_path, url, ref="main")
    assert (dest / "a.txt").read_text() == "a\n"
    assert not elsewhere.exists()


@pytest.mark.parametrize(("ref", "subdir"), [("no-such-branch", None), ("main", "no/such/dir")])
def test_a_failed_fetch_leaves_nothing_behind(tmp_path: Path, git_server, ref: str, subdir: str | None) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a.txt": "a\n"})
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(PybuildError) as caught:
        trio.run(RemoteFetcher().git, GitSource(remote=url, ref=ref, subdir=subdir), dest)
    assert "\n" not in str(caught.value)
    assert list(dest.iterdir()) == []


def test_a_full_commit_id_and_a_tag_are_valid_refs(tmp_path: Path, git_server) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a.txt": "a\n"})
    dest = fetch(tmp_path, url, ref="refs/heads/main", keep_git_dir=True)
    assert (dest / "a.txt").read_text() == "a\n"
    commit = (dest / ".git" / "HEAD").read_text().strip()
    assert len(commit) == 40
    # a commit id is a valid ref (this daemon does not serve that one, so git refuses it)
    with pytest.raises(PybuildError) as caught:
        fetch(tmp_path, url, ref="0" * 40)
    assert not str(caught.value).startswith("invalid git ref")


def test_a_hostile_ref_in_a_dockerfile_fails_the_build_cleanly(cli, busybox_image: str, tmp_path: Path, git_server, evil: Path, marker: Path) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"a.txt": "a\n"})
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM busybox\nADD {url}#--upload-pack={evil} /src/\n")
    result = cli("build", "--progress=plain", str(ctx), check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "Dockerfile:2: invalid git ref '--upload-pack=" in result.stderr
    assert not marker.exists()
    scp = cli("build", str(tmp_path), "-f", "-", input=f"FROM busybox\nADD git@-oProxyCommand={evil}:x /src/\n".encode(), check=False)
    assert scp.returncode == 1 and b"Traceback" not in scp.stderr and b"invalid git URL" in scp.stderr
    assert not marker.exists()


def test_a_hostile_git_context_url_fails_cleanly(cli, tmp_path: Path, git_server, evil: Path, marker: Path) -> None:  # type: ignore[no-untyped-def]
    url = git_server({"Dockerfile": "FROM scratch\n"})
    result = cli("build", f"{url}#--upload-pack={evil}", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error")] == [
        f"error: invalid git ref '--upload-pack={evil}': it begins with '-'"
    ]
    assert not marker.exists()
    assert stat.S_ISREG(os.stat(evil).st_mode)
