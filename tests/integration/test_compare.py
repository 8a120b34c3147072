"""``pybuild compare`` as a user runs it: a single-stage build that writes 20 MiB
and deletes it in a later RUN, against its multi-stage twin that copies only
the small result, both on busybox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import pybuild

BLOB = 20 * 1024 * 1024  # what the first RUN writes with dd
JUNK = ("1", "22", "333")  # small files deleted together with it

SINGLE = """\
FROM busybox:latest
RUN dd if=/dev/zero of=/blob bs=1M count=20 && mkdir /junk && echo 1 > /junk/a && echo 22 > /junk/b \\
    && echo 333 > /junk/c && echo hello > /app
RUN rm -rf /blob /junk
CMD ["cat", "/app"]
"""

MULTI = """\
FROM busybox:latest AS build
RUN dd if=/dev/zero of=/blob bs=1M count=20 && echo hello > /app
FROM busybox:latest
COPY --from=build /app /app
CMD ["cat", "/app"]
"""

# The command table of cli/main.py may not list compare yet: add it, as
# test_images_support.py does for the image commands.
_MAIN = (
    "import sys\n"
    "from pybuild.cli import main as m\n"
    "m.COMMANDS.setdefault('compare', ('pybuild.cli._compare', 'Compare two images layer by layer'))\n"
    "sys.exit(m.main(sys.argv[1:]))\n"
)


def compare(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYBUILD_ROOT": str(root)}
    return subprocess.run(
        [sys.executable, "-c", _MAIN, "compare", *args], env=environment, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One root for the module: its tests only read the twins, built once in it."""
    return tmp_path_factory.mktemp("compare") / "pybuild-root"


@pytest.fixture(scope="module")
def twins(root: Path, busybox_tar: Path) -> tuple[str, str]:
    if os.geteuid() != 0:  # (require_root is a per-test fixture)
        pytest.skip("needs root (namespaces, overlayfs)")
    context = root.parent / "context"
    context.mkdir()
    (context / "Dockerfile.single").write_text(SINGLE)
    (context / "Dockerfile.multi").write_text(MULTI)
    pybuild("import", str(busybox_tar), "busybox:latest", root=root)
    pybuild("build", "-q", "-f", str(context / "Dockerfile.single"), "-t", "app:single", str(context), root=root)
    pybuild("build", "-q", "-f", str(context / "Dockerfile.multi"), "-t", "app:multi", str(context), root=root)
    return "app:single", "app:multi"


def layer_trees(root: Path, name: str) -> list[Path]:
    """The image's layer directories, bottom first, read straight from the store."""
    from pybuild.cache import Root
    from pybuild.oci import ImageStore

    opened = Root.open(root)
    try:
        store = ImageStore(opened)
        return [opened.snapshots.tree(s) for s in reversed(store.snapshots_for(store.get(name)))]
    finally:
        opened.close()


def as_json(root: Path, *images: str, top: str = "5") -> dict:  # type: ignore[type-arg]
    result = compare(root, *images, "--format", "json", "--top", top)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_wasted_bytes_are_the_deleted_file(root: Path, twins: tuple[str, str]) -> None:
    report = as_json(root, *twins)
    single, multi = report["images"]
    assert (single["name"], multi["name"]) == twins
    # What the layer really holds: the file dd wrote, in the first RUN's layer.
    trees = layer_trees(root, "app:single")
    blob = os.lstat(trees[1] / "blob").st_size
    assert blob == BLOB
    assert not os.path.lexists(trees[2] / "blob") or os.lstat(trees[2] / "blob").st_rdev == 0  # a whiteout
    [waste] = single["waste"]
    assert (waste["added_in"], waste["removed_by"], waste["overwritten_bytes"]) == (2, 3, 0)
    assert waste["bytes"] == BLOB + sum(len(text) + 1 for text in JUNK) == single["wasted"]
    assert waste["files"] == 4
    assert waste["paths"][0] == {"path": "/blob", "size": BLOB, "how": "deleted"}
    assert single["layers"][1]["wasted"] == waste["bytes"] and single["layers"][2]["bytes_removed"] == waste["bytes"]
    assert single["layers"][2]["files_deleted"] == 2  # /blob and /junk
    assert multi["wasted"] == 0 and multi["waste"] == []
    # The twins end with the same files; the single-stage one carries the deleted bytes too.
    assert single["final_size"] == multi["final_size"]
    assert single["size"] - multi["size"] == waste["bytes"]
    assert report["difference"]["smaller"] == "app:multi" and report["difference"]["bytes"] == waste["bytes"]


def test_layer_sizes_match_history_and_the_base_is_shared(root: Path, cli, twins: tuple[str, str]) -> None:  # type: ignore[no-untyped-def]
    single, multi = as_json(root, *twins)["images"]
    history = cli("history", "--format", "{{.Size}}\t{{.CreatedBy}}", "-H", "false", "app:single").stdout.splitlines()
    made_layers = [line for line in reversed(history) if not line.startswith("0\tCMD")]
    assert [layer["size"] for layer in single["layers"]] == [int(line.split("\t")[0]) for line in made_layers]
    assert [layer["shared"] for layer in single["layers"]] == [True, False, False]
    assert [layer["shared"] for layer in multi["layers"]] == [True, False]
    assert single["layers"][0]["chain_id"] == multi["layers"][0]["chain_id"]
    assert single["layers"][1]["created_by"].startswith("RUN /bin/sh -c dd if=/dev/zero")
    assert multi["layers"][1]["created_by"].startswith("COPY")
    assert multi["layers"][1]["files_added"] == 1 and multi["layers"][1]["bytes_added"] == len("hello\n")


def test_text_output(root: Path, twins: tuple[str, str]) -> None:
    result = compare(root, *twins)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert all(len(line) <= 100 for line in out.splitlines() if not line.startswith("hint:")), out
    assert "app:single (" in out and "3 layers" in out and "app:multi (" in out and "2 layers" in out
    lines = out.splitlines()
    assert lines[1].split() == ["LAYER", "SIZE", "FILES", "WASTED", "CREATED", "BY"]
    assert lines[2].split()[:2] == ["1", "="]  # the shared base
    assert lines[3].split()[:5] == ["2", "21MB", "+5", "21MB", "RUN"] and "RUN dd if=/dev/zero" in lines[3]
    assert lines[4].split()[:5] == ["3", "0B", "-2", "0B", "RUN"]
    assert "= a layer both images share" in out
    assert "layer 2 (RUN dd if=/dev/zero" in out and "deleted by layer 3 (RUN rm -rf /blob /junk)" in out
    assert "    21MB      /blob" in out
    assert "Wasted in app:multi: nothing" in out
    assert "app:multi is 21MB (91." in out and "smaller than app:single" in out
    [hint] = [line for line in lines if line.startswith("hint:")]
    assert "RUN dd" in hint and "RUN rm -rf /blob /junk deletes in a later layer" in hint and "multi-stage" in hint


def listed_paths(out: str) -> list[str]:
    """The wasted paths the text lists (lines of the form ``    SIZE      PATH``)."""
    return [line.split()[-1] for line in out.splitlines() if line.startswith("    ") and not line.strip().startswith("…")]


def test_top_limits_the_paths_listed(root: Path, twins: tuple[str, str]) -> None:
    out = compare(root, *twins).stdout
    assert listed_paths(out) == ["/blob", "/junk/c", "/junk/b", "/junk/a"]  # largest first
    out = compare(root, *twins, "--top", "1").stdout
    junk = sum(len(text) + 1 for text in JUNK)  # echo adds a newline
    assert listed_paths(out) == ["/blob"] and f"    … and 3 more files ({junk}B)" in out.splitlines()
    out = compare(root, *twins, "--top", "0").stdout
    assert listed_paths(out) == [] and "    … and 4 more files (21MB)" in out.splitlines()
    [waste] = as_json(root, *twins, top="2")["images"][0]["waste"]
    assert [p["path"] for p in waste["paths"]] == ["/blob", "/junk/c"] and waste["files"] == 4


def test_an_image_compared_with_itself(root: Path, twins: tuple[str, str]) -> None:
    report = as_json(root, "app:single", "app:single")
    assert report["same_image"] and report["difference"]["bytes"] == 0 and report["difference"]["smaller"] is None
    assert report["images"][0] == report["images"][1]
    assert all(layer["shared"] for layer in report["images"][0]["layers"])
    image_id = report["images"][0]["id"]
    result = compare(root, "app:single", image_id.split(":")[1][:12])
    assert result.returncode == 0, result.stderr
    assert "are the same image" in result.stdout
    assert result.stdout.count("LAYER ") == 1  # shown once
    assert " = " not in result.stdout  # nothing to mark when every layer is shared


def test_errors_are_one_line_with_a_hint(root: Path, twins: tuple[str, str]) -> None:
    result = compare(root, "app:single", "no-such:image")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == ["error: no such image: no-such:image", "hint: pybuild images lists the local images"]
    for args in (["app:single"], ["app:single", "app:multi", "third"], ["--top", "-1", *twins], ["--top", "x", *twins], ["--format", "yaml", *twins]):
        result = compare(root, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr and "hint:" in result.stderr
