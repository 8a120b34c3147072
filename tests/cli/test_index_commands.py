"""The image commands on a multi-platform image (an index under its tag), as Docker's
commands behave on its containerd image store.

images: one row, the index digest as ID (moby daemon/containerd/image_list.go);
``--tree`` lists the platforms under it (docker/cli cli/command/image/tree.go).
inspect/history/save/rmi/run take ``--platform`` (docker/cli
cli/command/image/inspect.go, history.go, save.go, remove.go in Docker 28, and
container/run.go), a platform the image lacks being an error naming those it has.
"""

from __future__ import annotations

import json
import platform as host
import tarfile
from pathlib import Path

import pytest

from pybuild.cache import Root
from pybuild.cli.main import main
from pybuild.oci import ImageStore

from ..oci.conftest import docker_registry  # noqa: F401  # the registry fixture, for the push test
from ..oci.test_store_index import platform_image

HOST_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(host.machine(), host.machine())


@pytest.fixture
def made(tmp_path: Path) -> dict[str, str]:
    """A root with multi:1 (an index of amd64 and arm64) and plain:1; returns the IDs."""
    root = Root.open(tmp_path / "root")
    store = ImageStore(root)
    amd64 = platform_image(store, "amd64", {"etc/arch": b"amd64\n"})
    arm64 = platform_image(store, "arm64", {"etc/arch": b"arm64\n"})
    index = store.add_index([amd64, arm64], ["multi:1"])
    plain = platform_image(store, HOST_ARCH, {"etc/plain": b"1\n"}, tags=["plain:1"])
    root.close()
    return {"root": str(tmp_path / "root"), "index": index.digest, "amd64": amd64.id, "arm64": arm64.id, "plain": plain.id}


def pybuild(capsys: pytest.CaptureFixture[str], made: dict[str, str], *args: str) -> tuple[int, str, str]:
    command = 2 if args[0] == "image" else 1  # `image prune` takes --root after its subcommand
    code = main([*args[:command], "--root", made["root"], *args[command:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_images_shows_an_index_as_one_row_and_tree_shows_its_platforms(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    code, out, _ = pybuild(capsys, made, "images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    assert code == 0
    assert sorted(out.splitlines()) == sorted([f"multi:1 {made['index'][7:19]}", f"plain:1 {made['plain'][7:19]}"])
    code, out, _ = pybuild(capsys, made, "images", "--tree")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["IMAGE", "ID", "DISK", "USAGE", "CONTENT", "SIZE"]
    at = next(i for i, line in enumerate(lines) if line.startswith("multi:1"))
    assert lines[at].split()[1] == made["index"][7:19]
    assert lines[at + 1].split()[:3] == ["├─", "linux/amd64", made["amd64"][7:19]]
    assert lines[at + 2].split()[:3] == ["└─", "linux/arm64", made["arm64"][7:19]]
    code, _, err = pybuild(capsys, made, "images", "--tree", "-q")
    assert code != 0 and "--quiet is not supported with --tree" in err and "Traceback" not in err


def test_inspect_shows_the_index_id_and_the_platform_asked(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    code, out, _ = pybuild(capsys, made, "inspect", "--platform", "linux/arm64", "multi:1")
    [document] = json.loads(out)
    assert code == 0 and document["Id"] == made["index"] and document["Architecture"] == "arm64"
    assert document["RepoTags"] == ["multi:1"]
    assert document["RootFS"]["Layers"] != json.loads(pybuild(capsys, made, "inspect", "--platform", "linux/amd64", "multi:1")[1])[0]["RootFS"]["Layers"]
    code, out, _ = pybuild(capsys, made, "inspect", "-f", "{{.Architecture}}", "multi:1")
    assert code == 0 and out == ("arm64\n" if HOST_ARCH == "arm64" else "amd64\n")
    code, _, err = pybuild(capsys, made, "inspect", "--platform", "linux/s390x", "multi:1")
    assert code == 1 and "has no image for linux/s390x: it has linux/amd64, linux/arm64" in err and "Traceback" not in err


def test_history_of_a_platform(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    code, out, _ = pybuild(capsys, made, "history", "--platform", "linux/arm64", "--no-trunc", "-q", "multi:1")
    assert code == 0 and out.splitlines()[0] == made["arm64"]


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_save_writes_the_whole_index_in_oci_and_one_platform_when_asked(capsys: pytest.CaptureFixture[str], made: dict[str, str], tmp_path: Path) -> None:
    """docker save on the containerd store saves the index; --platform (Docker 28) one platform."""
    whole = tmp_path / "whole.tar"
    assert pybuild(capsys, made, "save", "--format", "oci", "-o", str(whole), "multi:1")[0] == 0
    [entry] = json.loads(members(whole)["index.json"])["manifests"]
    assert entry["digest"] == made["index"] and entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    one = tmp_path / "arm64.tar"
    assert pybuild(capsys, made, "save", "--platform", "linux/arm64", "-o", str(one), "multi:1")[0] == 0
    [saved] = json.loads(members(one)["manifest.json"])
    assert saved["Config"] == made["arm64"].split(":")[1] + ".json" and saved["RepoTags"] == ["multi:1"]
    code, _, err = pybuild(capsys, made, "save", "--platform", "linux/s390x", "-o", str(tmp_path / "none.tar"), "multi:1")
    assert code == 1 and "it has linux/amd64, linux/arm64" in err and not (tmp_path / "none.tar").exists()


def test_rmi_of_one_platform_keeps_the_others(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    code, out, _ = pybuild(capsys, made, "rmi", "--platform", "linux/arm64", "multi:1")
    assert code == 0 and f"Deleted: {made['arm64']}" in out.splitlines()
    code, out, _ = pybuild(capsys, made, "images", "--tree")
    assert "linux/arm64" not in out and "linux/amd64" in out
    code, out, _ = pybuild(capsys, made, "rmi", "multi:1")
    assert code == 0 and out.splitlines()[:3] == ["Untagged: multi:1", f"Deleted: {made['index']}", f"Deleted: {made['amd64']}"]


def test_compare_takes_the_platform(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    code, out, _ = pybuild(capsys, made, "compare", "--platform", "linux/arm64", "--format", "json", "multi:1", "multi:1")
    assert code == 0 and json.loads(out)["images"][0]["id"] == made["arm64"]


def test_run_of_a_platform_this_machine_cannot_run_stops_before_making_a_container(
    capsys: pytest.CaptureFixture[str], made: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker run --platform of a foreign image needs an emulator (binfmt_misc); without one pybuild
    says so before it makes anything, as BuildKit checks before running a step."""
    from pybuild import executors
    from pybuild.executors import EmulationStatus

    asked: list[str] = []

    def status(platform: str) -> EmulationStatus:
        asked.append(platform)
        return EmulationStatus(platform, False, "unavailable", reason="no binfmt_misc handler", hint="pybuild binfmt --install")

    monkeypatch.setattr(executors, "emulation_status", status)
    foreign = "linux/arm64" if HOST_ARCH != "arm64" else "linux/amd64"
    code, _, err = pybuild(capsys, made, "run", "--rm", "--platform", foreign, "multi:1", "true")
    assert code != 0 and f"this machine cannot run {foreign} binaries: no binfmt_misc handler" in err
    assert "pybuild binfmt --install" in err and asked == [foreign]
    assert not (Path(made["root"]) / "containers").exists() or not any((Path(made["root"]) / "containers").iterdir())
    code, _, err = pybuild(capsys, made, "run", "--rm", "--platform", "linux/s390x", "multi:1", "true")
    assert code != 0 and "has no image for linux/s390x" in err


@pytest.mark.peers
@pytest.mark.tool("skopeo")
def test_push_of_an_index_sends_every_platform_then_the_index(capsys: pytest.CaptureFixture[str], made: dict[str, str], docker_registry) -> None:  # type: ignore[no-untyped-def]
    """docker push on the containerd store pushes the whole index (each manifest, then the
    index by its tag); --platform (Docker 28) pushes one platform's image alone."""
    import subprocess

    name = f"{docker_registry.host}/test/cli-multi:1"
    assert pybuild(capsys, made, "tag", "multi:1", name)[0] == 0
    code, out, err = pybuild(capsys, made, "push", name)
    assert code == 0, err
    assert out.splitlines()[-1].startswith(f"1: digest: {made['index']} size: ")
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{name}"], capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    assert [m["platform"]["architecture"] for m in json.loads(raw.stdout)["manifests"]] == ["amd64", "arm64"]
    single = f"{docker_registry.host}/test/cli-arm64:1"
    assert pybuild(capsys, made, "tag", "multi:1", single)[0] == 0
    code, out, err = pybuild(capsys, made, "push", "--platform", "linux/arm64", single)
    assert code == 0, err
    raw = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{single}"], capture_output=True, text=True, timeout=60)
    assert json.loads(raw.stdout)["mediaType"] == "application/vnd.oci.image.manifest.v1+json"


def test_image_prune_takes_an_index_whole_and_never_its_platforms_alone(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    """docker image prune on the containerd store: a dangling image is the untagged index (its
    platforms go with it); -a removes unused images, an index as one (image_prune.go)."""
    code, out, _ = pybuild(capsys, made, "image", "prune", "-f")
    assert code == 0 and "deleted:" not in out  # the index is tagged: its untagged platform images are not dangling
    assert pybuild(capsys, made, "rmi", "plain:1")[0] == 0
    root = Root.open(made["root"])
    try:
        ImageStore(root).untag("multi:1")  # what a rebuild moving the tag leaves: a dangling index
    finally:
        root.close()
    code, out, _ = pybuild(capsys, made, "image", "prune", "-f")
    deleted = [line.split()[1] for line in out.splitlines() if line.startswith("deleted:")]
    assert code == 0 and deleted[0] == made["index"] and {made["amd64"], made["arm64"]} <= set(deleted)
    assert pybuild(capsys, made, "images", "-q")[1] == ""


def test_image_prune_all_removes_an_index_as_one_image(capsys: pytest.CaptureFixture[str], made: dict[str, str]) -> None:
    code, out, _ = pybuild(capsys, made, "image", "prune", "-a", "-f")
    deleted = {line.split()[1] for line in out.splitlines() if line.startswith("deleted:")}
    assert code == 0 and {made["index"], made["amd64"], made["arm64"], made["plain"]} <= deleted
    assert "untagged: multi:1" in out.splitlines()
    assert pybuild(capsys, made, "images", "-q")[1] == ""


def test_ps_names_a_container_of_a_platform_image_by_the_index_name(made: dict[str, str]) -> None:
    """docker ps shows the name the container was run by while it still names its image."""
    from types import SimpleNamespace

    from pybuild.cli._ps import image_name

    root = Root.open(made["root"])
    try:
        store = ImageStore(root)
        assert image_name(store, SimpleNamespace(image_ref="multi:1", image_id=made["arm64"])) == "multi:1"  # type: ignore[arg-type]
        assert image_name(store, SimpleNamespace(image_ref="plain:1", image_id=made["arm64"])) == made["arm64"][7:19]  # type: ignore[arg-type]
    finally:
        root.close()
