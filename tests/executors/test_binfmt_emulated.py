"""Emulation for real (root, qemu-user-static): with the session's QEMU handler registered, an
arm64 busybox runs inside its own root, where no emulator is, because of the F flag."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

from pybuild.executors import emulation_status


def test_arm64_runs_emulated_inside_a_root_without_qemu(
    arm64_busybox_tar: Path, qemu_handlers: None, tmp_path: Path, require_root: None
) -> None:
    """BuildKit runs foreign RUN steps through the kernel's binfmt_misc handler registered with
    F by tonistiigi/binfmt, so the emulator is never looked up in the container's root
    (solver/llbsolver/ops/exec_binfmt.go; util/archutil/check_unix.go tests in a chroot)."""
    status = emulation_status("linux/arm64")
    assert (status.runnable, status.how) == (True, "emulated") and status.interpreter
    rootfs = tmp_path / "rootfs"
    with tarfile.open(arm64_busybox_tar) as tar:
        tar.extractall(rootfs)
    assert not list(rootfs.rglob("qemu*"))
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    machine = subprocess.run([chroot, str(rootfs), "/bin/uname", "-m"], capture_output=True, text=True, timeout=60)
    assert (machine.returncode, machine.stdout) == (0, "aarch64\n"), machine.stderr
