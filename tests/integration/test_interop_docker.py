"""pybuild's archives in Debian's docker, and docker's in pybuild.

Every image loaded into docker gets a name unique to the test, and that
name is removed afterwards (the image with it, unless something else in
the daemon names it too).
"""

from __future__ import annotations

import json
import tarfile
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
        "RUN mkdir -p /srv && echo 'hello from pybuild' > /srv/msg && ln -s msg /srv/link && ln /srv/msg /srv/hard "
        "&& rm /etc/group\n"
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
    # Docker sizes a layer it unpacks as its graph driver applies it; pybuild
    # sizes its base (imported) as overlay2's native diff does and its own
    # layers as BuildKit does (see test_store.py): the difference is the
    # symlink targets the two measures disagree on.
    links = _symlink_target_bytes(root, app, tmp_path)
    base_links, built_links = sum(links[: _layer_count(root, "busybox")]), sum(links[_layer_count(root, "busybox") :])
    assert built_links == len("msg") and base_links > 0  # the Dockerfile's one symlink; busybox's applets
    docker_size = int(docker("image", "inspect", "-f", "{{.Size}}", app).stdout)
    pybuild_size = int(_pybuild_value(root, "{{.Size}}", app))
    assert docker_size == (pybuild_size + built_links if _unpacked_by_their_files() else pybuild_size - base_links)
    shown = "{{.Repository}}:{{.Tag}} {{.ID}}"
    assert docker("images", "--format", shown, app).stdout == run_pybuild("images", "--format", shown, app, root=root).stdout
    docker("rmi", app)


def _unpacked_by_their_files() -> bool:
    """Whether dockerd sizes a layer it unpacks (load, pull, import) by its files'
    lstat sizes, symlink targets included -- overlay2 with native diff, whose
    ApplyDiff returns pkg/directory's Size (moby daemon/graphdriver/overlay2/
    overlay.go) -- or, with a naive diff (a kernel with overlay's redirect_dir,
    other drivers), by pkg/archive UnpackLayer's sum of the tar headers' sizes
    (moby pkg/archive/diff.go), symlinks 0, as a build does."""
    info = json.loads(docker("info", "--format", "{{json .}}").stdout)
    return info.get("Driver") == "overlay2" and ["Native Overlay Diff", "true"] in (info.get("DriverStatus") or [])


def _symlink_bytes(tar_path: Path) -> int:
    with tarfile.open(tar_path) as tar:
        return sum(len(member.linkname) for member in tar if member.issym())


def _layer_count(root: Path, name: str) -> int:
    return len(json.loads(_pybuild_value(root, "{{json .RootFS.Layers}}", name)))


def _symlink_target_bytes(root: Path, name: str, tmp_path: Path) -> list[int]:
    """The lengths of the symlink targets in each layer of the image (bottom first),
    read from its `pybuild save` archive (Docker's format)."""
    archive = tmp_path / "for-symlinks.tar"
    run_pybuild("save", "--format", "docker", "-o", str(archive), name, root=root)
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        out = []
        for path in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(path), mode="r:*") as layer:
                out.append(sum(len(member.linkname) for member in layer if member.issym()))
    return out


def test_an_image_built_here_is_sized_as_buildkit_sizes_it(
    root: Path, busybox_tar: Path, tmp_path: Path, docker_names: list[str], require_root: None
) -> None:
    """The same Dockerfile built by BuildKit in dockerd 20.10 and by pybuild, on
    the same imported base, has the same Size in `images`/`inspect` and the same
    size per history step.  BuildKit registers a built layer with the tar
    headers' sizes (moby builder/builder-next/adapters/snapshot/layer.go
    EnsureLayer -> layer/migration.go ChecksumForGraphID, packSizeCounter):
    file bytes, a hard link once, a symlink, directory (opaque too) or whiteout
    0 -- while an imported layer is sized by overlay2's ApplyDiff (pkg/directory
    Size: lstat sizes, symlinks by their target's length)."""
    base = f"pybuild-test-{uuid.uuid4().hex[:10]}/sized-base:1"
    built = base.replace("/sized-base:1", "/sized:1")
    docker_names += [built, base]
    docker("import", str(busybox_tar), base)
    run_pybuild("import", str(busybox_tar), base, root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base}\n"
        "RUN ln -s /0123456789 /x && printf 0123456789 > /ten && ln /ten /tenlink && mkdir -p /d/e "
        "&& ln -s .. /d/e/up && rm /etc/group && rm -rf /home && mkdir /home && printf 12345 > /home/five\n"
    )
    result = docker("build", "-q", "--network=none", "-t", built, str(context), check=False, env={"DOCKER_BUILDKIT": "1"})
    if result.returncode != 0:
        peer_unavailable(f"docker build (BuildKit) does not work here: {result.stderr[-500:]}", PACKAGES["docker"])
    run_pybuild("build", "-q", "--network=none", "-t", built, str(context), root=root)
    steps = "{{.Size}} {{.CreatedBy}}"
    ours = run_pybuild("history", "-H", "false", "--no-trunc", "--format", steps, built, root=root).stdout.splitlines()
    theirs = docker("history", "--human=false", "--no-trunc", "--format", steps, built).stdout.splitlines()
    assert ours[:-1] == theirs[:-1]  # the build's steps
    assert ours[0].startswith("15 ")  # files once (not the hard link); no symlink target, directory or whiteout
    # the imported base: a naive-diff Docker leaves busybox's symlink targets out, as a build does
    base_links = 0 if _unpacked_by_their_files() else _symlink_bytes(busybox_tar)
    for name in (base, built):
        assert int(_pybuild_value(root, "{{.Size}}", name)) - base_links == int(docker("image", "inspect", "-f", "{{.Size}}", name).stdout)
    if not base_links:
        shown = "{{.Repository}}:{{.Tag}} {{.Size}}"
        assert run_pybuild("images", "--format", shown, built, root=root).stdout == docker("images", "--format", shown, built).stdout


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
    # pybuild sizes the loaded layers as overlay2's native diff does; a naive-diff
    # Docker sized its imported base without busybox's symlink targets
    naive_gap = 0 if _unpacked_by_their_files() else _symlink_bytes(busybox_tar)
    assert int(_pybuild_value(root, "{{.Size}}", built)) - naive_gap == int(docker("image", "inspect", "-f", "{{.Size}}", built).stdout)
    size = "" if naive_gap else "\\t{{.Size}}"
    table = "table {{.ID}}\\t{{.CreatedBy}}" + size + "\\t{{.Comment}}"
    assert run_pybuild("history", "--format", table, built, root=root).stdout == docker("history", "--format", table, built).stdout
    shown = "{{.Repository}} {{.Tag}} {{.ID}}" + size.replace("\\t", " ")
    assert run_pybuild("images", "--format", shown, built, root=root).stdout == docker("images", "--format", shown, built).stdout
    # and pybuild builds on it
    (context / "Dockerfile").write_text(f"FROM {built}\nRUN cat /built.txt > /copied.txt\n")
    run_pybuild("build", "-q", "--network=none", "-t", "on-docker:1", str(context), root=root)
    layers = run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", "on-docker:1", root=root).stdout
    assert run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", built, root=root).stdout.strip()[:-1] in layers
