"""kill -9 in every phase of a build, then build again: same image, nothing half-written (issue 5)."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pybuild.cache import Root

DOCKERFILE = """\
FROM busybox AS parts
RUN for i in 1 2 3 4 5; do echo part $i > /part$i; sleep 0.05; done
RUN mkdir -p /out && cat /part* > /out/all && sleep 0.1
FROM busybox
COPY files/ /files/
RUN sleep 0.1 && ls /files > /listing
COPY --from=parts /out/all /all
RUN echo done > /done
"""
EPOCH = "1700000000"


def build(root: Path, context: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pybuild", "build", "-q", "--build-arg", f"SOURCE_DATE_EPOCH={EPOCH}",
         "-o", "type=image,rewrite-timestamp=true", str(context)],
        env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finished_build(root: Path, context: Path) -> str:
    process = build(root, context)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    return out.strip()


def check_root_is_sound(root: Path) -> None:
    """After prune: every blob matches its digest, every snapshot is whole, no temp is left."""
    from pybuild.cache import Root

    with Root.open(root) as opened:  # opening removes the temp areas of dead processes
        leftovers = Root.temp_contents(root)
        assert all(str(os.getpid()) in p.name for p in leftovers), leftovers
        for digest, _ in opened.blobs.list():
            data = opened.blobs.path(digest).read_bytes()
            assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
        for snapshot in opened.snapshots.list():
            assert opened.snapshots.exists(snapshot) and opened.snapshots.tree(snapshot).is_dir()
        from pybuild.oci import ImageStore

        assert ImageStore(opened).damaged() == []  # every image record's data is all there
        assert opened.index.reconcile_journal() == ([], [])  # the image records on file agree with the index


@dataclass(frozen=True)
class Progress:
    """How far a build in a root got, from the root's directories (read without opening it)."""

    snapshots: int
    blobs: int
    images: int
    temp_areas: int

    @classmethod
    def of(cls, root: Path) -> Progress:
        def count(relative: str) -> int:
            try:
                return len(os.listdir(root / relative))
            except FileNotFoundError:
                return 0

        return cls(count("snapshots"), count("blobs/sha256"), count("records/images"), len(Root.temp_contents(root)))


# Where each kill lands: a point in every phase of the build, in order (DOCKERFILE has six
# steps, two stages that may run side by side). The kill comes once the root shows the phase
# was reached, plus a random delay of up to 50 ms, so it falls inside it, not only on its edge.
# (Twenty kills at random times hit mostly the start: one build in ten got past its first step.)
PHASES: tuple[tuple[str, Callable[[Progress, Progress], bool]], ...] = (
    ("starting (nothing written yet)", lambda now, start: True),
    ("its temp area made, the first steps running", lambda now, start: now.temp_areas > start.temp_areas),
    *((f"{n} step(s) committed", lambda now, start, n=n: now.snapshots >= start.snapshots + n) for n in range(1, 7)),
    ("the image's layers being written", lambda now, start: now.blobs > start.blobs),
    ("the image record written, the tag next", lambda now, start: now.images > start.images),
)


def build_killed_in_phase(root: Path, context: Path, reached: Callable[[Progress, Progress], bool], delay: float) -> None:
    """Start a build and SIGKILL it ``delay`` seconds after its root shows ``reached``."""
    start = Progress.of(root)
    process = build(root, context)
    while process.poll() is None and not reached(Progress.of(root), start):
        time.sleep(0.002)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_kill_nine_in_every_phase_of_a_build(busybox_image: str, root: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    context = tmp_path / "ctx"
    (context / "files").mkdir(parents=True)
    for i in range(30):
        (context / "files" / f"f{i}.txt").write_text(f"file {i}\n" * 100)
    (context / "Dockerfile").write_text(DOCKERFILE)
    time.sleep(1.1)  # past the racy window, so every run sees the same stat keys

    pristine = tmp_path / "pristine"
    shutil.copytree(root, pristine, symlinks=True)
    # the directories Progress counts are there: a renamed one would leave phases unreached
    assert all((pristine / d).is_dir() for d in ("snapshots", "blobs/sha256", "records/images", "tmp"))
    reference_root = tmp_path / "reference"
    shutil.copytree(pristine, reference_root, symlinks=True)
    reference = finished_build(reference_root, context)

    rng = random.Random(1234)
    for attempt, (phase, reached) in enumerate(PHASES):
        victim = tmp_path / f"crash{attempt}"
        shutil.copytree(pristine, victim, symlinks=True)
        delay = rng.uniform(0.05, 0.3) if attempt == 0 else rng.uniform(0, 0.05)
        build_killed_in_phase(victim, context, reached, delay)
        assert finished_build(victim, context) == reference, f"killed while {phase}"
        prune = subprocess.run([sys.executable, "-m", "pybuild", "prune", "--all"],
                               env={**os.environ, "PYBUILD_ROOT": str(victim)}, capture_output=True, text=True)
        assert prune.returncode == 0, prune.stderr
        check_root_is_sound(victim)
        assert finished_build(victim, context) == reference, f"killed while {phase}"  # what prune kept is still right
        shutil.rmtree(victim)


def test_kill_nine_of_prune_while_builds_run_damages_no_image(busybox_image: str, root: Path, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(99)
    for attempt in range(4):
        context = tmp_path / f"ctx{attempt}"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM busybox\nRUN echo {attempt} > /n\nRUN echo more > /m\n")
        builder = subprocess.Popen(
            [sys.executable, "-m", "pybuild", "build", "-q", "-t", f"img{attempt}", str(context)],
            env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        pruner = subprocess.Popen([sys.executable, "-m", "pybuild", "prune", "--all"],
                                  env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.2, 1.0))
        pruner.send_signal(signal.SIGKILL)
        pruner.wait()
        _, err = builder.communicate(timeout=300)
        assert builder.returncode == 0, err
        check_root_is_sound(root)
        for n in range(attempt + 1):
            cli("save", "-o", str(tmp_path / "out.tar"), f"img{n}", "busybox")
