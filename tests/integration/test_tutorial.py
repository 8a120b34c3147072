"""The flow of the image tutorial (shared/tutorial/docker-images-tutorial.md) with pybuild.

Pull a base (from a docker-registry on 127.0.0.1: Docker Hub is out of
reach), build one program two ways -- a single stage that keeps its 20 MB
build-only "toolchain", and a multi-stage build that copies only the
program onto a fresh base -- then list, read the history, re-tag so a
dangling image appears, remove dangling images with
``rmi $(images -q -f dangling=true)`` and remove an image by short ID.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .._peers import require_tool
from ..oci.conftest import docker_registry  # noqa: F401 - the session registry fixture
from .test_images_support import run_pybuild

TOOLCHAIN_BYTES = 20 * 1024 * 1024

SINGLE = """\
FROM busybox
RUN mkdir -p /toolchain && dd if=/dev/urandom of=/toolchain/cc.bin bs=1M count=20 2>/dev/null
RUN test -s /toolchain/cc.bin && printf '#!/bin/sh\\necho {message}\\n' > /hello && chmod +x /hello
CMD ["/hello"]
"""

MULTI = """\
FROM busybox AS builder
RUN mkdir -p /toolchain && dd if=/dev/urandom of=/toolchain/cc.bin bs=1M count=20 2>/dev/null
RUN test -s /toolchain/cc.bin && printf '#!/bin/sh\\necho {message}\\n' > /hello && chmod +x /hello

FROM busybox
COPY --from=builder /hello /hello
CMD ["/hello"]
"""


def _columns(header: str) -> list[tuple[str, int]]:
    """Column names and their start offsets in a docker-style table header."""
    return [(m.group(0).strip(), m.start()) for m in re.finditer(r"\S+(?: \S+)*", header)]


def _table(text: str) -> list[dict[str, str]]:
    lines = text.rstrip("\n").split("\n")
    columns = _columns(lines[0])
    rows = []
    for line in lines[1:]:
        row = {}
        for i, (name, start) in enumerate(columns):
            end = columns[i + 1][1] if i + 1 < len(columns) else None
            row[name] = line[start:end].strip()
        rows.append(row)
    return rows


@pytest.fixture
def base_in_registry(docker_registry, busybox_tar: Path, tmp_path: Path, require_root: None) -> str:  # noqa: F811
    """busybox pushed by skopeo to the registry, as a tutorial reader would find it on a hub."""
    require_tool("skopeo")
    seed = tmp_path / "seed-root"
    run_pybuild("import", str(busybox_tar), "busybox:latest", root=seed)
    archive = tmp_path / "busybox-docker.tar"
    run_pybuild("save", "-o", str(archive), "busybox:latest", root=seed)
    name = f"{docker_registry.host}/library/busybox:tutorial"
    subprocess.run(
        ["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-archive:{archive}", f"docker://{name}"],
        check=True, capture_output=True,
    )
    return name


def _build(root: Path, tmp_path: Path, dockerfile: str, tag: str) -> str:
    context = tmp_path / f"context-{tag.replace(':', '-')}"
    context.mkdir(exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    result = run_pybuild("build", "-q", "--network=none", "-t", tag, str(context), root=root)
    return result.stdout.strip()


def test_tutorial_flow(root: Path, tmp_path: Path, base_in_registry: str) -> None:
    # --- pull ---------------------------------------------------------------
    pulled = run_pybuild("pull", base_in_registry, root=root).stdout.splitlines()
    assert pulled[0] == "tutorial: Pulling from library/busybox"
    assert re.fullmatch(r"[0-9a-f]{12}: Pull complete", pulled[1])
    assert re.fullmatch(r"Digest: sha256:[0-9a-f]{64}", pulled[-3])
    assert pulled[-2] == f"Status: Downloaded newer image for {base_in_registry}"
    assert pulled[-1] == base_in_registry
    again = run_pybuild("pull", base_in_registry, root=root).stdout
    assert "Already exists" in again and f"Status: Image is up to date for {base_in_registry}" in again
    run_pybuild("tag", base_in_registry, "busybox:latest", root=root)

    # --- build the same program two ways -------------------------------------
    single_id = _build(root, tmp_path, SINGLE.format(message="hello-v1"), "hello:single")
    multi_id = _build(root, tmp_path, MULTI.format(message="hello-v1"), "hello:multi")
    assert single_id != multi_id

    # --- images: both listed, with sizes --------------------------------------
    listing = run_pybuild("images", root=root).stdout
    header = listing.splitlines()[0]
    assert [name for name, _ in _columns(header)] == ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
    rows = {(r["REPOSITORY"], r["TAG"]): r for r in _table(listing)}
    assert rows[("hello", "single")]["IMAGE ID"] == single_id.split(":")[1][:12]
    assert rows[("hello", "multi")]["IMAGE ID"] == multi_id.split(":")[1][:12]
    assert rows[("hello", "single")]["CREATED"].endswith("ago")
    size = {
        name: int(run_pybuild("inspect", "-f", "{{.Size}}", name, root=root).stdout)
        for name in ("busybox:latest", "hello:single", "hello:multi")
    }
    script_bytes = len("#!/bin/sh\necho hello-v1\n")
    assert size["hello:multi"] == size["busybox:latest"] + script_bytes  # only the program was added
    assert size["hello:single"] == size["hello:multi"] + TOOLCHAIN_BYTES  # the toolchain stayed in
    assert rows[("hello", "single")]["SIZE"] == "23MB"  # 2.0 MB of busybox + 21 MB of toolchain, Docker's units
    assert rows[("hello", "multi")]["SIZE"] == rows[("busybox", "latest")]["SIZE"]

    # --- history: the layers -------------------------------------------------
    history = _table(run_pybuild("history", "hello:single", root=root).stdout)
    assert history[0]["IMAGE"] == single_id.split(":")[1][:12]
    assert all(row["IMAGE"] == "<missing>" for row in history[1:])
    assert history[0]["CREATED BY"] == 'CMD ["/hello"]' and history[0]["SIZE"] == "0B"
    toolchain = next(row for row in history if "dd if=" in row["CREATED BY"])
    created_by = "RUN /bin/sh -c mkdir -p /toolchain && dd if=/dev/urandom of=/toolchain/cc.bin bs=1M count=20 2>/dev/null # buildkit"
    assert toolchain["CREATED BY"] == created_by[:44] + "…"  # 45 characters, the last an ellipsis
    assert toolchain["SIZE"] == "21MB" and toolchain["COMMENT"] == "buildkit.dockerfile.v0"
    assert history[-1]["SIZE"] == rows[("busybox", "latest")]["SIZE"]
    full = run_pybuild("history", "--no-trunc", "--format", "{{.CreatedBy}}", "hello:single", root=root).stdout
    assert created_by in full.splitlines()
    multi_history = _table(run_pybuild("history", "hello:multi", root=root).stdout)
    assert [row["CREATED BY"] for row in multi_history[:2]] == ['CMD ["/hello"]', "COPY /hello /hello # buildkit"]
    assert multi_history[1]["SIZE"] == f"{script_bytes}B"

    # --- re-tag: the tag moves, the old image dangles ---------------------------
    assert run_pybuild("images", "-q", "-f", "dangling=true", root=root).stdout == ""
    new_single = _build(root, tmp_path, SINGLE.format(message="hello-v2"), "hello:single")
    assert new_single != single_id
    dangling = _table(run_pybuild("images", "-f", "dangling=true", root=root).stdout)
    assert [(r["REPOSITORY"], r["TAG"], r["IMAGE ID"]) for r in dangling] == [("<none>", "<none>", single_id.split(":")[1][:12])]
    assert ("<none>", "<none>") in {(r["REPOSITORY"], r["TAG"]) for r in _table(run_pybuild("images", root=root).stdout)}

    # --- rmi $(images -q -f dangling=true) ---------------------------------------
    ids = run_pybuild("images", "-q", "-f", "dangling=true", root=root).stdout.split()
    removed = run_pybuild("rmi", *ids, root=root).stdout.splitlines()
    assert removed[0] == f"Deleted: {single_id}"
    # Only the layer the new build changed goes; the shared toolchain and base layers stay.
    assert len(removed) == 2 and re.fullmatch(r"Deleted: sha256:[0-9a-f]{64}", removed[1])
    assert run_pybuild("images", "-q", "-f", "dangling=true", root=root).stdout == ""
    new_history = run_pybuild("history", "-q", "hello:single", root=root).stdout.split()
    assert new_history[0] == new_single.split(":")[1][:12]

    # --- rmi by short ID: Untagged and Deleted lines -----------------------------
    short = multi_id.split(":")[1][:12]
    lines = run_pybuild("rmi", short, root=root).stdout.splitlines()
    assert lines[0] == "Untagged: hello:multi"
    assert lines[1] == f"Deleted: {multi_id}"
    # The COPY layer was its own; busybox's layer is shared and stays.
    assert len(lines) == 3
    left = {(r["REPOSITORY"], r["TAG"]) for r in _table(run_pybuild("images", root=root).stdout)}
    assert left == {("hello", "single"), ("busybox", "latest"), (base_in_registry.rsplit(":", 1)[0], "tutorial")}
    missing = run_pybuild("rmi", short, root=root, check=False)
    assert missing.returncode == 1 and "no such image" in missing.stderr and "Traceback" not in missing.stderr
