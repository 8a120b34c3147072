"""Builds racing ``pybuild prune --all`` on one root never lose what an image needs.

Each round starts several builds at once -- some with layers of their own,
some sharing a first step -- while another process runs ``prune --all`` in
a loop; then every image built so far is saved and each layer in the
archive is checked against its image's diffIDs.  Set
``PYBUILD_PRUNE_RACE_ROUNDS`` to run more rounds (the issue asks for ten in
a row: ``PYBUILD_PRUNE_RACE_ROUNDS=10 pytest tests/integration/test_prune_race.py``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROUNDS = int(os.environ.get("PYBUILD_PRUNE_RACE_ROUNDS", "3"))


def _spawn(root: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pybuild", *args],
        env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _dockerfiles(round_no: int) -> dict[str, str]:
    """Two images with layers of their own, two sharing a first step; new content every round."""
    return {
        f"own-a-{round_no}": f"FROM busybox\nRUN echo own-a {round_no} > /own\n",
        f"own-b-{round_no}": f"FROM busybox\nRUN echo own-b {round_no} > /own && mkdir /d && echo x > /d/x\n",
        f"shared-a-{round_no}": f"FROM busybox\nRUN echo shared {round_no} > /shared\nRUN echo a > /tail\n",
        f"shared-b-{round_no}": f"FROM busybox\nRUN echo shared {round_no} > /shared\nRUN echo b > /tail\n",
    }


def _layer_digest(data: bytes) -> str:
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_archive(archive: Path, expected_tags: set[str]) -> None:
    """Every image of a docker-archive is there, and each layer hashes to its diffID."""
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        found = {tag for entry in manifest for tag in entry.get("RepoTags") or ()}
        assert expected_tags <= found, expected_tags - found
        for entry in manifest:
            config = json.loads(tar.extractfile(entry["Config"]).read())  # type: ignore[union-attr]
            layers = [_layer_digest(tar.extractfile(path).read()) for path in entry["Layers"]]  # type: ignore[union-attr]
            assert layers == config["rootfs"]["diff_ids"], entry.get("RepoTags")


def race_round(root: Path, workdir: Path, round_no: int) -> list[str]:
    """One round: the builds and a prune loop at once; returns the tags built."""
    builds = []
    for tag, text in _dockerfiles(round_no).items():
        context = workdir / tag
        context.mkdir()
        (context / "Dockerfile").write_text(text)
        builds.append((tag, _spawn(root, "build", "-q", "-t", tag, str(context))))
    stop = workdir / "stop"
    pruner = subprocess.Popen(
        [sys.executable, "-c",
         "import os, subprocess, sys\n"
         "runs = 0\n"
         "while not os.path.exists(sys.argv[1]):\n"
         "    done = subprocess.run([sys.executable, '-m', 'pybuild', 'prune', '--all'], capture_output=True, text=True)\n"
         "    if done.returncode != 0:\n"
         "        sys.exit(done.stderr)\n"
         "    runs += 1\n"
         "print(runs)\n",
         str(stop)],
        env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for tag, build in builds:
            _, err = build.communicate(timeout=300)
            assert build.returncode == 0, f"build {tag} failed:\n{err}"
    finally:
        stop.touch()
        prune_out, prune_err = pruner.communicate(timeout=300)
    assert pruner.returncode == 0, prune_err
    assert int(prune_out) >= 1  # prune really ran while the builds did
    return [tag for tag, _ in builds]


@pytest.mark.slow
def test_builds_racing_prune_all_keep_every_image_whole(busybox_image: str, root: Path, tmp_path: Path) -> None:
    tags: list[str] = [busybox_image]
    for round_no in range(ROUNDS):
        workdir = tmp_path / f"round{round_no}"
        workdir.mkdir()
        tags += race_round(root, workdir, round_no)
        # one more prune with nothing running: only cache goes, never an image's layer
        subprocess.run([sys.executable, "-m", "pybuild", "prune", "--all"], env={**os.environ, "PYBUILD_ROOT": str(root)},
                       check=True, capture_output=True)
        archive = workdir / "all.tar"
        saved = subprocess.run([sys.executable, "-m", "pybuild", "save", "-o", str(archive), *tags],
                               env={**os.environ, "PYBUILD_ROOT": str(root)}, capture_output=True, text=True)
        assert saved.returncode == 0, f"round {round_no}: {saved.stderr}"
        check_archive(archive, {t if ":" in t else t + ":latest" for t in tags})
