"""An emulated build, end to end through the command line: an arm64 base made by
``pybuild import --platform linux/arm64``, RUN steps run by QEMU through the session's F
handler, and an image whose files and config are arm64's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pybuild.cli._runtime import image_store, open_root


def pybuild(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "pybuild", *args], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYBUILD_ROOT": str(root)})
    assert result.returncode == 0, f"pybuild {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


@pytest.fixture
def arm64_base(tmp_path: Path, arm64_busybox_tar: Path, require_root: None) -> Path:
    root = tmp_path / "root"
    pybuild(root, "import", "--platform", "linux/arm64", str(arm64_busybox_tar), "arm64-busybox")
    return root


def test_an_arm64_build_runs_its_steps_emulated_and_makes_an_arm64_image(
    arm64_base: Path, qemu_handlers: None, tmp_path: Path
) -> None:
    """BuildKit runs a foreign platform's RUN through the registered emulator
    (solver/llbsolver/ops/exec_binfmt.go) and writes the platform into the image config
    (exporter/containerimage/writer.go): ``uname -m`` inside says aarch64."""
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM arm64-busybox\nRUN uname -m > /m\nRUN echo hi > /f\n")
    out = tmp_path / "out"
    pybuild(arm64_base, "build", "--network=none", "--platform", "linux/arm64", "-t", "emulated",
            "-o", f"type=local,dest={out}", str(context))
    assert (out / "m").read_text() == "aarch64\n"
    assert (out / "f").read_text() == "hi\n"
    config = image_store(open_root(str(arm64_base))).get("emulated").config
    assert (config["os"], config["architecture"]) == ("linux", "arm64")


def test_run_platform_runs_an_arm64_image_emulated(arm64_base: Path, qemu_handlers: None) -> None:
    """``docker run --platform linux/arm64`` runs the arm64 image through the registered
    emulator (the container's processes are arm64 binaries the kernel hands to QEMU)."""
    run = pybuild(arm64_base, "run", "--rm", "--network=none", "--platform", "linux/arm64", "arm64-busybox", "uname", "-m")
    assert run.stdout == "aarch64\n"
