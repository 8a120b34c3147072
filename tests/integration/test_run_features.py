"""RUN through whole builds: mounts, secrets, users, networks, daemons (issue 4)."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

SECRET = b"s3cr3t-value-that-must-not-leak-7f9a"


def build(cli, ctx: Path, dockerfile: str, *args: str, **kwargs):  # type: ignore[no-untyped-def]
    (ctx / "Dockerfile").write_text(dockerfile)
    return cli("build", "--progress=plain", *args, str(ctx), **kwargs)


def every_file_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]


def test_secrets_reach_the_step_and_nothing_else(cli, busybox_image: str, tmp_path: Path, root: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    secret_file = tmp_path / "token.txt"
    secret_file.write_bytes(SECRET)
    digest = hashlib.sha256(SECRET).hexdigest()
    result = build(
        cli, ctx,
        "FROM busybox\n"
        f"RUN --mount=type=secret,id=token sha256sum /run/secrets/token | grep -q {digest} && echo file-ok > /file-ok\n"
        f"RUN --mount=type=secret,id=token,env=TOKEN echo -n \"$TOKEN\" | sha256sum | grep -q {digest} && echo env-ok > /env-ok\n"
        "RUN --mount=type=secret,id=token,target=/etc/app/key ls -l /etc/app/key > /listing\n",
        "-t", "with-secret", "--secret", f"id=token,src={secret_file}",
    )
    image = open_image("with-secret")
    assert image.read("/file-ok") == "file-ok\n" and image.read("/env-ok") == "env-ok\n"
    assert image.read("/listing").startswith("-r--------")
    assert image.find("/run/secrets/token") is None and image.find("/etc/app/key") is None
    assert SECRET.decode() not in result.stderr + result.stdout
    # the bytes are in no blob, snapshot, index record, history entry or log line
    assert SECRET.decode() not in str(image.config)
    for path in every_file_under(root):
        assert SECRET not in path.read_bytes(), path


def test_secret_not_in_history_when_used_through_the_mount(cli, busybox_image: str, tmp_path: Path, root: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    secret_file = tmp_path / "token.txt"
    secret_file.write_bytes(SECRET)
    result = build(cli, ctx, "FROM busybox\nRUN --mount=type=secret,id=token cat /run/secrets/token | wc -c > /length\n",
                   "-t", "s2", "--secret", f"id=token,src={secret_file}")
    image = open_image("s2")
    assert image.read("/length").strip() == str(len(SECRET))
    assert SECRET.decode() not in str(image.config)
    assert SECRET.decode() not in result.stderr and SECRET.decode() not in result.stdout
    for path in every_file_under(root):
        assert SECRET not in path.read_bytes(), path


def test_missing_required_secret_is_an_error(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = build(cli, tmp_path, "FROM busybox\nRUN --mount=type=secret,id=absent,required=true true\n", check=False)
    assert result.returncode == 1 and "secret absent is required" in result.stderr


def test_cache_mount_persists_between_builds_and_stays_out_of_the_image(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    dockerfile = "FROM busybox\nARG N\nRUN --mount=type=cache,target=/var/cache/app sh -c 'echo run$N >> /var/cache/app/log; cat /var/cache/app/log > /seen'\n"
    build(cli, tmp_path, dockerfile, "-t", "c1", "--build-arg", "N=1")
    build(cli, tmp_path, dockerfile, "-t", "c2", "--build-arg", "N=2")
    assert open_image("c2").read("/seen") == "run1\nrun2\n"  # the cache mount kept the first build's file
    assert open_image("c2").find("/var/cache/app/log") is None


def test_bind_mounts_from_a_stage_and_the_context(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "data.txt").write_text("from the context\n")
    build(cli, tmp_path, (
        "FROM busybox AS tools\nRUN echo from-the-tools-stage > /tool.txt\n"
        "FROM busybox\n"
        "RUN --mount=type=bind,from=tools,source=/tool.txt,target=/mnt/tool.txt cat /mnt/tool.txt > /got-tool\n"
        "RUN --mount=type=bind,target=/ctx cat /ctx/data.txt > /got-data\n"
        "RUN --mount=type=bind,target=/ctx,rw echo scribble > /ctx/data.txt && cat /ctx/data.txt > /rw-view\n"
        "RUN --mount=type=tmpfs,target=/scratch,size=1m sh -c 'echo t > /scratch/t && grep -q \" /scratch tmpfs\" /proc/mounts' && echo tmpfs-ok > /tmpfs-ok\n"
    ), "-t", "mounts")
    image = open_image("mounts")
    assert image.read("/got-tool") == "from-the-tools-stage\n"
    assert image.read("/got-data") == "from the context\n"
    assert image.read("/rw-view") == "scribble\n"
    assert (tmp_path / "data.txt").read_text() == "from the context\n"  # rw writes were discarded
    assert image.read("/tmpfs-ok") == "tmpfs-ok\n"
    assert image.find("/ctx") is None and image.find("/scratch/t") is None


def test_user_and_background_daemons(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, tmp_path, (
        "FROM busybox\n"
        "USER 1000:1000\nRUN id > /tmp/id-numeric\n"
        "USER app\nRUN id > /tmp/id-named\n"
        "USER root\nRUN (sleep 1000 &) ; echo started > /daemon\n"
    ), "-t", "users")
    image = open_image("users")
    assert image.read("/tmp/id-numeric").startswith("uid=1000(app) gid=1000(app)")
    assert image.read("/tmp/id-named") == "uid=1000(app) gid=1000(app) groups=2000(extra)\n"  # as BuildKit prints it
    assert image.read("/daemon") == "started\n"


@pytest.fixture
def host_service():  # type: ignore[no-untyped-def]
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            # read the request first: closing with it unread makes the kernel reset the connection
            with conn:
                try:
                    conn.settimeout(5)
                    request = b""
                    while b"\r\n\r\n" not in request and (chunk := conn.recv(4096)):
                        request += chunk
                    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nhost-service\n")
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_networks(cli, busybox_image: str, tmp_path: Path, open_image, host_service: int) -> None:  # type: ignore[no-untyped-def]
    url = f"http://127.0.0.1:{host_service}/"
    build(cli, tmp_path, (
        "FROM busybox\n"
        f"RUN --network=none sh -c 'timeout 5 wget -q -O- {url} > /none.txt 2>&1; echo $? > /none.code'\n"
        f"RUN sh -c 'timeout 5 wget -q -O- {url} > /default.txt 2>&1; echo $? > /default.code'\n"
        f"RUN --network=host wget -q -O- {url} > /host.txt\n"
    ), "-t", "net", "--allow", "network.host")
    image = open_image("net")
    assert image.read("/none.code").strip() != "0"
    assert image.read("/default.code").strip() != "0"  # the host's loopback is out of reach
    assert image.read("/host.txt") == "host-service\n"
    refused = build(cli, tmp_path, f"FROM busybox\nRUN --network=host wget -q -O- {url}\n", check=False)
    assert refused.returncode == 1 and "--allow network.host" in refused.stderr


def test_cache_mount_seeded_from_a_stage(cli, busybox_image: str, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    build(cli, tmp_path, (
        "FROM busybox AS seed\nRUN mkdir -p /seed && echo seeded > /seed/file\n"
        "FROM busybox\n"
        "RUN --mount=type=cache,id=seeded-cache,target=/c,from=seed,source=/seed cat /c/file > /got\n"
    ), "-t", "seeded")
    assert open_image("seeded").read("/got") == "seeded\n"


def test_step_timeout_and_memory_limit(cli, busybox_image: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    slow = build(cli, tmp_path, "FROM busybox\nRUN sleep 30\n", "--step-timeout", "1", check=False)
    assert slow.returncode == 1 and "timed out" in slow.stderr
    # a 200 MB string in a 64 MB step: the kernel's OOM killer ends it
    allocate = "FROM busybox\nRUN awk 'BEGIN { s = sprintf(\"%200000000s\", \"\"); print length(s) }'\n"
    hungry = build(cli, tmp_path, allocate, "--memory", "64m", check=False)
    assert hungry.returncode == 1 and "did not complete successfully" in hungry.stderr
    fine = build(cli, tmp_path, allocate, check=False)
    assert fine.returncode == 0 and "200000000" in fine.stderr
