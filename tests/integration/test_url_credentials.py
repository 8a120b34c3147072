"""Credentials in ADD URLs and git remotes are used for the request and appear
nowhere else: not in progress, history, the image config, errors or the root's
files; and they are never sent to another origin after a redirect (issue 13)."""

from __future__ import annotations

import base64
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._peers import require_tool

USER = "builder"
PASSWORD = "s3cret-pw-7f3a"
TOKEN = "ghp-t0ken-91bc"


class Server:
    """An HTTP server on 127.0.0.1 that records every request's Authorization header."""

    def __init__(self, routes) -> None:  # type: ignore[no-untyped-def]
        self.seen: list[tuple[str, str | None]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                owner.seen.append((self.path, self.headers.get("Authorization")))
                status, headers, body = routes(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def servers() -> Iterator[tuple[Server, Server]]:
    """``protected`` wants USER:PASSWORD and redirects /elsewhere to ``other`` (another port)."""
    other = Server(lambda request: (200, {}, b"from the other origin\n"))

    def protected_routes(request):  # type: ignore[no-untyped-def]
        if request.headers.get("Authorization") != basic(USER, PASSWORD):
            return 401, {"WWW-Authenticate": 'Basic realm="test"'}, b"who are you?\n"
        if request.path == "/file.txt":
            return 200, {}, b"protected content\n"
        if request.path == "/elsewhere":
            return 302, {"Location": f"http://127.0.0.1:{other.port}/file.txt"}, b""
        return 404, {}, b"not here\n"

    protected = Server(protected_routes)
    yield protected, other
    protected.close()
    other.close()


def build(cli, tmp_path: Path, dockerfile: str, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    (ctx / "Dockerfile").write_text(dockerfile)
    return cli("build", "--progress=plain", *args, str(ctx), check=check)


def files_holding(root: Path, secret: str) -> list[Path]:
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file():
                continue
            if secret.encode() in path.read_bytes():
                found.append(path)
    return found


def test_url_credentials_are_used_and_never_shown_or_stored(cli, busybox_image: str, tmp_path: Path, root: Path, open_image, servers) -> None:  # type: ignore[no-untyped-def]
    protected, _ = servers
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{protected.port}/file.txt"
    result = build(cli, tmp_path, f"FROM busybox\nADD {url} /downloaded.txt\nADD --chmod=644 {url} /again.txt\n", "-t", "creds")
    assert open_image("creds").read("/downloaded.txt") == "protected content\n"
    assert ("/file.txt", basic(USER, PASSWORD)) in protected.seen  # the credentials were used
    assert f"127.0.0.1:{protected.port}/file.txt" in result.stderr + result.stdout
    shown = [result.stdout, result.stderr]
    shown.append(cli("history", "--no-trunc", "creds").stdout)
    shown.append(cli("inspect", "creds").stdout)
    shown.append(cli("graph", "-f", str(tmp_path / "ctx" / "Dockerfile"), "--format", "json").stdout)
    for text in shown:
        assert PASSWORD not in text and f"{USER}:" not in text, text
    assert f"ADD http://127.0.0.1:{protected.port}/file.txt /downloaded.txt" in shown[2]
    assert files_holding(root, PASSWORD) == []
    # wrong credentials fail, and the error does not show them either
    again = build(cli, tmp_path, f"FROM busybox\nADD {url.replace(PASSWORD, 'other-pw')} /downloaded.txt\n", check=False)
    assert again.returncode == 1 and "other-pw" not in again.stderr + again.stdout


def test_a_failed_download_never_shows_its_credentials(cli, busybox_image: str, tmp_path: Path, servers) -> None:  # type: ignore[no-untyped-def]
    protected, _ = servers
    closed = Server(lambda request: (200, {}, b""))
    closed.close()
    for url in (
        f"http://{USER}:{PASSWORD}@127.0.0.1:{protected.port}/missing.txt",  # 404
        f"http://{USER}:wrong-{PASSWORD}@127.0.0.1:{protected.port}/file.txt",  # 401
        f"http://{USER}:{PASSWORD}@127.0.0.1:{closed.port}/file.txt",  # connection refused
        f"http://{TOKEN}@127.0.0.1:{closed.port}/org/repo.git",  # a git remote with a token
        f"https://x-access-token:{TOKEN}@127.0.0.1:{closed.port}/org/repo.git#main",
    ):
        result = build(cli, tmp_path, f"FROM busybox\nADD {url} /x/\n", check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output and "Dockerfile:2" in result.stderr
        assert PASSWORD not in output and TOKEN not in output, output


def test_a_refused_instruction_never_shows_its_credentials(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"https://{USER}:{PASSWORD}@example.invalid/a.txt"
    for line, says in ((f"ADD --checksum=sha256:0 {url} https://example.invalid/b /x/", "checksum"), (f"ADD --bogus {url} /x", "unknown flag")):
        result = build(cli, tmp_path, f"FROM busybox\n{line}\n", check=False)
        assert result.returncode != 0 and says in result.stderr
        assert "example.invalid/a.txt" in result.stderr and PASSWORD not in result.stdout + result.stderr


def test_credentials_are_not_sent_across_a_redirect(cli, busybox_image: str, tmp_path: Path, open_image, servers) -> None:  # type: ignore[no-untyped-def]
    protected, other = servers
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{protected.port}/elsewhere"
    build(cli, tmp_path, f"FROM busybox\nADD {url} /followed.txt\n", "-t", "redirected")
    assert open_image("redirected").read("/followed.txt") == "from the other origin\n"
    assert ("/elsewhere", basic(USER, PASSWORD)) in protected.seen
    assert other.seen == [("/file.txt", None)]


def bare_repository(tmp_path: Path) -> Path:
    """A directory holding ``repo.git``, one commit on main with hello.txt."""
    require_tool("git")
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "hello.txt").write_text("from a private repo\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    served = tmp_path / "served"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(served / "repo.git")], check=True)
    return served


def http_backend(request, served: Path):  # type: ignore[no-untyped-def]
    """Answer ``request`` with ``git http-backend`` (smart HTTP) for the repositories in ``served``."""
    path, _, query = request.path.partition("?")
    length = int(request.headers.get("Content-Length") or 0)
    env = {
        "PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(served), "GIT_HTTP_EXPORT_ALL": "1",
        "REQUEST_METHOD": request.command, "PATH_INFO": path, "QUERY_STRING": query,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
        "HTTP_CONTENT_ENCODING": request.headers.get("Content-Encoding", ""),
        "GIT_PROTOCOL": request.headers.get("Git-Protocol", ""), "REMOTE_USER": "t", "REMOTE_ADDR": "127.0.0.1",
    }
    body = request.rfile.read(length) if length else b""
    out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=True).stdout
    head, _, payload = out.partition(b"\r\n\r\n")
    status, headers = 200, {}
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(": ")
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers[name] = value
    return status, headers, payload


CHALLENGE = (401, {"WWW-Authenticate": 'Basic realm="git"'}, b"")


@pytest.fixture
def git_http_server(tmp_path: Path) -> Iterator[str]:
    """A repository served by ``git http-backend`` behind basic auth (TOKEN as the user name)."""
    served = bare_repository(tmp_path)
    server = Server(lambda request: http_backend(request, served) if request.headers.get("Authorization") == basic(TOKEN, "") else CHALLENGE)
    yield f"http://{TOKEN}@127.0.0.1:{server.port}/repo.git"
    server.close()


def test_a_git_remote_token_is_not_sent_across_a_redirect(tmp_path: Path) -> None:
    """The first origin asks for the token, then redirects; the second serves the refs
    but asks again for the pack: the token must not go there."""
    import trio

    from pybuild.dag._copy import git_source
    from pybuild.errors import PybuildError
    from pybuild.oci import RemoteFetcher

    served = bare_repository(tmp_path)
    other = Server(lambda request: http_backend(request, served) if request.command == "GET" else CHALLENGE)
    first = Server(lambda request: CHALLENGE if request.headers.get("Authorization") is None else (
        302, {"Location": f"http://127.0.0.1:{other.port}{request.path}"}, b""))
    try:
        dest = tmp_path / "dest"
        dest.mkdir()
        with pytest.raises(PybuildError) as caught:
            trio.run(RemoteFetcher().git, git_source(f"http://{TOKEN}@127.0.0.1:{first.port}/repo.git#main"), dest)
        assert TOKEN not in str(caught.value)
        assert any(seen == basic(TOKEN, "") for _, seen in first.seen)
        assert other.seen and [seen for _, seen in other.seen if seen is not None] == [], other.seen
    finally:
        first.close()
        other.close()


def test_a_git_remote_token_is_used_and_never_shown_or_stored(cli, busybox_image: str, tmp_path: Path, root: Path, open_image, git_http_server: str) -> None:  # type: ignore[no-untyped-def]
    result = build(cli, tmp_path, f"FROM busybox\nADD --keep-git-dir=true {git_http_server}#main /src/\n", "-t", "private")
    image = open_image("private")
    assert image.read("/src/hello.txt") == "from a private repo\n"
    assert TOKEN not in image.read("/src/.git/config")
    assert TOKEN not in result.stdout + result.stderr
    assert TOKEN not in cli("history", "--no-trunc", "private").stdout
    assert files_holding(root, TOKEN) == []
