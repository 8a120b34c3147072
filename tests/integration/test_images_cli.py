"""The image commands end to end: output shapes, filters, formats, errors (no tracebacks)."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

from .test_images_support import run_pybuild


@pytest.fixture
def images(root: Path, busybox_tar: Path, tmp_path: Path, require_root: None) -> dict[str, str]:
    """busybox plus two labelled builds on it, made one after the other."""
    run_pybuild("import", str(busybox_tar), "busybox:latest", root=root)
    ids = {"busybox": run_pybuild("images", "-q", "--no-trunc", "busybox", root=root).stdout.strip()}
    for name, version in (("first", "0.1"), ("second", "0.2")):
        context = tmp_path / name
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM busybox\nLABEL com.example.version={version}\nRUN echo {name} > /{name}\nCMD [\"cat\", \"/{name}\"]\n"
        )
        ids[name] = run_pybuild("build", "-q", "--network=none", "-t", f"app/{name}:1", str(context), root=root).stdout.strip()
    return ids


def lines(result) -> list[str]:  # type: ignore[no-untyped-def]
    out = result.stdout.decode() if isinstance(result.stdout, bytes) else result.stdout
    return out.rstrip("\n").split("\n") if out.strip() else []


def test_images_table_has_dockers_columns(root: Path, images: dict[str, str]) -> None:
    table = lines(run_pybuild("images", root=root))
    assert re.fullmatch(r"REPOSITORY {3,}TAG {7}IMAGE ID {7}CREATED {3,}SIZE", table[0])
    width = table[0].index("TAG")
    for row in table[1:]:
        cells = re.split(r" {3,}", row)
        assert len(cells) == 5, row
        assert row[width:].startswith(cells[1])  # aligned under TAG
        assert re.fullmatch(r"[0-9a-f]{12}", cells[2])
        assert cells[3].endswith("ago")
        assert re.fullmatch(r"\d+(\.\d+)?(B|kB|MB)", cells[4])
    assert [r.split()[0] for r in table[1:]] == ["app/second", "app/first", "busybox"]  # newest first


def test_quiet_no_trunc_digests_and_format(root: Path, images: dict[str, str]) -> None:
    short = lines(run_pybuild("images", "-q", root=root))
    full = lines(run_pybuild("images", "-q", "--no-trunc", root=root))
    assert full == [images["second"], images["first"], images["busybox"]]
    assert short == [i.split(":")[1][:12] for i in full]
    assert lines(run_pybuild("images", "-a", "-q", root=root)) == short
    digests = lines(run_pybuild("images", "--digests", root=root))
    assert digests[0].split() == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "CREATED", "SIZE"]
    assert all("<none>" in row for row in digests[1:])  # nothing was pulled or pushed
    custom = lines(run_pybuild("images", "--format", "{{.ID}}: {{.Repository}}", root=root))
    assert custom == [f"{i.split(':')[1][:12]}: {n}" for i, n in zip(full, ["app/second", "app/first", "busybox"])]
    table = lines(run_pybuild("images", "--format", "table {{.ID}}\\t{{.Repository}}\\t{{.Tag}}", root=root))
    assert table[0].split() == ["IMAGE", "ID", "REPOSITORY", "TAG"] and table[1].split()[1:] == ["app/second", "1"]
    assert json.loads(lines(run_pybuild("images", "--format", "{{json .Tag}}", "busybox", root=root))[0]) == "latest"


def test_filters(root: Path, images: dict[str, str]) -> None:
    def repos(*args: str) -> list[str]:
        return [row.split()[0] for row in lines(run_pybuild("images", *args, root=root))[1:]]

    assert repos("-f", "label=com.example.version=0.1") == ["app/first"]
    assert repos("-f", "label=com.example.version") == ["app/second", "app/first"]
    assert repos("-f", "since=app/first:1") == ["app/second"]
    assert repos("-f", "before=app/second:1") == ["app/first", "busybox"]
    assert repos("-f", "reference=app/*") == ["app/second", "app/first"]
    assert repos("app/first") == ["app/first"]
    assert repos("-f", "reference=*") == ["busybox"]  # * does not cross a /
    assert repos("-f", "dangling=true") == []
    bad = run_pybuild("images", "-f", "colour=blue", root=root, check=False)
    assert bad.returncode == 2 and "invalid filter 'colour=blue'" in bad.stderr and "Traceback" not in bad.stderr
    template = run_pybuild("images", "--format", "{{.Nope}}", root=root, check=False)
    assert template.returncode == 2 and "can't evaluate field Nope" in template.stderr


def test_history_shapes(root: Path, images: dict[str, str]) -> None:
    table = lines(run_pybuild("history", "app/first:1", root=root))
    assert table[0].split() == ["IMAGE", "CREATED", "CREATED", "BY", "SIZE", "COMMENT"]
    ids = [row.split()[0] for row in table[1:]]
    assert ids == [images["first"].split(":")[1][:12]] + ["<missing>"] * (len(ids) - 1)
    raw = lines(run_pybuild("history", "-H", "false", "--format", "{{.Size}}|{{.CreatedBy}}|{{.CreatedAt}}", "app/first:1", root=root))
    sizes = [int(row.split("|")[0]) for row in raw]
    assert sizes[0] == 0  # CMD
    assert sizes[1] == len("first\n")  # RUN echo first > /first
    assert sizes[2] == 0  # LABEL
    assert sizes[3] == int(run_pybuild("inspect", "-f", "{{.Size}}", "busybox", root=root).stdout)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)", row.split("|")[2]) for row in raw)
    assert lines(run_pybuild("history", "-q", "--no-trunc", "app/first:1", root=root))[0] == images["first"]


def test_inspect_document(root: Path, images: dict[str, str]) -> None:
    (document,) = json.loads(run_pybuild("inspect", "app/first:1", root=root).stdout)
    assert list(document)[:4] == ["Id", "RepoTags", "RepoDigests", "Parent"]
    assert document["Id"] == images["first"]
    assert document["RepoTags"] == ["app/first:1"] and document["RepoDigests"] == []
    assert document["Config"]["Cmd"] == ["cat", "/first"] and document["Config"]["Entrypoint"] is None
    assert document["Config"]["Labels"] == {"com.example.version": "0.1"}
    assert document["RootFS"]["Type"] == "layers" and len(document["RootFS"]["Layers"]) == 2
    assert document["Size"] == document["VirtualSize"] > 0 and document["Os"] == "linux"
    out = run_pybuild("inspect", "-f", "{{.Config.Entrypoint}} {{json .Config.Cmd}} {{index .Config.Labels \"com.example.version\"}}", "app/first:1", root=root)
    assert out.stdout == '[] ["cat","/first"] 0.1\n'
    missing = run_pybuild("inspect", "busybox", "nothing:here", root=root, check=False)
    assert missing.returncode == 1 and len(json.loads(missing.stdout)) == 1 and "no such image: nothing:here" in missing.stderr


def test_tag_and_rmi_rules(root: Path, images: dict[str, str]) -> None:
    run_pybuild("tag", "app/first:1", "registry.example:5000/team/first:prod", root=root)
    conflict = run_pybuild("rmi", images["first"][7:19], root=root, check=False)
    assert conflict.returncode == 1
    assert f"conflict: unable to delete {images['first'][7:19]} (must be forced)" in conflict.stderr
    assert lines(run_pybuild("rmi", "app/first:1", root=root)) == ["Untagged: app/first:1"]
    removed = lines(run_pybuild("rmi", "registry.example:5000/team/first:prod", root=root))
    assert removed[:2] == ["Untagged: registry.example:5000/team/first:prod", f"Deleted: {images['first']}"]
    assert len(removed) == 3  # its own RUN layer; busybox's layer is shared with app/second
    bad = run_pybuild("tag", "busybox", "Not/Valid", root=root, check=False)
    assert bad.returncode == 1 and "invalid reference format" in bad.stderr and "Traceback" not in bad.stderr
    several = run_pybuild("rmi", "nothing:1", "app/second:1", root=root, check=False)
    assert several.returncode == 1 and "Untagged: app/second:1" in several.stdout


def test_save_and_load_by_repository_and_stdin(root: Path, images: dict[str, str], tmp_path: Path) -> None:
    run_pybuild("tag", "app/first:1", "app/first:2", root=root)
    archive = tmp_path / "first.tar"
    run_pybuild("save", "-o", str(archive), "app/first", root=root)  # every tag of the repository
    manifest = json.loads(tarfile.open(archive).extractfile("manifest.json").read())
    assert len(manifest) == 1 and sorted(manifest[0]["RepoTags"]) == ["app/first:1", "app/first:2"]
    other = tmp_path / "other-root"
    loaded = run_pybuild("load", root=other, input=archive.read_bytes())
    assert sorted(lines(loaded)) == ["Loaded image: app/first:1", "Loaded image: app/first:2"]
    assert lines(run_pybuild("images", "-q", "--no-trunc", root=other)) == [images["first"]] * 2  # a row per tag, as docker
    oci = tmp_path / "first-oci.tar"
    run_pybuild("save", "--format", "oci", "-o", str(oci), images["first"], root=root)
    assert lines(run_pybuild("load", "-i", str(oci), root=other)) == [f"Loaded image ID: {images['first']}"]
    not_an_archive = tmp_path / "junk.tar"
    not_an_archive.write_bytes(b"junk" * 300)
    failed = run_pybuild("load", "-i", str(not_an_archive), root=other, check=False)
    assert failed.returncode == 1 and failed.stderr.startswith("error:") and "Traceback" not in failed.stderr


def test_image_group_and_prune(root: Path, images: dict[str, str], tmp_path: Path) -> None:
    assert lines(run_pybuild("image", "ls", "-q", root=root)) == lines(run_pybuild("images", "-q", root=root))
    run_pybuild("tag", "busybox", "app/first:1", root=root)  # app/first's old image dangles now
    declined = run_pybuild("image", "prune", root=root, input="n\n")
    assert "WARNING! This will remove all dangling images." in declined.stdout
    assert images["first"][7:19] in run_pybuild("images", "-q", root=root).stdout
    pruned = lines(run_pybuild("image", "prune", "-f", root=root))
    assert pruned[0] == "Deleted Images:"
    assert pruned[1] == f"deleted: {images['first']}"
    assert re.fullmatch(r"Total reclaimed space: \d+B", pruned[-1])
    assert lines(run_pybuild("image", "prune", "-f", root=root)) == ["Total reclaimed space: 0B"]
    removed = lines(run_pybuild("image", "rm", "app/second:1", root=root))
    assert removed[0] == "Untagged: app/second:1"
