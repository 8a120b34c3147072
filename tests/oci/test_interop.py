"""The archives pybuild writes, read by real consumers: docker load/run, skopeo, umoci.

The image is the busybox rootfs plus one layer that adds /x, deletes
/etc/os-release (whiteout) and replaces /var/www (opaque directory).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pybuild.oci._archive import MemoryBlobSource, read_archive, write_docker_archive, write_oci_archive
from pybuild.oci._formats import Manifest
from pybuild.oci._tar_flatten import flatten_into

from .images import EXTRA_CONTENT, build_image, extra_layer
from .layer_trees import describe

pytestmark = [pytest.mark.peers, pytest.mark.root]

DOCKER = "/usr/bin/docker"


# docker_env (tests/conftest.py): the running docker daemon, or one started for the session.


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path):
    if os.geteuid() != 0:
        pytest.skip("needs root (whiteout devices, trusted xattrs)")
    tmp = tmp_path_factory.mktemp("interop")
    layer = extra_layer(tmp / "extra")
    source = MemoryBlobSource()
    tag = f"pybuild-test/interop:{secrets.token_hex(4)}"
    img = build_image(source, [busybox_rootfs, layer], names=(tag,))
    expected = tmp / "expected"
    flatten_into([layer, busybox_rootfs], expected)
    return source, img, tag, expected, tmp


def docker(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([DOCKER, *args], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def loaded(docker_env: dict[str, str]) -> Iterator[list[str]]:
    """Names of images a test loaded, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run([DOCKER, "rmi", "-f", name], env=docker_env, capture_output=True)


def check_container(env: dict[str, str], tag: str) -> None:
    assert docker(env, "run", "--rm", "--network=host", tag, "cat", "/x") == EXTRA_CONTENT
    probe = "test -e /etc/os-release && echo present || echo gone; ls /var/www; test -x /bin/busybox && echo busybox"
    assert docker(env, "run", "--rm", "--network=host", tag, "sh", "-c", probe).split() == ["gone", "index.html", "busybox"]


@pytest.mark.parametrize("writer", [write_docker_archive, write_oci_archive])
def test_docker_loads_and_runs_it(docker_env, loaded, image, writer) -> None:
    source, img, tag, _, tmp = image
    path = tmp / f"{writer.__name__}.tar"
    with open(path, "wb") as out:
        writer(out, source, [img])
    loaded.append(tag)
    output = docker(docker_env, "load", "-i", str(path))
    assert f"Loaded image: {tag}" in output
    check_container(docker_env, tag)
    # docker computed the same diffIDs (it checks them while loading) and kept our config.
    inspected = json.loads(docker(docker_env, "image", "inspect", tag))[0]
    config = read_archive(path).images[0].config
    assert inspected["RootFS"]["Layers"] == list(config.diff_ids)
    assert inspected["Config"]["Cmd"] == ["sh"]


def test_we_read_what_docker_save_writes(docker_env, loaded, image) -> None:
    source, img, tag, _, tmp = image
    path = tmp / "ours.tar"
    with open(path, "wb") as out:
        write_docker_archive(out, source, [img])
    loaded.append(tag)
    docker(docker_env, "load", "-i", str(path))
    saved = tmp / "saved.tar"
    docker(docker_env, "save", "-o", str(saved), tag)
    with read_archive(saved) as archive:
        (image_from_docker,) = archive.images
        assert image_from_docker.names == (tag,)
        ours = read_archive(path).images[0]
        assert image_from_docker.config.diff_ids == ours.config.diff_ids
        assert image_from_docker.config.config == ours.config.config


@pytest.fixture(scope="module")
def oci_archive(image) -> Path:
    source, img, _, _, tmp = image
    path = tmp / "oci.tar"
    with open(path, "wb") as out:
        write_oci_archive(out, source, [img])
    return path


def skopeo_inspect(target: str) -> dict:
    result = subprocess.run(["skopeo", "inspect", target], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.tool("skopeo")
def test_skopeo_inspects_both_archives(image, oci_archive: Path) -> None:
    source, img, tag, _, tmp = image
    manifest = Manifest.from_json(source.blobs[img.descriptor.digest])
    info = skopeo_inspect(f"oci-archive:{oci_archive}")
    assert info["Layers"] == [layer.digest for layer in manifest.layers]
    assert info["Digest"] == img.descriptor.digest
    assert info["Os"] == "linux" and info["Env"] == ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    assert skopeo_inspect(f"oci-archive:{oci_archive}:{tag.split(':')[1]}")["Digest"] == img.descriptor.digest
    docker_archive = tmp / "for-skopeo.tar"
    with open(docker_archive, "wb") as out:
        write_docker_archive(out, source, [img])
    info = skopeo_inspect(f"docker-archive:{docker_archive}")
    assert len(info["Layers"]) == 2 and info["RepoTags"] == []  # skopeo shows the name in the reference, not here


@pytest.mark.tool("umoci")
def test_umoci_unpacks_the_same_rootfs(image, oci_archive: Path, tmp_path: Path) -> None:
    _, _, tag, expected, _ = image
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(oci_archive) as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    result = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{tag.split(':')[1]}", str(bundle)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rootfs = describe(bundle / "rootfs")
    wanted = describe(expected)
    assert sorted(rootfs) == sorted(wanted)
    for path, record in wanted.items():
        assert rootfs[path] == record, path
