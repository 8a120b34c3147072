"""pybuild push and pull against Debian's docker-registry on 127.0.0.1, checked with skopeo.

Each test uses repositories of its own in the session's registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
import trio

from pybuild.cache import Root
from pybuild.dag import BuildOptions
from pybuild.dag._build import plan_build
from pybuild.grammar import parse
from pybuild.oci import ImageStore
from pybuild.oci._pull import StorePuller

from .._peers import require_tool
from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .test_images_support import run_pybuild

pytestmark = pytest.mark.peers


def skopeo(*args: str) -> str:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(docker_registry) -> str:  # noqa: F811
    """A fresh repository prefix in the registry: HOST/test-xxxx."""
    require_tool("skopeo")
    return f"{docker_registry.host}/test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def base_archive(busybox_tar: Path, tmp_path: Path, require_root: None) -> Path:
    """busybox as a docker-archive, made in a root of its own."""
    seed = tmp_path / "seed-root"
    run_pybuild("import", str(busybox_tar), "busybox:latest", root=seed)
    archive = tmp_path / "busybox.tar"
    run_pybuild("save", "-o", str(archive), "busybox:latest", root=seed)
    return archive


def _context(tmp_path: Path, dockerfile: str) -> Path:
    context = tmp_path / f"ctx-{uuid.uuid4().hex[:6]}"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return context


def test_a_pushed_image_is_accepted_by_skopeo(root: Path, repo: str, busybox_tar: Path, tmp_path: Path, require_root: None) -> None:
    run_pybuild("import", str(busybox_tar), "busybox:latest", root=root)
    name = f"{repo}/app:1"
    context = _context(tmp_path, "FROM busybox\nRUN echo pushed > /pushed\nCMD [\"cat\", \"/pushed\"]\n")
    image_id = run_pybuild("build", "-q", "--network=none", "-t", name, str(context), root=root).stdout.strip()
    out = run_pybuild("push", name, root=root).stdout.splitlines()
    assert out[0] == f"The push refers to repository [{repo}/app]"
    assert all(re.fullmatch(r"[0-9a-f]{12}: Pushed", line) for line in out[1:-1]) and len(out) == 4
    match = re.fullmatch(r"1: digest: (sha256:[0-9a-f]{64}) size: (\d+)", out[-1])
    assert match is not None
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{name}"))
    assert inspected["Digest"] == match.group(1)
    config = json.loads(skopeo("inspect", "--tls-verify=false", "--config", f"docker://{name}"))
    assert config["rootfs"]["diff_ids"] == json.loads(run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", image_id, root=root).stdout)
    assert config["config"]["Cmd"] == ["cat", "/pushed"]
    # skopeo copies every blob out of the registry, checking each digest
    skopeo("copy", "--quiet", "--src-tls-verify=false", f"docker://{name}", f"oci:{tmp_path / 'layout'}:1")
    digests = run_pybuild("images", "--digests", "--format", "{{.Repository}} {{.Tag}} {{.Digest}}", f"{repo}/app", root=root).stdout
    assert digests == f"{repo}/app 1 {match.group(1)}\n"
    again = run_pybuild("push", name, root=root).stdout.splitlines()
    assert again[1:-1] == [line.replace("Pushed", "Layer already exists") for line in out[1:-1]]  # docker push's wording
    assert again[-1] == out[-1]


def test_an_image_skopeo_pushed_is_pulled_and_built_on(root: Path, repo: str, base_archive: Path, tmp_path: Path, open_image) -> None:  # type: ignore[no-untyped-def]
    base = f"{repo}/base:1"
    skopeo("copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{base_archive}", f"docker://{base}")
    pulled = run_pybuild("pull", base, root=root).stdout.splitlines()
    assert pulled[-1] == base and pulled[-2] == f"Status: Downloaded newer image for {base}"
    pinned = pulled[-3].removeprefix("Digest: ")
    assert json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{base}"))["Digest"] == pinned

    app = f"{repo}/app:1"
    context = _context(tmp_path, f"FROM {base}\nRUN echo built-on-pulled > /msg\n")
    run_pybuild("build", "-q", "--network=none", "-t", app, str(context), root=root)
    view = open_image(app)
    assert view.read("/msg") == "built-on-pulled\n" and view.find("/bin/busybox") is not None
    base_layers = json.loads(run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", base, root=root).stdout)
    app_layers = json.loads(run_pybuild("inspect", "-f", "{{json .RootFS.Layers}}", app, root=root).stdout)
    assert app_layers[: len(base_layers)] == base_layers  # the base's layers, not a re-archived copy

    pushed = run_pybuild("push", app, root=root).stdout.splitlines()
    mounted = [line for line in pushed if line.endswith(f"Mounted from {repo.split('/', 1)[1]}/base")]
    assert len(mounted) == len(base_layers)  # cross-repository mounts, no upload
    manifest = json.loads(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{app}"))
    base_manifest = json.loads(skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{base}"))
    assert [l["digest"] for l in manifest["layers"]][: len(base_layers)] == [l["digest"] for l in base_manifest["layers"]]


def _multi_platform_layout(archive: Path, where: Path) -> Path:
    """An OCI layout holding an index of the archive's image (this host) and an arm64 twin."""
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="tar")
    blobs = where / "blobs" / "sha256"

    def put(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    top = json.loads((where / "index.json").read_text())["manifests"][0]
    manifest = json.loads((blobs / top["digest"].split(":")[1]).read_bytes())
    config = json.loads((blobs / manifest["config"]["digest"].split(":")[1]).read_bytes())
    entries = [{"mediaType": top["mediaType"], **{k: top[k] for k in ("digest", "size")}, "platform": {"os": "linux", "architecture": config["architecture"]}}]
    twin_config = {**config, "architecture": "arm64"}
    twin = {**manifest, "config": {**manifest["config"], **put(json.dumps(twin_config).encode())}}
    entries.append({"mediaType": top["mediaType"], **put(json.dumps(twin).encode()), "platform": {"os": "linux", "architecture": "arm64"}})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
    layout_index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", **put(json.dumps(index).encode()), "annotations": {"org.opencontainers.image.ref.name": "multi"}}],
    }
    (where / "index.json").write_text(json.dumps(layout_index))
    (where / "manifest.json").unlink()
    return where


def test_an_index_resolves_to_the_build_platform(root: Path, repo: str, base_archive: Path, tmp_path: Path) -> None:
    oci_archive = tmp_path / "busybox-oci.tar"
    seed = tmp_path / "seed-root"
    run_pybuild("save", "--format", "oci", "-o", str(oci_archive), "busybox:latest", root=seed)
    layout = _multi_platform_layout(oci_archive, tmp_path / "layout")
    name = f"{repo}/multi:1"
    skopeo("copy", "--quiet", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi", f"docker://{name}")
    raw_index = subprocess.run(["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://{name}"], check=True, capture_output=True).stdout
    index_digest = "sha256:" + hashlib.sha256(raw_index).hexdigest()

    host = run_pybuild("pull", name, root=root).stdout
    assert f"Digest: {index_digest}" in host
    document = json.loads(run_pybuild("inspect", name, root=root).stdout)[0]
    assert document["Architecture"] != "arm64"
    assert document["RepoDigests"] == [f"{repo}/multi@{index_digest}"]
    other = tmp_path / "arm-root"
    run_pybuild("pull", "--platform", "linux/arm64", name, root=other)
    assert run_pybuild("inspect", "-f", "{{.Architecture}}", name, root=other).stdout == "arm64\n"
    missing = run_pybuild("pull", "--platform", "linux/s390x", name, root=other, check=False)
    assert missing.returncode == 1 and "linux/s390x" in missing.stderr and "Traceback" not in missing.stderr


def test_a_build_pulls_a_missing_base_through_the_store_puller(root: Path, repo: str, base_archive: Path) -> None:
    base = f"{repo}/puller-base:2"
    skopeo("copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{base_archive}", f"docker://{base}")
    dockerfile = parse(f"FROM {base}\nRUN true\n".encode(), "Dockerfile")
    with Root.open(root) as pybuild_root:
        store = ImageStore(pybuild_root)
        puller = StorePuller(store)
        plan = trio.run(lambda: plan_build(dockerfile, BuildOptions(), store, puller))
        assert [r.reference.familiar for r in puller.pulled] == [base]
        image = store.get(base)
        assert plan.target.image.config  # the plan was made from the pulled config
        # layers are blobs now; snapshots come when a build needs them
        assert all(store.root.blobs.has(layer.digest) for layer in image.layers)
        assert store.snapshots_for(image)


def test_registry_errors_are_one_line(root: Path, repo: str, require_root: None) -> None:
    missing = run_pybuild("pull", f"{repo}/nothing:1", root=root, check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
    no_image = run_pybuild("push", f"{repo}/nothing:1", root=root, check=False)
    assert no_image.returncode == 1 and "no such image" in no_image.stderr
