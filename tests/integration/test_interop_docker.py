"""pybuild's archives in Debian's docker, and docker's in pybuild.

Every image loaded into docker gets a name unique to the test, and that
name is removed afterwards (the image with it, unless something else in
the daemon names it too).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .._peers import PACKAGES, peer_unavailable
from .test_images_support import docker, dockerd, run_pybuild  # noqa: F401 - dockerd is a fixture

pytestmark = pytest.mark.peers


@pytest.fixture
def docker_names(dockerd: None) -> Iterator[list[str]]:  # noqa: F811
    """Names the test gives images in docker; each is removed at the end."""
    names: list[str] = []
    yield names
    for name in names:
        if docker("image", "inspect", name, check=False).returncode == 0:
            docker("rmi", name, check=False)


@pytest.fixture
def app(root: Path, busybox_tar: Path, tmp_path: Path, require_root: None) -> str:
    run_pybuild("import", str(busybox_tar), "busybox:latest", root=root)
    context = tmp_path / "app"
    context.mkdir()
    (context / "Dockerfile").write_text(
        "FROM busybox\n"
        "RUN mkdir -p /srv && echo 'hello from pybuild' > /srv/msg && ln -s msg /srv/link && rm /etc/group\n"
        'CMD ["cat", "/srv/link"]\n'
    )
    name = f"pybuild-test-{uuid.uuid4().hex[:10]}/app:1"
    run_pybuild("build", "-q", "--network=none", "-t", name, str(context), root=root)
    return name


def _pybuild_value(root: Path, template: str, name: str) -> str:
    return run_pybuild("inspect", "-f", template, name, root=root).stdout.strip()


@pytest.mark.parametrize("archive_format", ["docker", "oci"])
def test_archives_load_and_run_in_docker(root: Path, app: str, tmp_path: Path, docker_names: list[str], archive_format: str) -> None:
    archive = tmp_path / f"app-{archive_format}.tar"
    docker_names.append(app)
    run_pybuild("save", "--format", archive_format, "-o", str(archive), app, root=root)
    loaded = docker("load", "-i", str(archive))
    assert f"Loaded image: {app}" in loaded.stdout
    assert docker("run", "--rm", "--network", "none", app).stdout == "hello from pybuild\n"
    assert docker("run", "--rm", "--network", "none", app, "cat", "/etc/group", check=False).returncode != 0
    assert docker("image", "inspect", "-f", "{{.Id}}", app).stdout.strip() == _pybuild_value(root, "{{.Id}}", app)
    # Docker measures the image as pybuild does.
    assert docker("image", "inspect", "-f", "{{.Size}}", app).stdout.strip() == _pybuild_value(root, "{{.Size}}", app)
    shown = "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}"
    assert docker("images", "--format", shown, app).stdout == run_pybuild("images", "--format", shown, app, root=root).stdout
    docker("rmi", app)


def test_docker_images_load_into_pybuild_with_the_same_id_and_history(
    root: Path, busybox_tar: Path, tmp_path: Path, docker_names: list[str], require_root: None
) -> None:
    base = f"pybuild-test-{uuid.uuid4().hex[:10]}/base:1"
    built = base.replace("/base:1", "/built:1")
    docker_names += [built, base]
    docker("import", str(busybox_tar), base)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base}\nLABEL org.example.k=v\nRUN echo built > /built.txt\nENV A=1\n")
    result = docker("build", "-q", "--network=none", "-t", built, str(context), check=False, env={"DOCKER_BUILDKIT": "1"})
    if result.returncode != 0:
        peer_unavailable(f"docker build (BuildKit) does not work here: {result.stderr[-500:]}", PACKAGES["docker"])
    archive = tmp_path / "docker-saved.tar"
    docker("save", "-o", str(archive), built)
    loaded = run_pybuild("load", "-i", str(archive), root=root).stdout
    assert loaded == f"Loaded image: {built}\n"
    assert _pybuild_value(root, "{{.Id}}", built) == docker("image", "inspect", "-f", "{{.Id}}", built).stdout.strip()
    table = "table {{.ID}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}"
    assert run_pybuild("history", "--format", table, built, root=root).stdout == docker("history", "--format", table, built).stdout
    shown = "{{.Repository}} {{.Tag}} {{.ID}} {{.Size}}"
    assert run_pybuild("images", "--format", shown, built, root=root).stdout == docker("images", "--format", shown, built).stdout
    # and pybuild builds on it
    (context / "Dockerfile").write_text(f"FROM {built}\nRUN cat /built.txt > /copied.txt\n")
    run_pybuild("build", "-q", "--network=none", "-t", "on-docker:1", str(context), root=root)
    layers = run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", "on-docker:1", root=root).stdout
    assert run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", built, root=root).stdout.strip()[:-1] in layers
