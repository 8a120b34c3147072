"""A multi-platform image from pybuild read by the real consumers (issue 16's interop).

examples/multiarch's busybox variant (``--target shell``, a base per target) is built for
linux/amd64 and linux/arm64, then:

- pushed to Debian's docker-registry on 127.0.0.1: ``skopeo inspect --raw`` lists both
  platforms, ``skopeo copy --override-arch arm64`` gets the arm64 image, and ``docker pull
  --platform linux/arm64`` + ``docker run --platform linux/arm64 ... uname -m`` says aarch64;
- written with ``-o type=oci``: umoci unpacks the arm64 manifest from the archive.

Every name given to an image in docker is removed at the end of its test.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from .._peers import require_tool
from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .conftest import pybuild
from .test_images_support import docker, dockerd  # noqa: F401 - dockerd is a fixture
from .test_interop_docker import docker_names  # noqa: F401 - removes the names a test gives images in docker
from .test_multiarch import BOTH, MULTIARCH, busybox_bases, elf_machine, gcc_cross_image, gcc_cross_tar  # noqa: F401 - fixtures

pytestmark = pytest.mark.peers

GREETING_ARM64 = "Hello from aarch64! (compiled on x86_64)\n"


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def shell_image(root: Path, gcc_cross_image: str, busybox_bases: tuple[str, str]) -> str:  # noqa: F811
    """examples/multiarch --target shell for both platforms, tagged multiarch:shell."""
    pybuild("build", "-q", "--network=none", "--platform", BOTH, "--target", "shell", "-t", "multiarch:shell", str(MULTIARCH), root=root)
    return "multiarch:shell"


@pytest.fixture
def pushed(root: Path, shell_image: str, docker_registry) -> str:  # noqa: F811
    """The index pushed to the session's registry; its name there."""
    require_tool("skopeo")
    name = f"{docker_registry.host}/multiarch-{uuid.uuid4().hex[:10]}/greeting:1"
    pybuild("tag", shell_image, name, root=root)
    pybuild("push", name, root=root)
    return name


def platforms_of(index: dict[str, Any]) -> list[str]:
    return sorted(f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"])


def test_skopeo_reads_the_pushed_index_and_copies_the_arm64_image(pushed: str, tmp_path: Path) -> None:
    """``buildx build --platform a,b --push`` pushes each manifest, then an index naming them
    with their platforms (BuildKit's exporter/containerimage/writer.go; the OCI image-spec's
    image-index.md): skopeo sees both and ``--override-arch`` picks one, as containerd's
    platform matcher would."""
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed}"))
    assert raw["mediaType"] in ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
    assert platforms_of(raw) == ["linux/amd64", "linux/arm64"]

    layout = tmp_path / "layout"
    skopeo("copy", "--quiet", "--override-arch", "arm64", "--src-tls-verify=false", f"docker://{pushed}", f"oci:{layout}:arm64")
    config = json.loads(skopeo("inspect", "--config", f"oci:{layout}:arm64"))
    assert (config["os"], config["architecture"]) == ("linux", "arm64")
    assert config["config"]["Cmd"] == ["greeting"]
    [arm64] = [m for m in raw["manifests"] if m["platform"]["architecture"] == "arm64"]
    copied = json.loads(skopeo("inspect", "--raw", f"oci:{layout}:arm64"))
    assert copied["config"]["digest"] == json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{pushed.rsplit(':', 1)[0]}@{arm64['digest']}"))["config"]["digest"]


def test_docker_pulls_and_runs_the_arm64_image_of_the_pushed_index(pushed: str, docker_names: list[str], qemu_handlers: None) -> None:
    """``docker pull --platform linux/arm64`` of an index takes its arm64 manifest and
    ``docker run --platform linux/arm64`` runs it through the kernel's binfmt_misc handler
    (moby's distribution/pull_v2.go picks the manifest matching the platform)."""
    docker_names.append(pushed)
    docker("pull", "-q", "--platform", "linux/arm64", pushed)
    assert docker("image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", pushed).stdout.strip() == "linux/arm64"
    uname = docker("run", "--rm", "--network", "none", "--platform", "linux/arm64", pushed, "uname", "-m")
    assert uname.stdout == "aarch64\n"
    assert docker("run", "--rm", "--network", "none", "--platform", "linux/arm64", pushed).stdout == GREETING_ARM64


def test_umoci_unpacks_the_arm64_manifest_of_the_oci_archive(root: Path, shell_image: str, tmp_path: Path) -> None:
    """``-o type=oci`` of several platforms writes the index (BuildKit's exporter/oci): its
    index.json names the image index, which names a manifest per platform.  umoci unpacks one
    manifest by name, so the arm64 one is given a name in index.json, as ``umoci tag`` would."""
    require_tool("umoci")
    archive = tmp_path / "multiarch.tar"
    pybuild("build", "-q", "--network=none", "--platform", BOTH, "--target", "shell", "-o", f"type=oci,dest={archive}", str(MULTIARCH), root=root)
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")

    top = json.loads((layout / "index.json").read_text())
    [entry] = top["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = json.loads((layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_text())
    assert platforms_of(index) == ["linux/amd64", "linux/arm64"]
    [arm64] = [m for m in index["manifests"] if m["platform"]["architecture"] == "arm64"]
    top["manifests"].append({**arm64, "annotations": {"org.opencontainers.image.ref.name": "arm64"}})
    (layout / "index.json").write_text(json.dumps(top))

    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:arm64", str(bundle)], check=True, capture_output=True)
    rootfs = bundle / "rootfs"
    assert elf_machine(rootfs / "usr" / "local" / "bin" / "greeting") == "aarch64"
    assert elf_machine((rootfs / "bin" / "busybox")) == "aarch64"
    spec = json.loads((bundle / "config.json").read_text())
    assert spec["process"]["args"] == ["greeting"]
