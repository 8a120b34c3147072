"""pybuild's OCI archives read by skopeo and unpacked by umoci, to the build's filesystem."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.oci import ImageStore
from pybuild.oci._export_layers import LayerSettings
from pybuild.oci._export import export_oci_archive
from pybuild.oci._export_local import export_local

from .._peers import require_tools
from .test_images_support import run_pybuild

pytestmark = pytest.mark.peers

DOCKERFILE = """\
FROM busybox
RUN mkdir -p /srv/data /srv/opaque/old && echo one > /srv/data/a && chmod 600 /srv/data/a \\
 && ln /srv/data/a /srv/data/hard && ln -s data/a /srv/sym && echo gone > /srv/gone \\
 && echo two > /srv/data/b && ln /srv/data/b /srv/data/b2 \\
 && chown 1000:1000 /srv/data && touch /srv/opaque/old/file
RUN rm /srv/gone /etc/group && rm -rf /srv/opaque && mkdir /srv/opaque && echo new > /srv/opaque/new \\
 && printf '%s' x > /srv/data/a
CMD ["cat", "/srv/sym"]
"""


def describe(tree: Path) -> dict[str, tuple]:
    """Every path of a tree: type, permissions, owner, and content or link target."""
    out: dict[str, tuple] = {}
    for directory, dirs, files in os.walk(tree):
        for name in dirs + files:
            path = Path(directory) / name
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                what: object = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            else:
                what = None
            out[str(path.relative_to(tree))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what)
    return out


@pytest.fixture
def built(root: Path, busybox_tar: Path, tmp_path: Path, require_root: None) -> str:
    require_tools(["skopeo", "umoci"])
    run_pybuild("import", str(busybox_tar), "busybox:latest", root=root)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    run_pybuild("build", "-q", "--network=none", "-t", "oci-interop:1", str(context), root=root)
    return "oci-interop:1"


def test_skopeo_and_umoci_read_the_oci_archive(root: Path, built: str, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    run_pybuild("save", "--format", "oci", "-o", str(archive), built, root=root)
    document = json.loads(run_pybuild("inspect", built, root=root).stdout)[0]
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], check=True, capture_output=True, text=True).stdout)
    config = json.loads(subprocess.run(["skopeo", "inspect", "--config", f"oci-archive:{archive}"], check=True, capture_output=True, text=True).stdout)
    assert config["rootfs"]["diff_ids"] == document["RootFS"]["Layers"]
    assert inspected["Architecture"] == document["Architecture"] and len(inspected["Layers"]) == 3

    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="tar")
    bundle = tmp_path / "bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:1", str(bundle)], check=True, capture_output=True)

    with Root.open(root) as pybuild_root:
        store = ImageStore(pybuild_root)
        expected = tmp_path / "expected"
        export_local(store, store.get(built), expected)
    unpacked = describe(bundle / "rootfs")
    assert unpacked == describe(expected)
    assert "etc/group" not in unpacked and "srv/gone" not in unpacked and "srv/opaque/old" not in unpacked
    assert unpacked["srv/data"][2:4] == (1000, 1000) and unpacked["srv/data/a"][1] == 0o600
    assert unpacked["srv/sym"][4] == "data/a"
    rootfs = bundle / "rootfs"
    assert os.stat(rootfs / "srv/data/b").st_ino == os.stat(rootfs / "srv/data/b2").st_ino  # hard links stay links
    # a hard link whose other name changed in a later layer was copied up, as overlayfs and Docker do
    assert (rootfs / "srv/data/a").read_text() == "x" and (rootfs / "srv/data/hard").read_text() == "one\n"


def test_a_zstd_oci_archive_is_read_by_skopeo(root: Path, built: str, tmp_path: Path) -> None:
    archive = tmp_path / "zstd.tar"
    with Root.open(root) as pybuild_root:
        store = ImageStore(pybuild_root)
        image = store.get(built)
        export_oci_archive(store, image, archive, [built], layers=LayerSettings("zstd", force=True))
    raw = json.loads(subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}"], check=True, capture_output=True, text=True).stdout)
    assert {layer["mediaType"] for layer in raw["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert raw["config"]["digest"] == image.id
    # skopeo can read every zstd blob back into a directory layout (it verifies digests)
    subprocess.run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"dir:{tmp_path / 'copy'}"], check=True, capture_output=True)
