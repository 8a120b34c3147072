"""``--cache-to type=reapi`` / ``--cache-from type=reapi`` against a real BuildGrid:
BuildGrid's action cache and CAS as a shared build cache, without remote execution.

One root builds and records every step; an empty root reuses every one of them
(nothing runs) and gives the same image ID and the same files as the local build.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import BuildGrid

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = """\
FROM busybox
COPY a.txt /a.txt
RUN echo built > /b.txt && sleep 0.1
RUN --mount=type=secret,id=tok cat /run/secrets/tok | wc -c > /secret-length
RUN cat /a.txt /b.txt > /c.txt
"""
SECRET = b"s3cr3t-Only-Here-7f1e"


def pybuild(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYBUILD_ROOT": str(root)}
    run = subprocess.run([sys.executable, "-m", "pybuild", *args], capture_output=True, text=True, env=env, cwd=REPO, check=False)
    if check and run.returncode != 0:
        raise AssertionError(f"pybuild {' '.join(args)} failed ({run.returncode}):\n{run.stderr}")
    return run


@pytest.fixture
def project(tmp_path: Path) -> Path:
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "a.txt").write_text("from the context\n")
    (tmp_path / "tok").write_bytes(SECRET)
    return context


@pytest.fixture(scope="module")
def base_archive(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox imported once and saved: every root loads the very same image (an import
    dates its image, and the base's digest is part of every step's cache key)."""
    root = tmp_path_factory.mktemp("busybox-seed") / "root"
    pybuild(root, "import", str(busybox_tar), "busybox:latest")
    pybuild(root, "save", "-o", str(root.parent / "busybox-image.tar"), "busybox:latest")
    return root.parent / "busybox-image.tar"


def build(root: Path, context: Path, base_archive: Path, *flags: str) -> tuple[str, str, Path]:
    """Build with ``flags`` on ``root`` (the base loaded first): (image ID, progress, files).
    Times are clamped (SOURCE_DATE_EPOCH, rewrite-timestamp), so image IDs compare across roots."""
    if not root.exists():
        pybuild(root, "load", "-i", str(base_archive))
    files = root.parent / f"{root.name}-files"
    iid = root.parent / f"{root.name}.iid"
    run = pybuild(
        root, "build", "--progress=plain", "--build-arg", "SOURCE_DATE_EPOCH=1700000000",
        "--secret", f"id=tok,src={context.parent / 'tok'}", "--iidfile", str(iid),
        "-o", "type=image,rewrite-timestamp=true", "-o", f"type=local,dest={files}", *flags, str(context),
    )
    return iid.read_text(), run.stderr, files


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}


def blobs_containing(cas: Path, data: bytes) -> list[Path]:
    return [p for p in cas.rglob("*") if p.is_file() and data in p.read_bytes()]


def cached_steps(progress: str) -> list[str]:
    """The instructions of the steps progress shows CACHED."""
    names: dict[str, str] = {}
    cached = []
    for line in progress.splitlines():
        number, _, rest = line.partition(" ")
        if rest.startswith("[") and "] " in rest:
            names[number] = rest.split("] ", 1)[1]
        elif rest == "CACHED" and number in names:
            cached.append(names[number])
    return cached


def test_cache_to_then_cache_from_on_an_empty_root_reuses_every_step(
    tmp_path: Path, project: Path, buildgrid: BuildGrid, base_archive: Path
) -> None:
    marker = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]  # this test's own steps in the shared cache
    (project / "a.txt").write_text(f"from the context {marker}\n")
    local_id, _, local_files = build(tmp_path / "local", project, base_archive)
    recorded_id, recording, _ = build(tmp_path / "first", project, base_archive, "--cache-to", f"type=reapi,url={buildgrid.url}")
    assert cached_steps(recording) == []  # an empty root: everything ran here
    reused_id, reusing, reused_files = build(tmp_path / "second", project, base_archive, "--cache-from", f"type=reapi,url={buildgrid.url}")
    # every step but the secret one (which never leaves this machine) came from the cache
    assert cached_steps(reusing) == ["COPY a.txt /a.txt", "RUN echo built > /b.txt && sleep 0.1", "RUN cat /a.txt /b.txt > /c.txt"], reusing
    assert reused_id == recorded_id == local_id
    assert tree(reused_files) == tree(local_files)
    assert tree(reused_files)["secret-length"].strip() == str(len(SECRET)).encode()
    assert blobs_containing(buildgrid.cas_dir, SECRET) == []
    assert blobs_containing(buildgrid.cas_dir, marker.encode())  # what was recorded is there


def test_a_cached_layer_the_cas_serves_damaged_is_refused_and_the_step_runs_here(
    tmp_path: Path, project: Path, buildgrid: BuildGrid, base_archive: Path
) -> None:
    marker = hashlib.sha256(str(tmp_path).encode()).hexdigest()[:16]
    (project / "a.txt").write_text(f"damaged later {marker}\n")
    _, _, recorded_files = build(tmp_path / "first", project, base_archive, "--cache-to", f"type=reapi,url={buildgrid.url}")
    damaged = blobs_containing(buildgrid.cas_dir, marker.encode())  # the layers of COPY and of RUN cat
    assert len(damaged) == 2
    for blob in damaged:  # same size, other bytes: only the digest can tell
        data = blob.read_bytes()
        blob.write_bytes(data.replace(marker.encode(), marker[::-1].encode()))
    _, progress, files = build(tmp_path / "second", project, base_archive, "--cache-from", f"type=reapi,url={buildgrid.url}")
    refusals = [line for line in progress.splitlines() if "is refused" in line]
    assert len(refusals) == 2 and all(line.startswith("warning: ") for line in refusals), progress
    assert cached_steps(progress) == ["RUN echo built > /b.txt && sleep 0.1"], progress
    assert tree(files) == tree(recorded_files) and marker[::-1] not in tree(files)["c.txt"].decode()
