"""The tutorial flow as an ordinary user (issue 17's "Done when"): import a base, a multi-stage
build with ``USER 1000``, ``RUN chown``, a cache mount and a secret; ``run -d -p``, ``exec``,
``diff``, ``commit``; ``save`` and ``docker load`` of the result; push to and pull from a local
docker-registry.  Everything runs as ``pybuild-test`` with its default root; only ``docker``
(the daemon is root's) and the checks on the host run as root.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .conftest import AsUser, files_owned_by, saved_image, subordinate_range

DOCKERFILE = """\
FROM busybox AS build
RUN --mount=type=cache,target=/cache sh -c 'echo run >> /cache/runs && cp /cache/runs /build-runs'
RUN --mount=type=secret,id=token sh -c 'test "$(cat /run/secrets/token)" = s3cret-token && echo used > /secret-used'
RUN mkdir -p /out && echo program > /out/app

FROM busybox
COPY --from=build /out/app /srv/app
COPY --from=build /secret-used /srv/secret-used
RUN mkdir -p /home/app /www && chown 1000:1000 /home/app && touch /owned && chown 2000:3000 /owned
RUN echo '<h1>rootless</h1>' > /www/index.html
USER 1000:1000
RUN id -u > /home/app/ids && id -g >> /home/app/ids && touch /home/app/made
USER root
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch(port: int) -> str:
    """The page on 127.0.0.1:port, waiting (by polling, no timed assertion) for httpd to listen."""
    for _ in range(100):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing answers on 127.0.0.1:{port}")


def build_app(user: AsUser) -> str:
    context = user.dir / "app"
    user.write("app/Dockerfile", DOCKERFILE)
    secret = user.write("token", "s3cret-token", mode=0o600)
    out = user.pybuild(
        "build", "-q", "--network=none", "--secret", f"id=token,src={secret}", "-t", "app:1", str(context)
    )  # fmt: skip
    return out.stdout.strip()


def test_the_tutorial_flow_as_an_ordinary_user(user: AsUser, user_busybox: str, docker_registry, docker_env: dict[str, str]) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    image_id = build_app(user)
    assert image_id.startswith("sha256:")
    assert user.root.is_dir()  # the default root of a non-root user: $XDG_DATA_HOME/pybuild

    # --- the image records the ids as the container saw them ------------------------------
    archive = user.dir / "app.tar"
    user.pybuild("save", "-o", str(archive), "app:1")
    files, everything = saved_image(archive)
    assert (files["/home/app"].uid, files["/home/app"].gid) == (1000, 1000)
    assert (files["/home/app/made"].uid, files["/home/app/made"].gid) == (1000, 1000)
    assert files["/home/app/ids"].data == b"1000\n1000\n"
    assert (files["/owned"].uid, files["/owned"].gid) == (2000, 3000)
    assert (files["/srv/app"].uid, files["/srv/app"].data) == (0, b"program\n")
    assert files["/srv/secret-used"].data == b"used\n"  # the secret was there for the step ...
    assert b"s3cret-token" not in everything  # ... and in no layer, config or history
    assert not [name for name in files if name.startswith("/cache")]

    # --- the cache mount and the snapshots on the host ------------------------------------
    account = user.account
    runs = [p for p in (user.root / "cache-mounts").rglob("runs")]
    assert len(runs) == 1 and runs[0].read_text() == "run\n"
    assert os.lstat(runs[0]).st_uid == account.uid  # container root is the user on the host
    subordinate = subordinate_range(account.name)
    assert subordinate is not None
    shifted = files_owned_by(user.dir, subordinate)
    assert shifted  # /home/app is 1000 in the container, a subordinate id on the host ...
    allowed = (user.root / "snapshots", user.root / "containers")
    assert [p for p in shifted if not any(p.is_relative_to(a) for a in allowed)] == []  # ... only in snapshots

    # --- a container: run -d -p, exec, diff, commit ---------------------------------------
    port, port2 = free_port(), free_port()
    user.pybuild("run", "-d", "--name", "web", "-p", f"{port}:80", "app:1")
    try:
        assert fetch(port) == "<h1>rootless</h1>\n"
        user.pybuild("exec", "web", "sh", "-c", "echo '<h1>changed</h1>' > /www/index.html")
        assert fetch(port) == "<h1>changed</h1>\n"
        assert user.pybuild("exec", "-u", "1000", "web", "id", "-u").stdout == "1000\n"
        assert user.pybuild("diff", "web").stdout == "C /www\nC /www/index.html\n"
        committed = user.pybuild("commit", "web", "app:2").stdout.strip()
        assert committed.startswith("sha256:") and committed != image_id
        user.pybuild("run", "-d", "--name", "web2", "-p", f"{port2}:80", "app:2")
        assert fetch(port2) == "<h1>changed</h1>\n"
    finally:
        user.pybuild("stop", "-t", "1", "web", "web2", check=False)
        user.pybuild("rm", "web", "web2", check=False)
    assert user.pybuild("ps", "-a").stdout.strip().count("\n") == 0

    # --- save, and docker (root's daemon) loads it with the same ID -----------------------
    loaded = subprocess.run(
        ["docker", "load", "-i", str(archive)], env=docker_env, capture_output=True, text=True, check=True
    )  # fmt: skip
    assert "app:1" in loaded.stdout
    inspected = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Id}}", "app:1"], env=docker_env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    assert inspected.stdout.strip() == image_id
    subprocess.run(["docker", "rmi", "app:1"], env=docker_env, capture_output=True)

    # --- push to the registry, and pull back into a fresh root ----------------------------
    name = f"{docker_registry.host}/rootless/app:1"
    user.pybuild("tag", "app:1", name)
    user.pybuild("push", name)
    other_data = user.dir / "other-data"
    other_data.mkdir()
    os.chown(other_data, account.uid, account.gid)
    elsewhere = {"XDG_DATA_HOME": str(other_data)}
    user.pybuild("pull", name, env=elsewhere)
    pulled = user.pybuild("inspect", "-f", "{{.Id}}", name, env=elsewhere).stdout.strip()
    assert pulled == image_id

