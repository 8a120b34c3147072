"""A multi-platform result (a stored image index) written to each kind of --output.

BuildKit's rules: the oci exporter writes the index into the layout
(moby/buildkit exporter/oci/export.go), the docker exporter refuses an index
("docker exporter does not currently support exporting manifest lists", the
same file), the local and tar exporters split the platforms into
``linux_arm64/``-style directories (exporter/local/export.go: the platform
with ``/`` replaced by ``_``), and a push sends each manifest, then the index
(exporter/containerimage/export.go pushes the index by its tag last).
"""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
import trio

from pybuild.cache import Root
from pybuild.errors import ImageError
from pybuild.oci import ImageStore, StoredIndex, export_outputs, parse_output
from pybuild.oci._export_local import platform_dir

from .conftest import RunningRegistry
from .test_formats import schema_valid
from .test_store_index import platform_image


@pytest.fixture
def store(tmp_path: Path, require_root: None) -> ImageStore:
    root = Root.open(tmp_path / "root")
    yield ImageStore(root)
    root.close()


@pytest.fixture
def index(store: ImageStore) -> StoredIndex:
    amd64 = platform_image(store, "amd64", {"etc/arch": b"amd64\n"})
    arm64 = platform_image(store, "arm64", {"etc/arch": b"arm64\n"})
    armv7 = platform_image(store, "arm", {"etc/arch": b"armv7\n"}, variant="v7")
    return store.add_index([amd64, arm64, armv7], ["multi:1"])


def export(store: ImageStore, index: StoredIndex, *outputs: str, **kw) -> list:  # type: ignore[no-untyped-def]
    return trio.run(lambda: export_outputs(store, index, [parse_output(o) for o in outputs], tags=["multi:1"], **kw))


def test_local_output_writes_one_directory_per_platform(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    """BuildKit's platform-split naming: linux/arm/v7 -> linux_arm_v7 (exporter/local/export.go)."""
    dest = tmp_path / "out"
    export(store, index, f"type=local,dest={dest}")
    assert sorted(p.name for p in dest.iterdir()) == ["linux_amd64", "linux_arm64", "linux_arm_v7"]
    assert (dest / "linux_arm64" / "etc" / "arch").read_text() == "arm64\n"
    assert (dest / "linux_arm_v7" / "etc" / "arch").read_text() == "armv7\n"


def test_a_symlink_in_dest_named_like_a_platform_is_replaced_not_followed(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    """Nothing is written outside dest: a planted link is replaced by the platform's directory."""
    dest, outside = tmp_path / "out", tmp_path / "outside"
    dest.mkdir()
    outside.mkdir()
    (dest / "linux_arm64").symlink_to(outside)
    export(store, index, f"type=local,dest={dest}")
    assert not (dest / "linux_arm64").is_symlink() and (dest / "linux_arm64" / "etc" / "arch").read_text() == "arm64\n"
    assert list(outside.iterdir()) == []


def test_tar_output_puts_each_platform_under_its_directory(store: ImageStore, index: StoredIndex) -> None:
    out = io.BytesIO()
    export(store, index, "type=tar,dest=-", stdout=out)
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        names = tar.getnames()
        assert tar.extractfile("linux_amd64/etc/arch").read() == b"amd64\n"  # type: ignore[union-attr]
        top = tar.getmember("linux_arm64")
        assert top.isdir() and top.mode & 0o777 == 0o755 and top.mtime == 0
    assert {n.split("/")[0] for n in names} == {"linux_amd64", "linux_arm64", "linux_arm_v7"}


def test_docker_output_of_several_platforms_is_refused_before_anything_is_written(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    """BuildKit's docker exporter refuses manifest lists (exporter/oci/export.go); every
    output is checked first, so the local output before it writes nothing either."""
    with pytest.raises(ImageError, match="docker exporter does not currently support exporting manifest lists"):
        export(store, index, f"type=local,dest={tmp_path / 'out'}", f"type=docker,dest={tmp_path / 'image.tar'}")
    assert not (tmp_path / "out").exists() and not (tmp_path / "image.tar").exists()


def test_a_platform_that_cannot_name_a_directory_is_refused() -> None:
    """The platform comes from an image config: it must make one plain name."""
    assert platform_dir("linux/arm/v7") == "linux_arm_v7"
    assert platform_dir("linux/../x") == "linux_.._x"  # one plain name: no separator is left
    for bad in ("../..", "linux/a\x00b", "/", "linux/a b", "linux/a\nb"):
        with pytest.raises(ImageError, match="cannot name a directory"):
            platform_dir(bad)


def read_layout(archive: Path, into: Path) -> dict:  # type: ignore[type-arg]
    into.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return json.loads((into / "index.json").read_text())


def test_oci_output_writes_the_index_into_the_layout(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    """index.json names the image index (one entry, the tag as ref.name); the index blob
    is the stored one, byte for byte, and valid against the OCI image-index schema."""
    archive = tmp_path / "multi.tar"
    export(store, index, f"type=oci,dest={archive}")
    layout = read_layout(archive, tmp_path / "layout")
    [entry] = layout["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert entry["digest"] == index.digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "1"
    blob = (tmp_path / "layout" / "blobs" / "sha256" / index.digest.split(":")[1]).read_bytes()
    assert blob == store.index_bytes(index)
    document = json.loads(blob)
    assert schema_valid("image-index-schema.json", document)
    for manifest in document["manifests"]:
        assert (tmp_path / "layout" / "blobs" / "sha256" / manifest["digest"].split(":")[1]).exists()


@pytest.mark.tool("skopeo")
def test_skopeo_reads_the_index_of_the_oci_archive(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    archive = tmp_path / "multi.tar"
    export(store, index, f"type=oci,dest={archive}")
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"oci-archive:{archive}:1"], capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    platforms = [m["platform"] for m in json.loads(raw.stdout)["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
        {"architecture": "arm", "os": "linux", "variant": "v7"},
    ]
    arm = subprocess.run(
        ["skopeo", "--override-arch", "arm64", "inspect", "--config", f"oci-archive:{archive}:1"], capture_output=True, text=True, timeout=60,
    )
    assert arm.returncode == 0, arm.stderr
    assert json.loads(arm.stdout)["architecture"] == "arm64"


@pytest.mark.tool("umoci")
def test_umoci_unpacks_a_platform_of_the_oci_archive(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    """umoci reads the layout and its index; its manifest for arm64 unpacks that platform's files."""
    archive = tmp_path / "multi.tar"
    export(store, index, f"type=oci,dest={archive}")
    layout_dir = tmp_path / "layout"
    read_layout(archive, layout_dir)
    arm64 = next(e for e in index.manifests if e.platform == "linux/arm64")
    # umoci names images by index.json ref.name: give the arm64 manifest a name of its own
    layout = json.loads((layout_dir / "index.json").read_text())
    layout["manifests"].append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm64.manifest_digest,
                                "size": len(store.manifest_bytes(arm64.image)), "annotations": {"org.opencontainers.image.ref.name": "arm64"}})
    (layout_dir / "index.json").write_text(json.dumps(layout))
    listed = subprocess.run(["umoci", "ls", "--layout", str(layout_dir)], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert set(listed.stdout.split()) == {"1", "arm64"}
    bundle = tmp_path / "bundle"
    unpacked = subprocess.run(["umoci", "unpack", "--image", f"{layout_dir}:arm64", str(bundle)], capture_output=True, text=True, timeout=120)
    assert unpacked.returncode == 0, unpacked.stderr
    assert (bundle / "rootfs" / "etc" / "arch").read_text() == "arm64\n"


@pytest.mark.peers
@pytest.mark.tool("skopeo")
def test_push_sends_each_manifest_then_the_index(store: ImageStore, index: StoredIndex, docker_registry: RunningRegistry) -> None:
    """The registry (CNCF distribution 2.8) takes the OCI index once its manifests are there;
    skopeo lists every platform and picks arm64's image by --override-arch."""
    name = f"{docker_registry.host}/test/multi:1"
    [result] = export(store, index, f"type=registry,name={name}")
    (reference, digest), = result.pushed
    assert digest == index.digest  # the stored index, unchanged
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"], capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    document = json.loads(raw.stdout)
    assert document["mediaType"] == "application/vnd.oci.image.index.v1+json"
    assert [m["platform"]["architecture"] for m in document["manifests"]] == ["amd64", "arm64", "arm"]
    arm = subprocess.run(
        ["skopeo", "--override-arch", "arm64", "inspect", "--tls-verify=false", f"docker://{name}"], capture_output=True, text=True, timeout=60,
    )
    assert arm.returncode == 0, arm.stderr
    assert json.loads(arm.stdout)["Architecture"] == "arm64"
    assert f"{docker_registry.host}/test/multi@{index.digest}" in store.index("multi:1").repo_digests  # type: ignore[union-attr]


def test_loading_the_oci_archive_keeps_the_index_and_a_platform_loads_alone(store: ImageStore, index: StoredIndex, tmp_path: Path) -> None:
    """docker load on the containerd store keeps an archive's index (every platform under the
    name); --platform loads that platform's image alone (moby daemon/containerd/image_import.go)."""
    from pybuild.oci import load_archive

    archive = tmp_path / "multi.tar"
    export(store, index, f"type=oci,dest={archive}")
    whole = Root.open(tmp_path / "whole")
    try:
        store = ImageStore(whole)
        [result] = load_archive(store, archive)
        assert result.index is not None and result.index.digest == index.digest
        assert result.index.platforms == ("linux/amd64", "linux/arm64", "linux/arm/v7")
        assert store.index("multi:1") == result.index
        assert store.get("multi:1", "linux/arm/v7").id == index.manifests[2].image.id
    finally:
        whole.close()
    one = Root.open(tmp_path / "one")
    try:
        store = ImageStore(one)
        [result] = load_archive(store, archive, platform="linux/arm64")
        assert result.index is None and result.image.id == index.manifests[1].image.id
        assert store.resolve_id("multi:1") == result.image.id
        with pytest.raises(ImageError, match="has no linux/s390x manifest: it has linux/amd64, linux/arm64, linux/arm/v7"):
            load_archive(store, archive, platform="linux/s390x")
    finally:
        one.close()
